__version__: str
from ._observe import Observation as Observation, observe as observe
