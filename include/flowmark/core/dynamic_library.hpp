// flowmark::core — symbols of a library loaded with dlopen(), for the libraries flowmark
// loads only when a command needs them (libcurl for an http(s) registry, libpcap for the
// observer), so that every other process does not map them and their dependencies.
//
//   const char* missing = nullptr;
//   bool ok = resolve_symbol(lib, "pcap_close", api.close, missing);
//   ok = resolve_symbol(lib, "pcap_compile", api.compile, missing) && ok;
//   if (!ok) return fail(..., fmt::format("... has no symbol {}", missing));
#pragma once

#include <dlfcn.h>

#include <string>
#include <string_view>

namespace flowmark {

// dlopen(file, RTLD_NOW | RTLD_LOCAL). When it fails: nullptr, and `error` is
// "cannot load FILE (WHY): HINT" (HINT: which package to install, and what for).
inline void* open_library(const char* file, std::string_view hint, std::string& error) {
  void* lib = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    error = std::string("cannot load ") + file + " (" + (why ? why : "not found") + "): ";
    error += hint;
  }
  return lib;
}

// Looks `symbol` up in `lib` (a dlopen() handle) into the function pointer `out`. When it is
// absent: false, and `missing` names it unless an earlier call already named one.
template <typename F>
bool resolve_symbol(void* lib, const char* symbol, F& out, const char*& missing) noexcept {
  void* sym = dlsym(lib, symbol);
  if (sym == nullptr) {
    if (missing == nullptr) missing = symbol;
    return false;
  }
  out = reinterpret_cast<F>(sym);
  return true;
}

}  // namespace flowmark
