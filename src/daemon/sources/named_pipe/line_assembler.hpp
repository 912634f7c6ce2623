// Lines of the named-pipe source out of the bytes of its reads: a line split across reads
// is reassembled, a line longer than `max_line` is rejected whole (its tail, up to the next
// newline, is dropped with it), and when every writer has closed, a pending partial line is
// handed back as incomplete instead of being glued to the next writer's first line.
//
//   LineAssembler lines(4096);
//   lines.feed(bytes, [&](std::string_view line) { parse(line); }, [&] { count_too_long(); });
//   if (auto rest = lines.finish()) reject_incomplete(*rest);   // all writers gone
//
// The views given to `on_line` point into `feed`'s data or the assembler's own buffer:
// valid only during the call. Lines carry no '\n'; blank lines are passed on (the caller
// decides).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace flowmark::daemon {

class LineAssembler {
 public:
  explicit LineAssembler(std::size_t max_line) : max_line_(max_line) {}

  // Splits `data` (the next bytes of the stream) into lines.
  template <typename OnLine, typename OnTooLong>
  void feed(std::string_view data, OnLine&& on_line, OnTooLong&& on_too_long);

  // The stream ended (every writer closed): the partial line, if one was pending and not
  // already rejected as too long; the assembler is then ready for a new stream.
  std::optional<std::string> finish();

  // Bytes of the pending partial line.
  std::size_t pending() const noexcept { return partial_.size(); }

 private:
  std::size_t max_line_;
  std::string partial_;
  bool discarding_ = false;  // inside the tail of an over-long line
};

template <typename OnLine, typename OnTooLong>
void LineAssembler::feed(std::string_view data, OnLine&& on_line, OnTooLong&& on_too_long) {
  auto too_long = [&] {
    partial_.clear();
    on_too_long();
  };
  while (!data.empty()) {
    const auto nl = data.find('\n');
    if (nl == std::string_view::npos) {
      if (!discarding_) {
        if (partial_.size() + data.size() > max_line_) {
          too_long();
          discarding_ = true;  // drop the rest, up to the next newline
        } else {
          partial_.append(data);
        }
      }
      return;
    }
    const auto piece = data.substr(0, nl);
    data.remove_prefix(nl + 1);
    if (discarding_) {  // the tail of an over-long line ends here
      discarding_ = false;
      continue;
    }
    if (!partial_.empty()) {
      if (partial_.size() + piece.size() > max_line_) {
        too_long();
        continue;
      }
      partial_.append(piece);
      on_line(std::string_view(partial_));
      partial_.clear();
    } else if (piece.size() > max_line_) {
      too_long();
    } else {
      on_line(piece);
    }
  }
}

inline std::optional<std::string> LineAssembler::finish() {
  std::optional<std::string> rest;
  if (!partial_.empty() && !discarding_) rest = std::move(partial_);
  partial_.clear();
  discarding_ = false;
  return rest;
}

}  // namespace flowmark::daemon
