// flowmark._flowmark.scitags (see bindings.hpp).
#include "bindings.hpp"

namespace flowmark::python {

void bind_scitags(py::module_& m) { (void)m; }

}  // namespace flowmark::python
