#include "flowmark/core/interface.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace flowmark {
namespace {

TEST(Interface, ResolvesLoopbackByNameIndexAndAddress) {
  auto by_name = resolve_interface("lo");
  ASSERT_TRUE(by_name.has_value()) << by_name.error().message();
  EXPECT_EQ(by_name->index, 1u);
  auto by_index = resolve_interface("1");
  ASSERT_TRUE(by_index.has_value());
  EXPECT_EQ(by_index->name, "lo");
  auto by_addr = resolve_interface("127.0.0.1");
  ASSERT_TRUE(by_addr.has_value()) << by_addr.error().message();
  EXPECT_EQ(by_addr->name, "lo");
}

TEST(Interface, UnknownNamesSayWhatExists) {
  auto r = resolve_interface("nosuch0");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::kNotFound);
  EXPECT_NE(r.error().message().find("lo"), std::string::npos);  // lists the real ones
  EXPECT_FALSE(resolve_interface("99999").has_value());
  EXPECT_FALSE(resolve_interface("192.0.2.99").has_value());
  EXPECT_FALSE(resolve_interface("").has_value());
  EXPECT_FALSE(resolve_interface("averyveryverylongname0").has_value());
}

TEST(Interface, LocalAddressesIncludeLoopback) {
  auto all = local_addresses();
  EXPECT_NE(std::find(all.begin(), all.end(), *IpAddress::parse("127.0.0.1")), all.end());
  EXPECT_EQ(interface_name(1), "lo");
  EXPECT_EQ(interface_name(987654), "987654");
}

}  // namespace
}  // namespace flowmark
