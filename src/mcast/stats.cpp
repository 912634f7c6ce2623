#include <fmt/format.h>

#include "flowmark/mcast/stream.hpp"

namespace flowmark::mcast {

std::string StatsTable::to_json() const {
  std::string out = R"({"type":"stats","streams":[)";
  bool first = true;
  for (const auto& [key, s] : table_) {
    if (!first) out.push_back(',');
    first = false;
    const double loss_pct =
        s.expected() ? 100.0 * static_cast<double>(s.lost()) / static_cast<double>(s.expected())
                     : 0.0;
    fmt::format_to(
        std::back_inserter(out),
        R"({{"source":"{}","sport":{},"group":"{}","stream":{},"received":{},)"
        R"("unique":{},"first_seq":{},"last_seq":{},"expected":{},"lost":{},)"
        R"("loss_pct":{:.3f},"duplicates":{},"reordered":{},)"
        R"("delay_us":{{"min":{:.1f},"avg":{:.1f},"max":{:.1f},"jitter":{:.1f}}}}})",
        key.sender.address.to_string(), key.sender.port, key.group.to_string(), key.stream,
        s.received(), s.unique(), s.first_sequence(), s.last_sequence(), s.expected(), s.lost(),
        loss_pct, s.duplicates(), s.reordered(), static_cast<double>(s.delay_min_ns()) / 1e3,
        static_cast<double>(s.delay_avg_ns()) / 1e3, static_cast<double>(s.delay_max_ns()) / 1e3,
        static_cast<double>(s.jitter_ns()) / 1e3);
  }
  fmt::format_to(std::back_inserter(out), R"(],"plain":{},"truncated":{}}})", plain_, truncated_);
  return out;
}

}  // namespace flowmark::mcast
