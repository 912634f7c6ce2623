// The errors of the BPF loaders (src/bpf/loader_common.hpp): one errno-to-hint function for
// the TC marker (bpf_fail) and the kernel-events tracer, each naming its own capabilities.
// No BPF needed: these only word errors.
#include <cerrno>
#include <string>

#include <gtest/gtest.h>

#include "bpf/loader_common.hpp"

namespace flowmark::bpf::detail {
namespace {

std::string message_of(std::unexpected<Error> e) { return std::string(e.error().message()); }

constexpr FailHints kTracerLike{
    .capabilities = "CAP_BPF/CAP_PERFMON",
    .setcap = "cap_bpf,cap_perfmon",
    .missing_hook = "no such tracepoint",
};

TEST(FailHint, EpermNamesTheCapabilitiesOfTheLoader) {
  EXPECT_EQ(message_of(bpf_fail("cannot attach", -EPERM)),
            "cannot attach: Operation not permitted — no CAP_BPF/CAP_NET_ADMIN — run as root "
            "or grant the capabilities (setcap cap_bpf,cap_net_admin,cap_perfmon+ep, or "
            "AmbientCapabilities= in the systemd unit)");
  EXPECT_EQ(message_of(fail_with_hint("cannot load", EPERM, kTracerLike)),
            "cannot load: Operation not permitted — no CAP_BPF/CAP_PERFMON — run as root or "
            "grant the capabilities (setcap cap_bpf,cap_perfmon+ep, or AmbientCapabilities= "
            "in the systemd unit)");
}

TEST(FailHint, TheCodeIsTheErrno) {
  auto e = fail_with_hint("x", -EACCES, kTracerLike);
  EXPECT_EQ(e.error().code(), std::error_code(EACCES, std::system_category()));
  EXPECT_NE(message_of(e).find("not a missing privilege"), std::string::npos);
}

TEST(FailHint, MissingHookAndInterfaceHintsBelongToTheirLoader) {
  EXPECT_EQ(message_of(fail_with_hint("attach", ENOENT, kTracerLike)),
            "attach: No such file or directory — no such tracepoint");
  EXPECT_EQ(message_of(bpf_fail("attach", ENOENT)), "attach: No such file or directory");
  EXPECT_NE(message_of(bpf_fail("attach", ENODEV)).find("the interface does not exist"),
            std::string::npos);
  EXPECT_EQ(message_of(fail_with_hint("attach", ENODEV, kTracerLike)), "attach: No such device");
}

}  // namespace
}  // namespace flowmark::bpf::detail
