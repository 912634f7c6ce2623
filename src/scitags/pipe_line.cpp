#include "flowmark/scitags/pipe_line.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace flowmark::scitags {

std::string_view to_string(PipeReject r) noexcept {
  switch (r) {
    case PipeReject::kTokenCount: return "token_count";
    case PipeReject::kBadState: return "bad_state";
    case PipeReject::kBadProtocol: return "bad_protocol";
    case PipeReject::kBadAddress: return "bad_address";
    case PipeReject::kBadPort: return "bad_port";
    case PipeReject::kFamilyMismatch: return "family_mismatch";
    case PipeReject::kBadId: return "bad_id";
    case PipeReject::kUnknownExperiment: return "unknown_experiment";
    case PipeReject::kUnknownActivity: return "unknown_activity";
  }
  return "unknown";
}

std::string_view pipe_token_name(std::size_t position) noexcept {
  static constexpr std::array<std::string_view, kPipeLineTokens + 1> kNames = {
      "line",   "state",    "protocol",   "src_ip",  "src_port",
      "dst_ip", "dst_port", "experiment", "activity"};
  return position < kNames.size() ? kNames[position] : "extra";
}

namespace {

// ' ', '\t', '\n', '\v', '\f', '\r' (isspace in the C locale) in two comparisons: six were
// half of the tokenizer's instructions.
bool is_space(char c) noexcept {
  return c == ' ' || static_cast<unsigned char>(c - '\t') <= '\r' - '\t';
}

// The end of the token at `i`: the first whitespace at or after it, or the line's end. Eight
// bytes at a time up to the first byte below '!' (whitespace is among those), then byte by byte
// from there: the tokenizer's per-character loop was a sixth of the instructions per pipe line.
std::size_t token_end(std::string_view line, std::size_t i) noexcept {
  const char* p = line.data();
  const std::size_t n = line.size();
  if constexpr (std::endian::native == std::endian::little) {
    constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
    while (i + 8 <= n) {
      std::uint64_t x;
      std::memcpy(&x, p + i, 8);
      // The lowest byte flagged is the first one below 0x21 (a borrow only flags bytes above
      // a real one; bytes of 0x80 and more are never flagged).
      const std::uint64_t below = (x - 0x21 * kOnes) & ~x & (0x80 * kOnes);
      if (below != 0) {
        i += static_cast<std::size_t>(std::countr_zero(below)) / 8;
        break;
      }
      i += 8;
    }
  }
  while (i < n && !is_space(p[i])) ++i;
  return i;
}

// A token as it may be shown in a message: cut to 64 bytes, control characters as '?'.
std::string shown(std::string_view token) {
  constexpr std::size_t kMax = 64;
  std::string out;
  for (char c : token.substr(0, kMax))
    out.push_back(static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c);
  if (token.size() > kMax) out += "...";
  return out;
}

std::unexpected<PipeLineError> reject(PipeReject reason, std::size_t token, std::string why) {
  std::string message = token == 0
                            ? std::move(why)
                            : fmt::format("token {} ({}): {}", token, pipe_token_name(token), why);
  return std::unexpected(PipeLineError{reason, token, std::move(message)});
}

std::expected<IpAddress, PipeLineError> parse_address(std::string_view token, std::size_t pos) {
  if (token.find('%') != std::string_view::npos)
    return reject(
        PipeReject::kBadAddress, pos,
        fmt::format("'{}': an address with a zone (%scope) cannot be announced", shown(token)));
  auto a = IpAddress::parse(token);
  if (!a)
    return reject(PipeReject::kBadAddress, pos,
                  fmt::format("'{}' is not an IP address ({})", shown(token), a.error().message()));
  return *a;
}

std::expected<std::uint16_t, PipeLineError> parse_port_token(std::string_view token,
                                                             std::size_t pos) {
  auto p = parse_port(token);
  if (!p) return reject(PipeReject::kBadPort, pos, fmt::format("{}", p.error().message()));
  return *p;
}

// All decimal digits (an id), as opposed to a registry name.
bool is_number(std::string_view token) noexcept {
  if (token.empty()) return false;
  for (char c : token)
    if (c < '0' || c > '9') return false;
  return true;
}

std::expected<std::uint32_t, PipeLineError> parse_id(std::string_view token, std::size_t pos,
                                                     std::string_view kind, std::uint32_t max) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(token.data(), token.data() + token.size(), v);
  if (ec != std::errc() || p != token.data() + token.size() || v < 1 || v > max)
    return reject(PipeReject::kBadId, pos,
                  fmt::format("{} id {} is out of range 1..{}", kind, shown(token), max));
  return static_cast<std::uint32_t>(v);
}

// "a, b, c" sorted, at most 30 names.
// The keyword tokens (state, protocol) in lower case, as flowd-go reads them in any case
// ("START TCP …" is a start line there too). Longer tokens cannot be keywords: left as they are.
std::string_view lowered(std::string_view token, std::array<char, 8>& buf) noexcept {
  if (token.size() > buf.size()) return token;
  for (std::size_t i = 0; i < token.size(); ++i) {
    const char c = token[i];
    buf[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  return {buf.data(), token.size()};
}

std::string known(std::vector<std::string_view> names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  constexpr std::size_t kMax = 30;
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < kMax; ++i) {
    if (i > 0) out += ", ";
    out += names[i];
  }
  if (names.size() > kMax) out += fmt::format(", ... ({} in all)", names.size());
  return out.empty() ? "none" : out;
}

}  // namespace

