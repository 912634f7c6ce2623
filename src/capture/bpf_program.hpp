// A BPF filter expression compiled by libpcap for one link type, run in user space
// (regular files read by the mapped reader) or handed to the kernel (AF_PACKET sockets).
// libpcap is loaded on the first compile (libpcap.hpp); the program keeps the two functions
// it needs afterwards, so running it on a frame is one indirect call.
#pragma once

#include <pcap/pcap.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "flowmark/core/result.hpp"
#include "flowmark/observe/packet.hpp"
#include "libpcap.hpp"

namespace flowmark::capture::detail {

class BpfProgram {
 public:
  BpfProgram() = default;
  BpfProgram(BpfProgram&& o) noexcept : prog_(o.prog_), filter_(o.filter_), freecode_(o.freecode_) {
    o.prog_ = {};
  }
  BpfProgram& operator=(BpfProgram&& o) noexcept {
    if (this != &o) {
      reset();
      prog_ = o.prog_;
      filter_ = o.filter_;
      freecode_ = o.freecode_;
      o.prog_ = {};
    }
    return *this;
  }
  BpfProgram(const BpfProgram&) = delete;
  BpfProgram& operator=(const BpfProgram&) = delete;
  ~BpfProgram() { reset(); }

  // Errc::kInvalidArgument naming the expression when it does not compile for `link`;
  // Errc::kUnsupported saying what to install when libpcap cannot be loaded.
  static Result<BpfProgram> compile(std::string_view expr, observe::LinkType link,
                                    std::uint32_t snaplen = 262144);
  // For a socket filter on a live Linux interface: compiled by a libpcap handle activated
  // on that interface, so that "vlan" tests read the tag from the packet's metadata (the
  // kernel runs the filter before the tag is put back in the frame), as libpcap's own live
  // captures do.
  static Result<BpfProgram> compile_live(std::string_view expr, std::string_view iface);

  // Only on a program returned by compile().
  bool matches(const std::byte* data, std::uint32_t caplen, std::uint32_t wirelen) const noexcept {
    return filter_(prog_.bf_insns, reinterpret_cast<const u_char*>(data), wirelen, caplen) != 0;
  }
  const bpf_program& program() const noexcept { return prog_; }

 private:
  void reset() noexcept {
    if (prog_.bf_insns != nullptr) freecode_(&prog_);
    prog_ = {};
  }
  // Sets the functions from the loaded libpcap (compile and compile_live).
  void bind(const Libpcap& lib) noexcept {
    filter_ = lib.filter;
    freecode_ = lib.freecode;
  }
  bpf_program prog_{};
  decltype(Libpcap::filter) filter_ = nullptr;
  decltype(Libpcap::freecode) freecode_ = nullptr;
};

}  // namespace flowmark::capture::detail
