#include "daemon/common/connection_options.hpp"

#include <charconv>
#include <cstdint>

#include <fmt/format.h>

namespace flowmark::daemon::sockets {
namespace {

// An experiment or activity as written: an integer id or a name (string).
Result<std::optional<std::string>> id_or_name(Section& s, std::string_view key) {
  s.mark_used(key);
  if (!s.has(key)) return std::optional<std::string>{};
  if (auto i = s.integer(key, 0, INT64_MIN, INT64_MAX)) {
    return std::optional<std::string>{std::to_string(*i)};
  }
  auto text = s.optional_string(key);
  if (!text) return s.error(key, "expected an id (integer) or a registry name (string)");
  return *text;
}

std::optional<std::uint32_t> as_id(std::string_view text) {
  std::uint32_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
  return v;
}

}  // namespace

Result<Tag> resolve_tag(std::string_view exp_text, std::string_view act_text,
                        const scitags::Registry* registry) {
  Tag tag;
  if (auto id = as_id(exp_text)) {
    tag.experiment = *id;
  } else if (registry) {
    FM_TRY(tag.experiment, registry->resolve_experiment(exp_text));
  } else {
    return fail(Errc::kInvalidArgument,
                fmt::format("experiment '{}' is a name but no registry is loaded: give its id "
                            "or configure the registry",
                            exp_text));
  }
  if (auto id = as_id(act_text)) {
    tag.activity = *id;
  } else if (registry) {
    FM_TRY(tag.activity, registry->resolve_activity(tag.experiment, act_text));
  } else {
    return fail(Errc::kInvalidArgument,
                fmt::format("activity '{}' is a name but no registry is loaded: give its id "
                            "or configure the registry",
                            act_text));
  }
  if (tag.experiment == 0 && tag.activity == 0) return tag;
  if (tag.experiment == 0 || tag.activity == 0) {
    return fail(Errc::kInvalidArgument,
                fmt::format("experiment {} with activity {}: give both, or neither (0: the "
                            "classification rules decide)",
                            tag.experiment, tag.activity));
  }
  FM_TRY_VOID(scitags::make_scitag(tag.experiment, tag.activity));  // the range check
  return tag;
}

Result<std::vector<PortRange>> parse_ports(Section& s) { return read_port_ranges(s, "ports"); }

Result<Tag> parse_tag(Section& s, const scitags::Registry* registry) {
  FM_TRY(auto exp, id_or_name(s, "experiment"));
  FM_TRY(auto act, id_or_name(s, "activity"));
  if (!exp && !act) return Tag{};
  auto tag = resolve_tag(exp.value_or("0"), act.value_or("0"), registry);
  if (!tag) return s.error(exp ? "experiment" : "activity", tag.error().message());
  return *tag;
}

std::string source_name(const Section& s) {
  // "[source.conns]" → "conns"
  std::string_view w = s.where();
  if (w.starts_with('[')) w.remove_prefix(1);
  if (w.ends_with(']')) w.remove_suffix(1);
  if (auto dot = w.find('.'); dot != std::string_view::npos) w.remove_prefix(dot + 1);
  return std::string(w);
}

}  // namespace flowmark::daemon::sockets
