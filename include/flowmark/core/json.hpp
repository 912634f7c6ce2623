// flowmark::core — the small pieces of JSON output every command needs.
//
// Output is written by hand (fmt) rather than through a DOM: one object per line, no
// allocation beyond the caller's buffer.
//
//   std::string out;
//   append_json_string(out, payload);   // quoted, escaped; invalid UTF-8 is replaced
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace flowmark {

// True when `bytes` is well-formed UTF-8 (no overlongs, no surrogates).
bool is_valid_utf8(std::string_view bytes) noexcept;

// Appends `text` as a quoted JSON string. Control characters are escaped; the caller
// must pass valid UTF-8 (check with is_valid_utf8 and use base64 otherwise).
void append_json_string(std::string& out, std::string_view text);

// Appends the RFC 4648 base64 form of `bytes` (no line breaks).
void append_base64(std::string& out, std::string_view bytes);

}  // namespace flowmark
