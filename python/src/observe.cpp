// flowmark._flowmark.observe (see bindings.hpp).
#include "bindings.hpp"

namespace flowmark::python {

void bind_observe(py::module_& m) { (void)m; }

}  // namespace flowmark::python
