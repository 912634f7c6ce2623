#include <gtest/gtest.h>

#include "flowmark/mcast/commands.hpp"
#include "flowmark/mcast/receiver.hpp"
#include "flowmark/mcast/sender.hpp"

namespace flowmark::mcast {
namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

TEST(Sender, RejectsUnicastAndOversizedPayloads) {
  auto bad = Sender::open({{ip("192.0.2.1"), 5000}, {}, {}, 0, 0});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  auto tx = Sender::open({{ip("239.255.0.1"), 5000}, {}, {}, 0, 0});
  ASSERT_TRUE(tx.has_value()) << tx.error().message();
  std::vector<std::byte> big(kMaxPayloadV4 + 1);
  auto r = tx->send(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  std::span<const std::byte> one(big);
  auto rb = tx->send_batch(std::span(&one, 1));
  EXPECT_FALSE(rb.has_value());
}

TEST(Receiver, RejectsMixedFamiliesAndBadSources) {
  ReceiverConfig c;
  c.groups = {ip("239.1.1.1"), ip("ff05::1")};
  auto mixed = Receiver::open(c);
  ASSERT_FALSE(mixed.has_value());
  EXPECT_NE(mixed.error().message().find("different address families"), std::string::npos);
  c.groups = {ip("239.1.1.1")};
  c.sources = {ip("ff05::1")};
  EXPECT_FALSE(Receiver::open(c).has_value());
  c.sources.clear();
  c.groups.clear();
  EXPECT_FALSE(Receiver::open(c).has_value());
}

TEST(Hear, ReplyWordingAndLimit) {
  auto from = *Endpoint::parse("10.0.0.1:4242");
  EXPECT_EQ(hear_reply("hello", from, ip("239.1.1.2"), 65507),
            "HEAR [ HELLO SAID ('10.0.0.1', 4242) ] from 239.1.1.2");
  auto cut = hear_reply(std::string(100, 'a'), from, ip("239.1.1.2"), 60);
  EXPECT_LE(cut.size(), 60u);
  EXPECT_TRUE(cut.ends_with("] from 239.1.1.2"));
}

}  // namespace
}  // namespace flowmark::mcast
