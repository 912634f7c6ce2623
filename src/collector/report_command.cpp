// `flowmark report`: a store's flows grouped and summed, as a table, JSON or CSV.
#include "flowmark/collector/report_command.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "flowmark/core/exit_code.hpp"
#include "flowmark/core/json.hpp"

namespace flowmark::collector {

Result<Micros> parse_report_time(std::string_view text) {
  if (text.size() == 10 && text[4] == '-' && text[7] == '-') {
    auto t = parse_rfc3339(std::string(text) + "T00:00:00Z");
    if (t) return t;
  }
  auto t = parse_rfc3339(text);
  if (!t) {
    return fail(Errc::kInvalidArgument,
                fmt::format("'{}' is not a time: give RFC 3339 (2026-12-07T04:00:00Z) or a UTC "
                            "date (2026-12-07)",
                            text));
  }
  return t;
}

Result<std::vector<GroupBy>> parse_group_by_list(std::string_view text) {
  std::vector<GroupBy> by;
  while (true) {
    const auto comma = text.find(',');
    std::string_view name = text.substr(0, comma);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    auto g = parse_group_by(name);
    if (!g) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("--by: unknown column '{}' (allowed: {})", name, group_by_names()));
    }
    if (std::find(by.begin(), by.end(), *g) != by.end()) {
      return fail(Errc::kInvalidArgument, fmt::format("--by: '{}' given twice", name));
    }
    by.push_back(*g);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return by;
}

namespace {

// One cell: text (nullopt: null) and whether it is a number (JSON, alignment).
struct Cell {
  std::optional<std::string> text;
  bool number = false;
};

std::vector<std::string> header(const std::vector<GroupBy>& by) {
  std::vector<std::string> h;
  for (auto g : by) {
    if (g == GroupBy::kExperiment) h.push_back("experiment_id");
    if (g == GroupBy::kActivity) h.push_back("activity_id");
    h.emplace_back(to_string(g));
  }
  for (const char* c : {"flows", "bytes", "throughput_median", "throughput_p95"}) h.push_back(c);
  return h;
}

std::vector<Cell> cells(const ReportRow& r, const std::vector<GroupBy>& by, bool round) {
  std::vector<Cell> c;
  auto name = [](const std::string& s) {
    return s.empty() ? Cell{} : Cell{.text = s, .number = false};
  };
  auto num = [](auto v) { return Cell{.text = fmt::format("{}", v), .number = true}; };
  for (auto g : by) {
    switch (g) {
      case GroupBy::kExperiment:
        c.push_back(num(r.experiment_id));
        c.push_back(name(r.experiment));
        break;
      case GroupBy::kActivity:
        c.push_back(num(r.activity_id));
        c.push_back(name(r.activity));
        break;
      case GroupBy::kSrcSite: c.push_back(name(r.src_site)); break;
      case GroupBy::kDstSite: c.push_back(name(r.dst_site)); break;
      case GroupBy::kDay: {
        char buf[kRfc3339MicrosSize];
        format_rfc3339_micros(buf, r.day);
        c.push_back(Cell{.text = std::string(buf, 10), .number = false});
        break;
      }
    }
  }
  c.push_back(num(r.flows));
  c.push_back(num(r.bytes));
  for (double v : {r.throughput_median, r.throughput_p95}) {
    if (r.rated == 0) {
      c.push_back(Cell{.text = std::nullopt, .number = true});
    } else {
      c.push_back(
          Cell{.text = round ? fmt::format("{:.0f}", v) : fmt::format("{}", v), .number = true});
    }
  }
  return c;
}

void csv_field(std::string& out, std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) {
    out += s;
    return;
  }
  out += '"';
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  out += '"';
}

}  // namespace

