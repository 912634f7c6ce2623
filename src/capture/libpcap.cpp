// libpcap loaded with dlopen() on first use (see libpcap.hpp for why).
#include "libpcap.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <utility>

#include <fmt/format.h>

namespace flowmark::capture::detail {
namespace {

constexpr std::string_view kInstall = "install Debian package libpcap0.8";

template <typename F>
bool resolve(void* lib, const std::string& soname, const char* symbol, F& out, std::string& error) {
  void* sym = dlsym(lib, symbol);
  if (sym == nullptr) {
    if (error.empty())
      error =
          fmt::format("cannot load libpcap ({} has no symbol {}): {}", soname, symbol, kInstall);
    return false;
  }
  out = reinterpret_cast<F>(sym);
  return true;
}

}  // namespace

Result<Libpcap> load_libpcap(const std::string& name) {
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return fail(Errc::kUnsupported, fmt::format("cannot load libpcap ({}): {}",
                                                why ? why : name + ": not found", kInstall));
  }
  Libpcap api;
  std::string error;
  bool ok = resolve(lib, name, "pcap_open_dead", api.open_dead, error);
  ok = resolve(lib, name, "pcap_open_offline_with_tstamp_precision", api.open_offline, error) && ok;
  ok = resolve(lib, name, "pcap_fopen_offline_with_tstamp_precision", api.fopen_offline, error) &&
       ok;
  ok = resolve(lib, name, "pcap_create", api.create, error) && ok;
  ok = resolve(lib, name, "pcap_set_snaplen", api.set_snaplen, error) && ok;
  ok = resolve(lib, name, "pcap_set_promisc", api.set_promisc, error) && ok;
  ok = resolve(lib, name, "pcap_set_immediate_mode", api.set_immediate_mode, error) && ok;
  ok = resolve(lib, name, "pcap_set_buffer_size", api.set_buffer_size, error) && ok;
  ok = resolve(lib, name, "pcap_set_tstamp_precision", api.set_tstamp_precision, error) && ok;
  ok = resolve(lib, name, "pcap_get_tstamp_precision", api.get_tstamp_precision, error) && ok;
  ok = resolve(lib, name, "pcap_activate", api.activate, error) && ok;
  ok = resolve(lib, name, "pcap_close", api.close, error) && ok;
  ok = resolve(lib, name, "pcap_datalink", api.datalink, error) && ok;
  ok = resolve(lib, name, "pcap_geterr", api.geterr, error) && ok;
  ok = resolve(lib, name, "pcap_compile", api.compile, error) && ok;
  ok = resolve(lib, name, "pcap_freecode", api.freecode, error) && ok;
  ok = resolve(lib, name, "pcap_setfilter", api.setfilter, error) && ok;
  ok = resolve(lib, name, "bpf_filter", api.filter, error) && ok;
  ok = resolve(lib, name, "pcap_next_ex", api.next_ex, error) && ok;
  ok = resolve(lib, name, "pcap_breakloop", api.breakloop, error) && ok;
  ok = resolve(lib, name, "pcap_setnonblock", api.setnonblock, error) && ok;
  ok = resolve(lib, name, "pcap_stats", api.stats, error) && ok;
  ok = resolve(lib, name, "pcap_file", api.file, error) && ok;
  if (!ok) {
    dlclose(lib);
    return fail(Errc::kUnsupported, std::move(error));
  }
  return api;  // the library stays loaded: the pointers point into it
}

Result<const Libpcap*> libpcap() {
  static Result<Libpcap> loaded = fail(Errc::kUnsupported, "libpcap not loaded yet");
  static std::once_flag once;
  std::call_once(once, [] {
    if (const char* forced = std::getenv(kLibpcapEnv); forced != nullptr && *forced != '\0') {
      loaded = load_libpcap(forced);
      return;
    }
    for (const char* name : kLibpcapNames) {
      auto r = load_libpcap(name);
      if (r || name == kLibpcapNames[0]) loaded = std::move(r);  // report Debian's soname
      if (loaded) return;
    }
  });
  if (!loaded) return std::unexpected(loaded.error());
  return &*loaded;
}

}  // namespace flowmark::capture::detail
