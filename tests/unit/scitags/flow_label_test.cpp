#include "flowmark/scitags/flow_label.hpp"

#include <gtest/gtest.h>

namespace flowmark::scitags {
namespace {

TEST(FlowLabel, SpecCheckValues) {
  struct Case {
    std::uint32_t exp, act, label;
  };
  for (const Case c : {Case{2, 9, 65572}, Case{3, 3, 196620}, Case{4, 3, 32780},
                       Case{5, 10, 163880}, Case{5, 14, 163896}}) {
    auto l = encode_flow_label(c.exp, c.act, 0);
    ASSERT_TRUE(l.has_value());
    EXPECT_EQ(*l, c.label) << c.exp << "," << c.act;
  }
  EXPECT_EQ(*encode_flow_label(2, 9, 0), 0x10024u);
  EXPECT_EQ(*encode_flow_label(3, 3, 0), 0x3000Cu);
}

TEST(FlowLabel, BitLayout) {
  // Experiment bit 0 lands in label bit 17; activity in bits 7..2.
  EXPECT_EQ(*encode_flow_label(1, 0, 0), 1u << 17);
  EXPECT_EQ(*encode_flow_label(256, 0, 0), 1u << 9);
  EXPECT_EQ(*encode_flow_label(0, 1, 0), 1u << 2);
  EXPECT_EQ(*encode_flow_label(0, 32, 0), 1u << 7);
  // Entropy: 2 bits at 19..18, 1 bit at 8, 2 bits at 1..0.
  EXPECT_EQ(*encode_flow_label(0, 0, 31), (3u << 18) | (1u << 8) | 3u);
  EXPECT_EQ(*encode_flow_label(0, 0, 31) & kFlowLabelSemanticMask, 0u);
  EXPECT_EQ(*encode_flow_label(511, 63, 0), kFlowLabelSemanticMask);
}

TEST(FlowLabel, WholeSpaceRoundTrips) {
  for (std::uint32_t exp = 0; exp <= kMaxLabelExperiment; ++exp) {
    for (std::uint32_t act = 0; act <= kMaxLabelActivity; ++act) {
      const std::uint32_t entropy = (exp * 7 + act) % 32;
      auto l = encode_flow_label(exp, act, entropy);
      ASSERT_TRUE(l.has_value());
      ASSERT_LT(*l, 1u << 20);
      auto d = decode_flow_label(*l);
      ASSERT_EQ(d.experiment, exp);
      ASSERT_EQ(d.activity, act);
      ASSERT_EQ(d.entropy, entropy);
      // The semantic bits do not depend on entropy.
      ASSERT_EQ(*l & kFlowLabelSemanticMask, *encode_flow_label(exp, act, 0));
    }
  }
}

TEST(FlowLabel, OutOfRangeSaysWhy) {
  auto e = encode_flow_label(512, 1, 0);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(e.error().message().find("experiment 512"), std::string::npos);
  EXPECT_NE(e.error().message().find("9 bits"), std::string::npos);
  auto a = encode_flow_label(1, 64, 0);
  ASSERT_FALSE(a.has_value());
  EXPECT_NE(a.error().message().find("activity 64"), std::string::npos);
  EXPECT_FALSE(encode_flow_label(1, 1, 32).has_value());
}

TEST(FlowLabel, DecodeIgnoresBitsAbove20) {
  auto d = decode_flow_label(0xFFF00000u | 65572u);
  EXPECT_EQ(d.experiment, 2u);
  EXPECT_EQ(d.activity, 9u);
}

}  // namespace
}  // namespace flowmark::scitags
