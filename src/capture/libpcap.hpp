// libpcap, loaded with dlopen() on first use instead of linked: Debian's libpcap0.8 links
// libdbus-1, which links libsystemd, libgcrypt, liblz4, libzstd..., and every `flowmark`
// command would map them although only the packet observer uses libpcap. The declarations
// and constants of <pcap/pcap.h> are used at build time; each pointer below has the type of
// the function it names, so the two cannot drift apart.
#pragma once

#include <pcap/pcap.h>

#include <string>

#include "flowmark/core/result.hpp"

namespace flowmark::capture::detail {

// The libpcap functions flowmark calls, resolved from the library loaded at run time.
struct Libpcap {
  decltype(&::pcap_open_dead) open_dead = nullptr;
  decltype(&::pcap_open_offline_with_tstamp_precision) open_offline = nullptr;
  decltype(&::pcap_fopen_offline_with_tstamp_precision) fopen_offline = nullptr;
  decltype(&::pcap_create) create = nullptr;
  decltype(&::pcap_set_snaplen) set_snaplen = nullptr;
  decltype(&::pcap_set_promisc) set_promisc = nullptr;
  decltype(&::pcap_set_immediate_mode) set_immediate_mode = nullptr;
  decltype(&::pcap_get_selectable_fd) selectable_fd = nullptr;
  decltype(&::pcap_set_buffer_size) set_buffer_size = nullptr;
  decltype(&::pcap_set_tstamp_precision) set_tstamp_precision = nullptr;
  decltype(&::pcap_get_tstamp_precision) get_tstamp_precision = nullptr;
  decltype(&::pcap_activate) activate = nullptr;
  decltype(&::pcap_close) close = nullptr;
  decltype(&::pcap_datalink) datalink = nullptr;
  decltype(&::pcap_geterr) geterr = nullptr;
  decltype(&::pcap_compile) compile = nullptr;
  decltype(&::pcap_freecode) freecode = nullptr;
  decltype(&::pcap_setfilter) setfilter = nullptr;
  decltype(&::bpf_filter) filter = nullptr;  // runs a compiled program over one frame
  decltype(&::pcap_next_ex) next_ex = nullptr;
  decltype(&::pcap_breakloop) breakloop = nullptr;
  decltype(&::pcap_setnonblock) setnonblock = nullptr;
  decltype(&::pcap_stats) stats = nullptr;
  decltype(&::pcap_file) file = nullptr;
};

// Where libpcap is looked for: Debian's soname, then the upstream one.
inline constexpr const char* kLibpcapNames[] = {"libpcap.so.0.8", "libpcap.so.1"};
// For tests: when set, the only name tried (e.g. FLOWMARK_LIBPCAP=/nonexistent).
inline constexpr const char* kLibpcapEnv = "FLOWMARK_LIBPCAP";

// libpcap, loaded once per process (thread-safe; it stays loaded). When it cannot be loaded
// or lacks a function: Errc::kUnsupported, "cannot load libpcap (libpcap.so.0.8: <why>):
// install Debian package libpcap0.8", the same error on every call.
Result<const Libpcap*> libpcap();

// Loads libpcap from `name` (a soname or a path) now, without caching: what libpcap() does
// with each name it tries. Exposed for the tests of the error.
Result<Libpcap> load_libpcap(const std::string& name);

}  // namespace flowmark::capture::detail
