// flowmark._flowmark.mcast (see bindings.hpp).
#include "bindings.hpp"

namespace flowmark::python {

void bind_mcast(py::module_& m) { (void)m; }

}  // namespace flowmark::python
