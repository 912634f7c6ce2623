// flowmark._flowmark — the compiled half of `import flowmark` (python/flowmark/ is the other):
// each part binds its classes and functions into a submodule of its own.
#include "bindings.hpp"

PYBIND11_MODULE(_flowmark, m) {
  using namespace flowmark::python;
  m.doc() = "flowmark's C++ core for Python (use the flowmark package, not this module)";
  m.attr("__version__") = FLOWMARK_VERSION;
  auto observe = m.def_submodule("observe", "capture files and interfaces into flow records");
  bind_observe(observe);
  auto pathspider = m.def_submodule("pathspider", "pathspider's Observer on flowmark's");
  bind_pathspider(pathspider);
  auto mcast = m.def_submodule("mcast", "UDP multicast messaging");
  bind_mcast(mcast);
  auto scitags = m.def_submodule("scitags", "Scitags fireflies, flow labels and registry");
  bind_scitags(scitags);
}
