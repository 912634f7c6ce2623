__version__: str

from . import scitags as scitags