bool is_blank_line(std::string_view line) noexcept {
  for (char c : line)
    if (!is_space(c)) return false;
  return true;
}

std::expected<FlowEvent, PipeLineError> parse_pipe_line(std::string_view line,
                                                        const Registry& registry) {
  std::array<std::string_view, kPipeLineTokens> tokens;
  std::size_t n = 0;
  std::size_t i = 0;
  while (true) {
    while (i < line.size() && is_space(line[i])) ++i;
    if (i == line.size()) break;
    const std::size_t start = i;
    i = token_end(line, i);
    if (n == kPipeLineTokens) {
      ++n;  // one too many is enough to know
      break;
    }
    tokens[n++] = line.substr(start, i - start);
  }
  if (n != kPipeLineTokens)
    return reject(PipeReject::kTokenCount, 0,
                  fmt::format("expected 8 tokens (state prot src_ip src_port dst_ip dst_port "
                              "exp act), got {}",
                              n > kPipeLineTokens ? "more" : std::to_string(n)));
  return parse_pipe_tokens(tokens, registry);
}

std::expected<FlowEvent, PipeLineError> parse_pipe_tokens(std::span<const std::string_view> t,
                                                          const Registry& registry) {
  if (t.size() != kPipeLineTokens)
    return reject(PipeReject::kTokenCount, 0,
                  fmt::format("expected 8 tokens (state prot src_ip src_port dst_ip dst_port "
                              "exp act), got {}",
                              t.size()));
  FlowEvent e;
  std::array<char, 8> lower_buf;
  auto state = parse_flow_state(lowered(t[0], lower_buf));
  if (!state)
    return reject(PipeReject::kBadState, 1,
                  fmt::format("'{}' is not start, ongoing or end", shown(t[0])));
  e.state = *state;
  auto proto = parse_protocol(lowered(t[1], lower_buf));
  if (!proto)
    return reject(PipeReject::kBadProtocol, 2, fmt::format("'{}' is not tcp or udp", shown(t[1])));
  e.protocol = *proto;

  auto src = parse_address(t[2], 3);
  if (!src) return std::unexpected(std::move(src.error()));
  auto sport = parse_port_token(t[3], 4);
  if (!sport) return std::unexpected(std::move(sport.error()));
  auto dst = parse_address(t[4], 5);
  if (!dst) return std::unexpected(std::move(dst.error()));
  if (dst->family() != src->family())
    return reject(
        PipeReject::kFamilyMismatch, 5,
        fmt::format("{} is {} but the source {} is {}", shown(t[4]), dst->is_v4() ? "IPv4" : "IPv6",
                    shown(t[2]), src->is_v4() ? "IPv4" : "IPv6"));
  auto dport = parse_port_token(t[5], 6);
  if (!dport) return std::unexpected(std::move(dport.error()));
  e.src = {*src, *sport};
  e.dst = {*dst, *dport};

  if (is_number(t[6]) || t[6].starts_with('-')) {
    auto id = parse_id(t[6], 7, "experiment", kMaxScitagExperiment);
    if (!id) return std::unexpected(std::move(id.error()));
    e.experiment = *id;
  } else {
    auto id = registry.experiment_id(t[6]);
    if (!id) {
      std::vector<std::string_view> names;
      names.reserve(registry.experiments().size());
      for (const Experiment& x : registry.experiments()) names.push_back(x.name);
      return reject(PipeReject::kUnknownExperiment, 7,
                    fmt::format("unknown experiment '{}' (names are case-sensitive); known: {}",
                                shown(t[6]), known(std::move(names))));
    }
    e.experiment = *id;
  }
  if (is_number(t[7]) || t[7].starts_with('-')) {
    auto id = parse_id(t[7], 8, "activity", kMaxScitagActivity);
    if (!id) return std::unexpected(std::move(id.error()));
    e.activity = *id;
  } else {
    const Experiment* x = registry.find_experiment(e.experiment);
    if (x == nullptr)
      return reject(PipeReject::kUnknownActivity, 8,
                    fmt::format("'{}': experiment {} is not in the registry, so its activity "
                                "names are unknown; give the activity id",
                                shown(t[7]), e.experiment));
    auto id = registry.activity_id(e.experiment, t[7]);
    if (!id) {
      std::vector<std::string_view> names;
      names.reserve(x->activities.size());
      for (const Activity& a : x->activities) names.push_back(a.name);
      return reject(PipeReject::kUnknownActivity, 8,
                    fmt::format("unknown activity '{}' in experiment {} ({}); known: {}",
                                shown(t[7]), x->name, x->id, known(std::move(names))));
    }
    e.activity = *id;
  }
  return e;
}

}  // namespace flowmark::scitags
