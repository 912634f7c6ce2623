#include "daemon/sources/api/flow_request.hpp"

#include <simdjson.h>

#include <fmt/format.h>

#include <cctype>
#include <optional>

#include "flowmark/core/json.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::daemon::api {

std::string_view to_string(RequestReject r) noexcept {
  switch (r) {
    case RequestReject::kBadJson: return "bad_json";
    case RequestReject::kUnknownState: return "unknown_state";
    case RequestReject::kBadField: return "bad_field";
    case RequestReject::kMissingField: return "missing_field";
  }
  return "unknown";
}

namespace {

using scitags::FlowEvent;
using scitags::FlowState;
using simdjson::dom::element;
using simdjson::dom::element_type;

std::unexpected<RequestError> reject(RequestReject r, std::string message) {
  return std::unexpected(RequestError{r, std::move(message)});
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

std::string_view type_name(element_type t) noexcept {
  switch (t) {
    case element_type::ARRAY: return "an array";
    case element_type::OBJECT: return "an object";
    case element_type::INT64:
    case element_type::UINT64: return "an integer";
    case element_type::DOUBLE: return "a number with a fraction";
    case element_type::STRING: return "a string";
    case element_type::BOOL: return "a boolean";
    case element_type::NULL_VALUE: return "null";
  }
  return "?";
}

// An integer member (negative ones as such), or nothing for another type.
std::optional<std::int64_t> integer(element e) {
  if (e.type() == element_type::INT64) return std::int64_t(e.get_int64().value_unsafe());
  if (e.type() == element_type::UINT64) {
    const std::uint64_t v = e.get_uint64().value_unsafe();
    return v > std::uint64_t(INT64_MAX) ? INT64_MAX : std::int64_t(v);
  }
  return std::nullopt;
}

// The flowd-go members, once found (case-insensitively).
struct Members {
  std::optional<element> state, protocol, family, src, dst, experiment, activity;
  std::optional<element> start, end, current, application;
};

std::expected<Endpoint, RequestError> endpoint(std::string_view key, element e) {
  if (e.type() == element_type::STRING) {
    const std::string_view text = e.get_string().value_unsafe();
    // "ADDRESS:PORT" with the port required; no scope ("%eth0") in an announced flow.
    auto ep = Endpoint::parse(text);
    if (!ep || text.find('%') != std::string_view::npos) {
      return reject(RequestReject::kBadField,
                    fmt::format("{}: '{}' is not ADDRESS:PORT (\"192.0.2.1:2345\", "
                                "\"[2001:db8::1]:2345\"){}",
                                key, text, ep ? "" : ": " + ep.error().message()));
    }
    if (ep->port == 0) {
      return reject(RequestReject::kBadField, fmt::format("{}: port 0 in '{}'", key, text));
    }
    return *ep;
  }
  if (e.type() == element_type::OBJECT) {  // {"IP": "...", "Port": n}
    std::optional<element> ip, port;
    simdjson::dom::object obj;
    if (e.get_object().get(obj) != simdjson::SUCCESS) {
      return reject(RequestReject::kBadField, fmt::format("{}: not an object", key));
    }
    for (auto field : obj) {
      if (iequals(field.key, "IP")) ip = field.value;
      if (iequals(field.key, "Port")) port = field.value;
    }
    if (!ip || !port) {
      return reject(RequestReject::kMissingField,
                    fmt::format("{}: an object needs \"IP\" and \"Port\"", key));
    }
    if (ip->type() != element_type::STRING) {
      return reject(RequestReject::kBadField,
                    fmt::format("{}.IP: {}, not a string", key, type_name(ip->type())));
    }
    const std::string_view text = ip->get_string().value_unsafe();
    auto a = IpAddress::parse(text);
    if (!a || text.find('%') != std::string_view::npos) {
      return reject(RequestReject::kBadField,
                    fmt::format("{}.IP: '{}' is not an IP address", key, text));
    }
    auto p = integer(*port);
    if (!p || *p < 1 || *p > 65535) {
      return reject(RequestReject::kBadField,
                    fmt::format("{}.Port: not a port number 1..65535", key));
    }
    return Endpoint{*a, static_cast<std::uint16_t>(*p)};
  }
  return reject(RequestReject::kBadField,
                fmt::format("{}: {}, not \"ADDRESS:PORT\"", key, type_name(e.type())));
}

// 0 for "not known": absent, null, "", or Go's zero time (year 1).
std::expected<Micros, RequestError> time_of(std::string_view key, const std::optional<element>& e) {
  if (!e || e->type() == element_type::NULL_VALUE) return Micros{0};
  if (e->type() != element_type::STRING) {
    return reject(RequestReject::kBadField,
                  fmt::format("{}: {}, not an RFC 3339 time", key, type_name(e->type())));
  }
  const std::string_view text = e->get_string().value_unsafe();
  if (text.empty() || text.starts_with("0001-01-01T00:00:00")) return Micros{0};
  auto t = parse_rfc3339(text);
  if (!t) {
    return reject(RequestReject::kBadField,
                  fmt::format("{}: '{}': {}", key, text, t.error().message()));
  }
  return *t > 0 ? *t : Micros{0};
}

// An id (0: the rules decide) or a registry name.
std::expected<std::uint32_t, RequestError> experiment_of(const std::optional<element>& e,
                                                         const scitags::Registry& registry) {
  if (!e || e->type() == element_type::NULL_VALUE) return 0u;
  if (e->type() == element_type::STRING) {
    auto id = registry.resolve_experiment(e->get_string().value_unsafe());
    if (!id) return reject(RequestReject::kBadField, "Experiment: " + id.error().message());
    return *id;
  }
  auto v = integer(*e);
  if (!v || *v < 0 || *v > scitags::kMaxScitagExperiment) {
    return reject(RequestReject::kBadField,
                  fmt::format("Experiment: not an id 1..{} (0: the rules decide) or a name",
                              scitags::kMaxScitagExperiment));
  }
  return static_cast<std::uint32_t>(*v);
}

std::expected<std::uint32_t, RequestError> activity_of(const std::optional<element>& e,
                                                       std::uint32_t experiment,
                                                       const scitags::Registry& registry) {
  if (!e || e->type() == element_type::NULL_VALUE) return 0u;
  if (e->type() == element_type::STRING) {
    auto id = registry.resolve_activity(experiment, e->get_string().value_unsafe());
    if (!id) return reject(RequestReject::kBadField, "Activity: " + id.error().message());
    return *id;
  }
  auto v = integer(*e);
  if (!v || *v < 0 || *v > scitags::kMaxScitagActivity) {
    return reject(RequestReject::kBadField,
                  fmt::format("Activity: not an id 1..{} (0: the rules decide) or a name",
                              scitags::kMaxScitagActivity));
  }
  return static_cast<std::uint32_t>(*v);
}

std::expected<FlowRequest, RequestError> from_flowd_go(element root,
                                                       const scitags::Registry& registry) {
  Members m;
  simdjson::dom::object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) {
    return reject(RequestReject::kBadJson, "the body is not a JSON object");
  }
  for (auto field : obj) {
    const std::string_view k = field.key;
    std::optional<element>* slot = nullptr;
    if (iequals(k, "State"))
      slot = &m.state;
    else if (iequals(k, "Protocol"))
      slot = &m.protocol;
    else if (iequals(k, "Family"))
      slot = &m.family;
    else if (iequals(k, "Src"))
      slot = &m.src;
    else if (iequals(k, "Dst"))
      slot = &m.dst;
    else if (iequals(k, "Experiment"))
      slot = &m.experiment;
    else if (iequals(k, "Activity"))
      slot = &m.activity;
    else if (iequals(k, "StartTs"))
      slot = &m.start;
    else if (iequals(k, "EndTs"))
      slot = &m.end;
    else if (iequals(k, "CurrentTs"))
      slot = &m.current;
    else if (iequals(k, "Application"))
      slot = &m.application;
    if (slot) *slot = field.value;  // others (Info, NetLink...) are ignored, as flowd-go does
  }
  FlowRequest out;
  FlowEvent& e = out.event;
  if (!m.state) {
    return reject(RequestReject::kMissingField,
                  "State: missing (2 start, 3 end, 4 ongoing, or \"start\"/\"end\"/\"ongoing\")");
  }
  if (auto n = integer(*m.state)) {
    switch (*n) {
      case 2: e.state = FlowState::kStart; break;
      case 3: e.state = FlowState::kEnd; break;
      case 4: e.state = FlowState::kOngoing; break;
      default:
        return reject(RequestReject::kUnknownState,
                      fmt::format("State: {} is not 2 (start), 3 (end) or 4 (ongoing)", *n));
    }
  } else if (m.state->type() == element_type::STRING) {
    const std::string_view name = m.state->get_string().value_unsafe();
    if (iequals(name, "start"))
      e.state = FlowState::kStart;
    else if (iequals(name, "end"))
      e.state = FlowState::kEnd;
    else if (iequals(name, "ongoing"))
      e.state = FlowState::kOngoing;
    else
      return reject(RequestReject::kUnknownState,
                    fmt::format("State: '{}' is not start, end or ongoing", name));
  } else {
    return reject(RequestReject::kUnknownState,
                  fmt::format("State: {}, not 2, 3 or 4", type_name(m.state->type())));
  }
  if (m.protocol && m.protocol->type() != element_type::NULL_VALUE) {
    if (auto n = integer(*m.protocol); n && (*n == 0 || *n == 1)) {
      e.protocol = *n == 0 ? scitags::Protocol::kTcp : scitags::Protocol::kUdp;
    } else if (m.protocol->type() == element_type::STRING &&
               (iequals(m.protocol->get_string().value_unsafe(), "tcp") ||
                iequals(m.protocol->get_string().value_unsafe(), "udp"))) {
      e.protocol = iequals(m.protocol->get_string().value_unsafe(), "tcp")
                       ? scitags::Protocol::kTcp
                       : scitags::Protocol::kUdp;
    } else {
      return reject(RequestReject::kBadField, "Protocol: not 0 (TCP) or 1 (UDP)");
    }
  }
  if (!m.src) return reject(RequestReject::kMissingField, "Src: missing (\"ADDRESS:PORT\")");
  if (!m.dst) return reject(RequestReject::kMissingField, "Dst: missing (\"ADDRESS:PORT\")");
  auto src = endpoint("Src", *m.src);
  if (!src) return std::unexpected(std::move(src).error());
  auto dst = endpoint("Dst", *m.dst);
  if (!dst) return std::unexpected(std::move(dst).error());
  e.src = *src;
  e.dst = *dst;
  if (e.src.address.family() != e.dst.address.family()) {
    return reject(RequestReject::kBadField, "Src and Dst: one IPv4 and one IPv6 address");
  }
  if (m.family && m.family->type() != element_type::NULL_VALUE) {
    auto n = integer(*m.family);
    if (!n || (*n != 2 && *n != 10)) {
      return reject(RequestReject::kBadField, "Family: not 2 (IPv4) or 10 (IPv6)");
    }
    if ((*n == 2) != e.src.address.is_v4()) {
      return reject(RequestReject::kBadField, fmt::format("Family: {} but the addresses are {}", *n,
                                                          e.src.address.is_v4() ? "IPv4" : "IPv6"));
    }
  }
  auto exp = experiment_of(m.experiment, registry);
  if (!exp) return std::unexpected(std::move(exp).error());
  auto act = activity_of(m.activity, *exp, registry);
  if (!act) return std::unexpected(std::move(act).error());
  if ((*exp == 0) != (*act == 0)) {
    return reject(RequestReject::kBadField,
                  "Experiment and Activity: give both (ids or names) or neither (the rules "
                  "decide)");
  }
  e.experiment = *exp;
  e.activity = *act;
  auto start = time_of("StartTs", m.start);
  if (!start) return std::unexpected(std::move(start).error());
  auto end = time_of("EndTs", m.end);
  if (!end) return std::unexpected(std::move(end).error());
  auto current = time_of("CurrentTs", m.current);
  if (!current) return std::unexpected(std::move(current).error());
  e.start_time = *start;
  e.end_time = e.state == FlowState::kEnd ? *end : 0;
  e.current_time = *current;
  if (m.application && m.application->type() == element_type::STRING) {
    out.application = std::string(m.application->get_string().value_unsafe());
  }
  out.shape = RequestShape::kFlowdGo;
  return out;
}

RequestReject reason_of(scitags::Reject r) noexcept {
  switch (r) {
    case scitags::Reject::kEmpty:
    case scitags::Reject::kNotJson:
    case scitags::Reject::kNotObject: return RequestReject::kBadJson;
    case scitags::Reject::kUnknownState: return RequestReject::kUnknownState;
    case scitags::Reject::kMissingField:
    case scitags::Reject::kMissingEndTime: return RequestReject::kMissingField;
    default: return RequestReject::kBadField;
  }
}

}  // namespace

