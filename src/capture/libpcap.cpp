// libpcap loaded with dlopen() on first use (see libpcap.hpp for why).
#include "libpcap.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <utility>

#include <fmt/format.h>

#include "flowmark/core/dynamic_library.hpp"

namespace flowmark::capture::detail {
namespace {

constexpr std::string_view kInstall = "install Debian package libpcap0.8";

}  // namespace

Result<Libpcap> load_libpcap(const std::string& name) {
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return fail(Errc::kUnsupported, fmt::format("cannot load libpcap ({}): {}",
                                                why ? why : name + ": not found", kInstall));
  }
  Libpcap api;
  const char* missing = nullptr;
  bool ok = resolve_symbol(lib, "pcap_open_dead", api.open_dead, missing);
  ok = resolve_symbol(lib, "pcap_open_offline_with_tstamp_precision", api.open_offline, missing) &&
       ok;
  ok =
      resolve_symbol(lib, "pcap_fopen_offline_with_tstamp_precision", api.fopen_offline, missing) &&
      ok;
  ok = resolve_symbol(lib, "pcap_create", api.create, missing) && ok;
  ok = resolve_symbol(lib, "pcap_set_snaplen", api.set_snaplen, missing) && ok;
  ok = resolve_symbol(lib, "pcap_set_promisc", api.set_promisc, missing) && ok;
  ok = resolve_symbol(lib, "pcap_set_immediate_mode", api.set_immediate_mode, missing) && ok;
  ok = resolve_symbol(lib, "pcap_get_selectable_fd", api.selectable_fd, missing) && ok;
  ok = resolve_symbol(lib, "pcap_set_buffer_size", api.set_buffer_size, missing) && ok;
  ok = resolve_symbol(lib, "pcap_set_tstamp_precision", api.set_tstamp_precision, missing) && ok;
  ok = resolve_symbol(lib, "pcap_get_tstamp_precision", api.get_tstamp_precision, missing) && ok;
  ok = resolve_symbol(lib, "pcap_activate", api.activate, missing) && ok;
  ok = resolve_symbol(lib, "pcap_close", api.close, missing) && ok;
  ok = resolve_symbol(lib, "pcap_datalink", api.datalink, missing) && ok;
  ok = resolve_symbol(lib, "pcap_geterr", api.geterr, missing) && ok;
  ok = resolve_symbol(lib, "pcap_compile", api.compile, missing) && ok;
  ok = resolve_symbol(lib, "pcap_freecode", api.freecode, missing) && ok;
  ok = resolve_symbol(lib, "pcap_setfilter", api.setfilter, missing) && ok;
  ok = resolve_symbol(lib, "bpf_filter", api.filter, missing) && ok;
  ok = resolve_symbol(lib, "pcap_next_ex", api.next_ex, missing) && ok;
  ok = resolve_symbol(lib, "pcap_breakloop", api.breakloop, missing) && ok;
  ok = resolve_symbol(lib, "pcap_setnonblock", api.setnonblock, missing) && ok;
  ok = resolve_symbol(lib, "pcap_stats", api.stats, missing) && ok;
  ok = resolve_symbol(lib, "pcap_file", api.file, missing) && ok;
  if (!ok) {
    dlclose(lib);
    return fail(Errc::kUnsupported, fmt::format("cannot load libpcap ({} has no symbol {}): {}",
                                                name, missing, kInstall));
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
