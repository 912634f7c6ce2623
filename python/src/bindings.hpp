// flowmark's Python module (flowmark._flowmark): one bind_* function per part, each in its
// own file, called from module.cpp. Shared helpers for the bindings live here.
#pragma once

#include <pybind11/pybind11.h>

namespace flowmark::python {

namespace py = pybind11;

// flowmark.observe: observe(), the record iterator, to_arrays()/to_pandas() (observe.cpp).
void bind_observe(py::module_& m);
// flowmark.pathspider: the Observer that runs pathspider's chain classes (pathspider.cpp).
void bind_pathspider(py::module_& m);
// flowmark.mcast / flowmark.multicast: send, Receiver, streams (mcast.cpp).
void bind_mcast(py::module_& m);
// flowmark.scitags: fireflies, flow labels, the registry, announcing (scitags.cpp).
void bind_scitags(py::module_& m);

}  // namespace flowmark::python