void format_report(const std::vector<ReportRow>& rows, const std::vector<GroupBy>& by,
                   std::string_view format, std::string& out) {
  const auto head = header(by);
  if (format == "json") {
    out += '[';
    for (std::size_t i = 0; i < rows.size(); ++i) {
      out += i == 0 ? "\n  {" : ",\n  {";
      const auto c = cells(rows[i], by, false);
      for (std::size_t k = 0; k < c.size(); ++k) {
        if (k != 0) out += ", ";
        append_json_string(out, head[k]);
        out += ": ";
        const auto& text = c[k].text;
        if (!text) {
          out += "null";
        } else if (c[k].number) {
          out += *text;
        } else {
          append_json_string(out, *text);
        }
      }
      out += '}';
    }
    out += rows.empty() ? "]\n" : "\n]\n";
    return;
  }
  if (format == "csv") {
    for (std::size_t k = 0; k < head.size(); ++k) {
      if (k != 0) out += ',';
      out += head[k];
    }
    out += "\r\n";
    for (const auto& r : rows) {
      const auto c = cells(r, by, false);
      for (std::size_t k = 0; k < c.size(); ++k) {
        if (k != 0) out += ',';
        if (const auto& text = c[k].text) csv_field(out, *text);
      }
      out += "\r\n";
    }
    return;
  }
  // A table: names left-aligned, numbers right-aligned, null as "-".
  std::vector<std::vector<Cell>> table;
  table.reserve(rows.size());
  std::vector<std::size_t> width(head.size());
  for (std::size_t k = 0; k < head.size(); ++k) width[k] = head[k].size();
  for (const auto& r : rows) {
    table.push_back(cells(r, by, true));
    for (std::size_t k = 0; k < head.size(); ++k) {
      width[k] = std::max(width[k], table.back()[k].text.value_or("-").size());
    }
  }
  auto line = [&](auto&& text_of, auto&& right_of) {
    std::string l;
    for (std::size_t k = 0; k < head.size(); ++k) {
      if (k != 0) l += "  ";
      const std::string t = text_of(k);
      const std::size_t pad = width[k] - t.size();
      if (right_of(k)) l.append(pad, ' ');
      l += t;
      if (!right_of(k) && k + 1 != head.size()) l.append(pad, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l;
    out += '\n';
  };
  const std::vector<Cell> kinds = rows.empty() ? std::vector<Cell>() : table.front();
  auto is_number = [&](std::size_t k) {
    return k >= head.size() - 4 || (!kinds.empty() && kinds[k].number);
  };
  line([&](std::size_t k) { return head[k]; }, is_number);
  for (const auto& row : table) {
    line([&](std::size_t k) { return row[k].text.value_or("-"); }, is_number);
  }
}

namespace {

int exit_for_store_error(const Error& e) {
  if (e.code() == Errc::kInvalidArgument) return kExitUsage;
  if (e.code() == std::errc::no_such_file_or_directory || e.code() == std::errc::is_a_directory) {
    return kExitNoInput;
  }
  const auto reason = store_error_reason(e);
  if (reason == "schema") return kExitDataErr;
  if (reason == "unavailable") return kExitUnavailable;
  if (reason == "unwritable") return kExitNoInput;
  return kExitSoftware;
}

}  // namespace

int run_report(const ReportCommandOptions& o, std::FILE* out) {
  auto usage = [](const Error& e) {
    fmt::print(stderr, "flowmark report: {}\n", e.message());
    return kExitUsage;
  };
  ReportQuery q;
  auto by = parse_group_by_list(o.by);
  if (!by) return usage(by.error());
  q.by = std::move(*by);
  if (o.format != "text" && o.format != "json" && o.format != "csv") {
    return usage(Error(make_error_code(Errc::kInvalidArgument),
                       fmt::format("--format: '{}' is not one of text, json, csv", o.format)));
  }
  if (o.from) {
    auto t = parse_report_time(*o.from);
    if (!t) return usage(std::move(t.error()).with_context("--from"));
    q.from = *t;
  }
  if (o.to) {
    auto t = parse_report_time(*o.to);
    if (!t) return usage(std::move(t.error()).with_context("--to"));
    q.to = *t;
  }
  if (q.from && q.to && *q.to <= *q.from) {
    return usage(Error(
        make_error_code(Errc::kInvalidArgument),
        fmt::format("--to ({}) is not after --from ({})", o.to.value_or(""), o.from.value_or(""))));
  }
  auto store = Store::open(o.store, {.create = false, .read_only = true});
  if (!store) {
    fmt::print(stderr, "flowmark report: {}\n", store.error().message());
    return exit_for_store_error(store.error());
  }
  auto rows = (*store)->report(q);
  if (!rows) {
    fmt::print(stderr, "flowmark report: {}\n", rows.error().message());
    return exit_for_store_error(rows.error());
  }
  std::string text;
  format_report(*rows, q.by, o.format, text);
  if (std::fwrite(text.data(), 1, text.size(), out) != text.size() || std::fflush(out) != 0) {
    fmt::print(stderr, "flowmark report: writing the report: {}\n", std::strerror(errno));
    return kExitIoErr;
  }
  return kExitOk;
}

std::string report_exit_help() {
  return exit_code_help({{kExitOk},
                         {kExitUsage, "a bad --by, --from, --to, --format or store URL"},
                         {kExitDataErr, "not a flowmark store, or one of a newer schema"},
                         {kExitNoInput, "the store file does not exist or cannot be read"},
                         {kExitUnavailable, "cannot connect to the PostgreSQL server"},
                         {kExitSoftware, "a database error while reading"},
                         {kExitIoErr, "writing the report failed"}});
}

}  // namespace flowmark::collector