struct FlowRequestParser::Impl {
  simdjson::dom::parser json;
  scitags::FireflyDecoder fireflies;
};

FlowRequestParser::FlowRequestParser() : impl_(std::make_unique<Impl>()) {}
FlowRequestParser::~FlowRequestParser() = default;
FlowRequestParser::FlowRequestParser(FlowRequestParser&&) noexcept = default;
FlowRequestParser& FlowRequestParser::operator=(FlowRequestParser&&) noexcept = default;

std::expected<FlowRequest, RequestError> FlowRequestParser::parse(
    std::string_view body, const scitags::Registry& registry) {
  // A firefly may come with its syslog header: the decoder reads it (and rejects what is not
  // a firefly's header).
  const auto first = body.find_first_not_of(" \t\r\n");
  // Nothing to parse: said plainly (simdjson would say "Empty: no JSON found").
  if (first == std::string_view::npos) {
    return reject(RequestReject::kBadJson, "the body is empty: send one JSON flow event");
  }
  if (body[first] == '<') {
    auto f = impl_->fireflies.decode(body);
    if (!f) return reject(reason_of(f.error().reason), f.error().detail);
    return FlowRequest{(*f)->event, RequestShape::kFirefly, (*f)->application};
  }
  element root;
  if (auto err = impl_->json.parse(body.data(), body.size()).get(root); err) {
    return reject(RequestReject::kBadJson,
                  fmt::format("the body is not JSON: {}", simdjson::error_message(err)));
  }
  if (root.type() != element_type::OBJECT) {
    return reject(RequestReject::kBadJson,
                  fmt::format("the body is {}, not a JSON object", type_name(root.type())));
  }
  // flowmark's own schema: the firefly document.
  simdjson::dom::object obj;
  if (root.get_object().get(obj) != simdjson::SUCCESS) {
    return reject(RequestReject::kBadJson, "the body is not a JSON object");
  }
  if (obj.at_key("flow-lifecycle").error() == simdjson::SUCCESS ||
      obj.at_key("flow-id").error() == simdjson::SUCCESS) {
    auto f = impl_->fireflies.decode(body);
    if (!f) return reject(reason_of(f.error().reason), f.error().detail);
    return FlowRequest{(*f)->event, RequestShape::kFirefly, (*f)->application};
  }
  return from_flowd_go(root, registry);
}

std::string flowd_go_json(const scitags::FlowEvent& e, std::string_view application) {
  auto time = [](Micros t) {
    if (t <= 0) return std::string("\"0001-01-01T00:00:00Z\"");
    char buf[kRfc3339MicrosSize];
    format_rfc3339_micros(buf, t);
    return fmt::format("\"{}\"", std::string_view(buf, sizeof buf));
  };
  const int state = e.state == FlowState::kStart ? 2 : e.state == FlowState::kEnd ? 3 : 4;
  std::string app;
  append_json_string(app, is_valid_utf8(application) ? application : std::string_view());
  return fmt::format(
      "{{\"State\":{},\"Protocol\":{},\"Family\":{},\"Src\":\"{}\",\"Dst\":\"{}\","
      "\"Experiment\":{},\"Activity\":{},\"StartTs\":{},\"EndTs\":{},\"CurrentTs\":{},"
      "\"Application\":{}}}\n",
      state, e.protocol == scitags::Protocol::kTcp ? 0 : 1, e.src.address.is_v4() ? 2 : 10,
      e.src.to_string(), e.dst.to_string(), e.experiment, e.activity, time(e.start_time),
      time(e.end_time), time(e.current_time), app);
}

}  // namespace flowmark::daemon::api
