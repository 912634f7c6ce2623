__version__: str
from ._observe import Observation as Observation, observe as observe
from . import pathspider as pathspider
from . import mcast as mcast
from . import multicast as multicast
from . import scitags as scitags
