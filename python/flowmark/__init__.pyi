__version__: str
from . import pathspider as pathspider
