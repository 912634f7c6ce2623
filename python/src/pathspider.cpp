// flowmark._flowmark.pathspider (see bindings.hpp).
#include "bindings.hpp"

namespace flowmark::python {

void bind_pathspider(py::module_& m) { (void)m; }

}  // namespace flowmark::python
