// The built-in chains' names and their list parsing; what each chain records is checked
// end to end against scapy-built captures (tests/integration/observe_chains_truth.py) and
// pathspider's chains (observe_pathspider_compare.py).
#include "flowmark/observe/chains.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flowmark::observe {
namespace {

using Names = std::vector<std::string>;

TEST(Chains, ListIsCanonicalWithBasicAlwaysOn) {
  EXPECT_EQ(*parse_chain_list("basic,tcp"), (Names{"basic", "tcp"}));
  EXPECT_EQ(*parse_chain_list("scitags, ecn ,ecn"), (Names{"basic", "ecn", "scitags"}));
  const auto all = *parse_chain_list("all");
  ASSERT_EQ(all.size(), kChainNames.size());
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], kChainNames[i]);
  EXPECT_EQ(*parse_chain_list("tcp,all"), all);
}

TEST(Chains, UnknownOrEmptyNamesAreRefusedByName) {
  auto bad = parse_chain_list("tcp,ecm");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(bad.error().message().find("'ecm'"), std::string::npos) << bad.error().message();
  EXPECT_FALSE(parse_chain_list(""));
  EXPECT_FALSE(parse_chain_list("tcp,"));
}

TEST(Chains, EveryNameMakesAChainOfThatName) {
  for (const auto name : kChainNames) {
    auto c = make_chain(name);
    if (name == "basic") {
      EXPECT_EQ(c, nullptr);
      continue;
    }
    ASSERT_NE(c, nullptr) << name;
    EXPECT_EQ(c->name(), name);
    EXPECT_FALSE(c->columns().empty()) << name;
    EXPECT_LE(c->state_size(), 16u) << name;
  }
  EXPECT_EQ(make_chain("nope"), nullptr);
}

TEST(Chains, ScitagsSourceNames) {
  EXPECT_EQ(to_string(ScitagsTag::Source::kFlowLabel), "flowlabel");
  EXPECT_EQ(to_string(ScitagsTag::Source::kHopByHop), "hbh");
  EXPECT_EQ(to_string(ScitagsTag::Source::kDestOptions), "dstopt");
}

}  // namespace
}  // namespace flowmark::observe
