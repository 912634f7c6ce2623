__version__: str
from . import pathspider as pathspider
from . import mcast as mcast
from . import multicast as multicast
from . import scitags as scitags
