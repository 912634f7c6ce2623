"""flowmark from Python: observe, mark and announce network flows.

Submodules:
  flowmark.observe()   capture files and interfaces into flow records (C++ chains)
  flowmark.pathspider  pathspider's Observer, running pathspider's chain classes
  flowmark.mcast       UDP multicast: send, Receiver, sequenced streams
  flowmark.multicast   the Python `multicast` package's API (McastSAY, McastRECV, ...)
  flowmark.scitags     fireflies, flow labels, the registry, Announcer

The module is built for Debian's /usr/bin/python3 (python3-flowmark); see flowmark-python(7).
"""

from ._flowmark import __version__
from ._observe import Observation, observe
from . import mcast, multicast, pathspider, scitags

__all__ = ["__version__", "observe", "Observation", "mcast", "multicast", "pathspider",
           "scitags"]
