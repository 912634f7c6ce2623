// The libpcap loader: a missing library is a clear error naming the package to install, not
// a crash; the library found on this machine compiles a filter that runs through the pointer
// the program keeps.
#include "capture/libpcap.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstddef>

#include "capture/bpf_program.hpp"

namespace flowmark::capture::detail {
namespace {

TEST(Libpcap, MissingLibraryIsAClearError) {
  auto r = load_libpcap("/nonexistent/libpcap.so.0.8");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kUnsupported);
  const std::string& m = r.error().message();
  EXPECT_EQ(m.rfind("cannot load libpcap (/nonexistent/libpcap.so.0.8: ", 0), 0u) << m;
  EXPECT_NE(m.find("): install Debian package libpcap0.8"), std::string::npos) << m;
}

TEST(Libpcap, LibraryWithoutTheFunctionsIsAClearError) {
  // libc loads, but is not libpcap: the first missing function is named.
  auto r = load_libpcap("libc.so.6");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kUnsupported);
  EXPECT_EQ(r.error().message(),
            "cannot load libpcap (libc.so.6 has no symbol pcap_open_dead): install Debian "
            "package libpcap0.8");
}

TEST(Libpcap, LoadedOnceAndFiltersFrames) {
  auto lib = libpcap();
  ASSERT_TRUE(lib) << lib.error().message();
  auto again = libpcap();
  ASSERT_TRUE(again);
  EXPECT_EQ(*lib, *again);  // the same loaded library every time

  auto prog = BpfProgram::compile("tcp", observe::LinkType::kRaw);
  ASSERT_TRUE(prog) << prog.error().message();
  // A raw IPv4 header (no options) and 20 bytes of transport header; byte 9 is the protocol.
  std::array<std::byte, 40> frame{};
  frame[0] = std::byte{0x45};
  frame[3] = std::byte{40};  // total length
  frame[8] = std::byte{64};  // TTL
  frame[9] = std::byte{6};   // TCP
  EXPECT_TRUE(prog->matches(frame.data(), frame.size(), frame.size()));
  frame[9] = std::byte{17};  // UDP
  EXPECT_FALSE(prog->matches(frame.data(), frame.size(), frame.size()));

  BpfProgram moved = std::move(*prog);  // the functions move with the program
  frame[9] = std::byte{6};
  EXPECT_TRUE(moved.matches(frame.data(), frame.size(), frame.size()));
}

}  // namespace
}  // namespace flowmark::capture::detail
