// Reading flowd's config files: the Python-literal subset, format detection and repr.
// The translation into flowmarkd's schema is in flowd_translate.cpp.
#include "flowmark/daemon/flowd/flowd_config.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <optional>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

namespace flowmark::daemon {
namespace {

bool is_ident_start(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_ident_char(char c) noexcept { return is_ident_start(c) || is_digit(c); }
bool is_blank(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\f'; }

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

FlowdValue widen(FlowdScalar scalar) {
  return std::visit([](auto v) -> FlowdValue { return FlowdValue(std::move(v)); },
                    std::move(scalar));
}

// The offset of the first byte that does not belong to well-formed UTF-8, or npos.
std::size_t invalid_utf8_at(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (b < 0x80) {
      ++i;
      continue;
    } else if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
      cp = b & 0x1Fu;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      cp = b & 0x0Fu;
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      cp = b & 0x07u;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (std::size_t k = 1; k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (c & 0x3Fu);
    }
    const bool overlong = (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

// A position in the text, for messages.
struct Pos {
  int line = 1;
  int column = 1;
};

class Parser {
 public:
  Parser(std::string_view text, std::string_view file) : text_(text), file_(file) {
    if (text_.starts_with("\xEF\xBB\xBF")) pos_ = line_start_ = 3;  // a UTF-8 BOM
  }

  Result<FlowdConfig> parse() {
    // Python 3 reads source files as UTF-8 and refuses anything else, comments included; so
    // do we, which also keeps every string representable in TOML.
    if (const auto bad = invalid_utf8_at(text_.substr(pos_)); bad != std::string_view::npos) {
      const std::size_t target = pos_ + bad;
      while (pos_ < target) advance();
      return error_at(here(), fmt::format("byte 0x{:02x} is not UTF-8 (flowd reads its config "
                                          "as UTF-8 text)",
                                          static_cast<unsigned char>(peek())));
    }
    FlowdConfig config;
    config.file_name = file_;
    while (true) {
      skip_blanks(false);
      if (eof()) break;
      if (peek() == '#') skip_comment();
      if (eof()) break;
      if (peek() == '\n') {
        advance();
        continue;
      }
      FM_TRY(auto entry, parse_assignment());
      config.entries.push_back(std::move(entry));
    }
    return config;
  }

 private:
  bool eof() const noexcept { return pos_ >= text_.size(); }
  char peek(std::size_t ahead = 0) const noexcept {
    return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0';
  }
  Pos here() const noexcept { return {line_, static_cast<int>(pos_ - line_start_) + 1}; }
  void advance() noexcept {
    if (text_[pos_] == '\n') {
      ++line_;
      line_start_ = pos_ + 1;
    }
    ++pos_;
  }

  std::unexpected<Error> error_at(Pos p, std::string_view what) const {
    return fail(Errc::kMalformed, fmt::format("{}:{}:{}: {}", file_, p.line, p.column, what));
  }

  // Blanks, `\`-newline continuations, and — inside brackets — newlines and comments.
  void skip_blanks(bool in_brackets) noexcept {
    while (!eof()) {
      const char c = peek();
      if (is_blank(c) || (in_brackets && c == '\n')) {
        advance();
      } else if (c == '\\' && (peek(1) == '\n' || (peek(1) == '\r' && peek(2) == '\n'))) {
        advance();
        if (peek() == '\r') advance();
        advance();
      } else if (in_brackets && c == '#') {
        skip_comment();
      } else {
        break;
      }
    }
  }
  void skip_comment() noexcept {
    while (!eof() && peek() != '\n') advance();
  }

  Result<FlowdEntry> parse_assignment() {
    const Pos start = here();
    if (!is_ident_start(peek())) {
      return error_at(start, fmt::format("expected KEY = value, found {}", describe_here()));
    }
    FlowdEntry entry;
    entry.line = start.line;
    entry.column = start.column;
    while (!eof() && is_ident_char(peek())) {
      entry.key += peek();
      advance();
    }
    skip_blanks(false);
    if (peek() != '=' || peek(1) == '=') {
      return error_at(here(),
                      fmt::format("expected '=' after {}, found {}", entry.key, describe_here()));
    }
    advance();
    skip_blanks(false);
    FM_TRY(entry.value, parse_value(entry.key));
    skip_blanks(false);
    if (!eof() && peek() == '#') skip_comment();
    if (!eof() && peek() != '\n') {
      const char* hint = peek() == ';' ? " (one KEY = value per line)" : "";
      return error_at(here(), fmt::format("expected the end of the line after the value of {}, "
                                          "found {}{}",
                                          entry.key, describe_here(), hint));
    }
    return entry;
  }

  // What is at the cursor, for "found ..." in messages.
  std::string describe_here() const {
    if (eof()) return "the end of the file";
    const char c = peek();
    if (c == '\n') return "the end of the line";
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F) {
      return fmt::format("byte 0x{:02x}", static_cast<unsigned char>(c));
    }
    return fmt::format("'{}'", c);
  }

  Result<FlowdValue> parse_value(std::string_view key) {
    const char c = peek();
    if (c == '(' || c == '[') return parse_sequence();
    FM_TRY(auto scalar, parse_scalar(key));
    return widen(std::move(scalar));
  }

  Result<FlowdValue> parse_sequence() {
    const Pos open_pos = here();
    const char open = peek();
    const char close = open == '(' ? ')' : ']';
    advance();
    FlowdList list;
    list.is_tuple = open == '(';
    bool saw_comma = false;
    while (true) {
      skip_blanks(true);
      if (eof()) {
        return error_at(open_pos, fmt::format("'{}' is never closed (expected '{}')", open, close));
      }
      if (peek() == close) {
        advance();
        break;
      }
      if (peek() == '(' || peek() == '[') {
        return error_at(here(),
                        "nested tuples and lists are not supported (flowd's keys take "
                        "a flat list of strings or numbers)");
      }
      FM_TRY(auto item, parse_scalar({}));
      list.items.push_back(std::move(item));
      skip_blanks(true);
      if (peek() == ',') {
        advance();
        saw_comma = true;
        continue;
      }
      if (peek() == close) {
        advance();
        break;
      }
      if (eof()) {
        return error_at(open_pos, fmt::format("'{}' is never closed (expected '{}')", open, close));
      }
      return error_at(here(),
                      fmt::format("expected ',' or '{}', found {}", close, describe_here()));
    }
    // `(x)` is x itself in Python; only `(x,)` is a one-element tuple.
    if (list.is_tuple && list.items.size() == 1 && !saw_comma) {
      return widen(std::move(list.items.front()));
    }
    return list;
  }

  Result<FlowdScalar> parse_scalar(std::string_view key) {
    const Pos start = here();
    const char c = peek();
    if (c == '\'' || c == '"') return parse_string(false);
    if ((c == 'r' || c == 'R' || c == 'u' || c == 'U') && (peek(1) == '\'' || peek(1) == '"')) {
      advance();
      return parse_string(c == 'r' || c == 'R');
    }
    if ((c == 'b' || c == 'B' || c == 'f' || c == 'F') && (peek(1) == '\'' || peek(1) == '"')) {
      return error_at(start, "bytes and f-strings are not supported; use a plain quoted string");
    }
    if (is_digit(c) || c == '-' || c == '+' || (c == '.' && is_digit(peek(1)))) {
      return parse_number();
    }
    if (is_ident_start(c)) {
      std::string word;
      while (!eof() && is_ident_char(peek())) {
        word += peek();
        advance();
      }
      if (word == "True") return FlowdScalar(true);
      if (word == "False") return FlowdScalar(false);
      if (word == "None") return FlowdScalar(FlowdNone{});
      std::string hint;
      if (word == "true" || word == "false" || word == "none") {
        hint = fmt::format(" (Python spells it {}{})", static_cast<char>(word[0] - 'a' + 'A'),
                           word.substr(1));
      }
      return error_at(start,
                      fmt::format("expected a value{}: a quoted string, a number, True, "
                                  "False or None, not the name {}{}",
                                  key.empty() ? "" : fmt::format(" for {}", key), word, hint));
    }
    return error_at(start,
                    fmt::format("expected a value{} (a quoted string, a number, True, "
                                "False, None, a tuple or a list), found {}",
                                key.empty() ? "" : fmt::format(" for {}", key), describe_here()));
  }

  Result<FlowdScalar> parse_string(bool raw) {
    const Pos open_pos = here();
    const char quote = peek();
    if (peek(1) == quote && peek(2) == quote) {
      return error_at(open_pos, "triple-quoted strings are not supported");
    }
    advance();
    std::string out;
    while (true) {
      if (eof() || peek() == '\n') return error_at(open_pos, "unterminated string");
      const char c = peek();
      if (c == quote) {
        advance();
        return FlowdScalar(std::move(out));
      }
      if (c != '\\') {
        out += c;
        advance();
        continue;
      }
      const Pos esc_pos = here();
      advance();
      if (eof()) return error_at(open_pos, "unterminated string");
      const char e = peek();
      if (raw) {  // r'…': the backslash stays, and escapes the quote only from ending the string
        out += '\\';
        out += e;
        advance();
        continue;
      }
      advance();
      switch (e) {
        case '\n': break;  // a continuation line inside the string
        case '\r':
          if (peek() == '\n') advance();
          break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
          const int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          std::uint32_t cp = 0;
          for (int i = 0; i < digits; ++i) {
            const int h = hex_value(peek());
            if (h < 0) {
              return error_at(
                  esc_pos, fmt::format("invalid \\{} escape: expected {} hex digits", e, digits));
            }
            cp = cp * 16 + static_cast<std::uint32_t>(h);
            advance();
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return error_at(esc_pos,
                            fmt::format("invalid \\{} escape: U+{:X} is not a character", e, cp));
          }
          append_utf8(out, cp);
          break;
        }
        case 'N': return error_at(esc_pos, "\\N{...} escapes are not supported");
        default:
          if (e >= '0' && e <= '7') {  // up to three octal digits
            std::uint32_t cp = static_cast<std::uint32_t>(e - '0');
            for (int i = 0; i < 2 && peek() >= '0' && peek() <= '7'; ++i) {
              cp = cp * 8 + static_cast<std::uint32_t>(peek() - '0');
              advance();
            }
            append_utf8(out, cp);
          } else {  // Python keeps unknown escapes as written: '\d' is backslash, d
            out += '\\';
            out += e;
          }
      }
    }
  }

  Result<FlowdScalar> parse_number() {
    const Pos start = here();
    bool negative = false;
    if (peek() == '+' || peek() == '-') {
      negative = peek() == '-';
      advance();
    }
    std::string token;  // the literal without its sign
    int base = 10;
    bool is_float = false;
    if (peek() == '0' && (peek(1) == 'x' || peek(1) == 'X' || peek(1) == 'o' || peek(1) == 'O' ||
                          peek(1) == 'b' || peek(1) == 'B')) {
      const char p = static_cast<char>(peek(1) | 0x20);
      base = p == 'x' ? 16 : p == 'o' ? 8 : 2;
      advance();
      advance();
      while (!eof() && (is_ident_char(peek()))) {
        token += peek();
        advance();
      }
    } else {
      while (!eof()) {
        const char c = peek();
        if (is_digit(c) || c == '_') {
          token += c;
        } else if (c == '.' || c == 'e' || c == 'E') {
          is_float = true;
          token += c;
          if ((c == 'e' || c == 'E') && (peek(1) == '+' || peek(1) == '-')) {
            advance();
            token += peek();
          }
        } else {
          break;
        }
        advance();
      }
      if (!eof() && is_ident_char(peek())) {
        return error_at(start,
                        fmt::format("invalid number: '{}' cannot follow the digits", peek()));
      }
    }
    // Underscores only between digits, as in Python: 10_514.
    std::string digits;
    for (std::size_t i = 0; i < token.size(); ++i) {
      if (token[i] != '_') {
        digits += token[i];
        continue;
      }
      const bool between = i > 0 && i + 1 < token.size() && hex_value(token[i - 1]) >= 0 &&
                           hex_value(token[i + 1]) >= 0;
      if (!between) return error_at(start, "invalid number: '_' must sit between digits");
    }
    if (digits.empty()) return error_at(start, "expected digits after the sign or prefix");
    if (is_float) {
      double v = 0;
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (ec == std::errc::result_out_of_range) {
        return error_at(start, "number out of range");
      }
      if (ec != std::errc() || end != digits.data() + digits.size() || !std::isfinite(v)) {
        return error_at(start, fmt::format("invalid number '{}'", digits));
      }
      return FlowdScalar(negative ? -v : v);
    }
    if (base == 10 && digits.size() > 1 && digits[0] == '0' &&
        digits.find_first_not_of('0') != std::string::npos) {
      return error_at(start, fmt::format("invalid number '{}': Python does not allow leading "
                                         "zeros (write 0o{} for octal)",
                                         digits, digits.substr(digits.find_first_not_of('0'))));
    }
    std::uint64_t magnitude = 0;
    const auto [end, ec] =
        std::from_chars(digits.data(), digits.data() + digits.size(), magnitude, base);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc() &&
         magnitude > (negative ? 0x8000000000000000ull : 0x7FFFFFFFFFFFFFFFull))) {
      return error_at(start, "integer out of range (64-bit)");
    }
    if (ec != std::errc() || end != digits.data() + digits.size()) {
      return error_at(start, fmt::format("invalid base-{} number '{}'", base, digits));
    }
    const auto value =
        negative ? static_cast<std::int64_t>(0 - magnitude) : static_cast<std::int64_t>(magnitude);
    return FlowdScalar(value);
  }

  std::string_view text_;
  std::string file_;
  std::size_t pos_ = 0;
  std::size_t line_start_ = 0;
  int line_ = 1;
};

std::string python_string(const std::string& s) {
  // Python's repr prefers single quotes unless the text has one and no double quote.
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == q || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (u < 0x20 || u == 0x7F) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  out += q;
  return out;
}

std::string python_scalar(const FlowdScalar& v) {
  struct Visitor {
    std::string operator()(FlowdNone) const { return "None"; }
    std::string operator()(bool b) const { return b ? "True" : "False"; }
    std::string operator()(std::int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const {
      std::string s = fmt::format("{}", d);
      if (s.find_first_of(".en") == std::string::npos) s += ".0";
      return s;
    }
    std::string operator()(const std::string& s) const { return python_string(s); }
  };
  return std::visit(Visitor{}, v);
}

}  // namespace

const FlowdEntry* FlowdConfig::find(std::string_view key) const noexcept {
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->key == key) return &*it;
  }
  return nullptr;
}

std::vector<FlowdDuplicate> FlowdConfig::duplicates() const {
  std::vector<FlowdDuplicate> out;
  for (const FlowdEntry& e : entries) {
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& d) { return d.key == e.key; });
    if (it == out.end()) {
      out.push_back({e.key, {e.line}});
    } else {
      it->lines.push_back(e.line);
    }
  }
  std::erase_if(out, [](const FlowdDuplicate& d) { return d.lines.size() < 2; });
  return out;
}

Result<FlowdConfig> parse_flowd_config(std::string_view text, std::string_view file_name) {
  return Parser(text, file_name).parse();
}

bool looks_like_flowd_config(std::string_view text) noexcept {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (is_blank(text[i]) || text[i] == '\n')) ++i;
    if (i >= text.size()) return false;
    if (text[i] == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
      continue;
    }
    // The first statement decides: NAME = ... with NAME in [A-Z][A-Z0-9_]*.
    if (text[i] < 'A' || text[i] > 'Z') return false;
    while (i < text.size() &&
           ((text[i] >= 'A' && text[i] <= 'Z') || is_digit(text[i]) || text[i] == '_')) {
      ++i;
    }
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    return i < text.size() && text[i] == '=' && (i + 1 >= text.size() || text[i + 1] != '=');
  }
  return false;
}

std::string to_python(const FlowdValue& value) {
  if (const auto* list = std::get_if<FlowdList>(&value)) {
    std::string out(1, list->is_tuple ? '(' : '[');
    for (std::size_t i = 0; i < list->items.size(); ++i) {
      if (i > 0) out += ", ";
      out += python_scalar(list->items[i]);
    }
    if (list->is_tuple && list->items.size() == 1) out += ',';
    out += list->is_tuple ? ')' : ']';
    return out;
  }
  return std::visit(
      [](const auto& v) -> std::string {
        if constexpr (std::is_same_v<std::decay_t<decltype(v)>, FlowdList>) {
          return {};
        } else {
          return python_scalar(FlowdScalar(v));
        }
      },
      value);
}

}  // namespace flowmark::daemon
