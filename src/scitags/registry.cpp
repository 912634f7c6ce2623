// The registry of experiments and activities: parsing and validation of the document
// (simdjson DOM with error codes; no exceptions), lookups, name-or-id resolution, the
// combined scitag, and Registry::load from a file, a URL or the embedded copy.
#include "flowmark/scitags/registry.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <string>
#include <unordered_map>

#include <fmt/format.h>
#include <simdjson.h>

#include "flowmark/core/fd.hpp"
#include "scitags/registry_fetch.hpp"

namespace flowmark::scitags {
namespace {

using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

// How much of an offending value an error message shows.
constexpr std::size_t kMaxShown = 60;

// A bad value as compact JSON for an error message ("x" quoted, long values cut short).
std::string shown(element value) {
  std::string text = simdjson::minify(value);
  if (text.size() > kMaxShown) {
    std::size_t cut = kMaxShown;
    // Cut at a character boundary: the document is valid UTF-8 (simdjson checked it).
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text.resize(cut);
    text += "...";
  }
  return text;
}

// The document-checking context: the source name every error starts with.
class Checker {
 public:
  explicit Checker(std::string_view source) : source_(source) {}

  std::unexpected<Error> bad(std::string_view path, std::string_view what) const {
    return fail(Errc::kMalformed, fmt::format("{}: {}: {}", source_, path, what));
  }

  Result<object> get_object(element value, std::string_view path) const {
    object obj;
    if (value.get(obj) != simdjson::SUCCESS)
      return bad(path, fmt::format("expected an object, got {}", shown(value)));
    return obj;
  }

  Result<array> get_array(element value, std::string_view path) const {
    array arr;
    if (value.get(arr) != simdjson::SUCCESS)
      return bad(path, fmt::format("expected an array, got {}", shown(value)));
    return arr;
  }

  // The value of a required key; `path` is the path of the object holding it.
  Result<element> required(object obj, std::string_view key, std::string_view path) const {
    element value;
    if (obj.at_key(key).get(value) != simdjson::SUCCESS)
      return bad(path, fmt::format("missing \"{}\"", key));
    return value;
  }

  // A name: a non-empty string with no control characters (names end up in tables, logs
  // and error messages).
  Result<std::string_view> get_name(element value, std::string_view path) const {
    std::string_view text;
    if (value.get(text) != simdjson::SUCCESS)
      return bad(path, fmt::format("expected a string, got {}", shown(value)));
    if (text.empty()) return bad(path, "expected a non-empty name, got \"\"");
    const bool control = std::any_of(text.begin(), text.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (control) return bad(path, fmt::format("{} contains a control character", shown(value)));
    return text;
  }

  // An experiment or activity id: an integer within what a scitag can carry.
  Result<std::uint32_t> get_id(element value, std::string_view path, std::string_view kind,
                               std::uint32_t max) const {
    std::int64_t id = 0;
    if (value.type() == element_type::UINT64)  // above INT64_MAX
      return bad(path, fmt::format("{} id {} is out of range: a scitag carries {} ids 1..{}", kind,
                                   shown(value), kind, max));
    if (value.type() != element_type::INT64 || value.get(id) != simdjson::SUCCESS || id < 0)
      return bad(path, fmt::format("expected a non-negative integer, got {}", shown(value)));
    if (id < 1 || id > static_cast<std::int64_t>(max))
      return bad(path, fmt::format("{} id {} is out of range: a scitag carries {} ids 1..{}", kind,
                                   id, kind, max));
    return static_cast<std::uint32_t>(id);
  }

 private:
  std::string_view source_;
};

Result<Activity> parse_activity(const Checker& check, element value, const std::string& path) {
  FM_TRY(object obj, check.get_object(value, path));
  FM_TRY(element name_value, check.required(obj, "activityName", path));
  FM_TRY(element id_value, check.required(obj, "activityId", path));
  FM_TRY(std::string_view name, check.get_name(name_value, path + ".activityName"));
  FM_TRY(std::uint32_t id,
         check.get_id(id_value, path + ".activityId", "activity", kMaxScitagActivity));
  return Activity{std::string(name), id};
}

Result<Experiment> parse_experiment(const Checker& check, element value, const std::string& path) {
  FM_TRY(object obj, check.get_object(value, path));
  FM_TRY(element name_value, check.required(obj, "expName", path));
  FM_TRY(element id_value, check.required(obj, "expId", path));
  FM_TRY(element activities_value, check.required(obj, "activities", path));
  FM_TRY(std::string_view name, check.get_name(name_value, path + ".expName"));
  FM_TRY(std::uint32_t id,
         check.get_id(id_value, path + ".expId", "experiment", kMaxScitagExperiment));
  Experiment exp{std::string(name), id, {}};
  FM_TRY(array activities, check.get_array(activities_value, path + ".activities"));
  std::unordered_map<std::uint32_t, std::size_t> ids;
  std::unordered_map<std::string, std::size_t> names;
  std::size_t index = 0;
  for (element act_value : activities) {
    const std::string act_path = fmt::format("{}.activities[{}]", path, index);
    FM_TRY(Activity act, parse_activity(check, act_value, act_path));
    if (auto [it, fresh] = ids.emplace(act.id, index); !fresh)
      return check.bad(act_path + ".activityId",
                       fmt::format("duplicate activity id {} in experiment {} (also {}."
                                   "activities[{}])",
                                   act.id, exp.name, path, it->second));
    if (auto [it, fresh] = names.emplace(act.name, index); !fresh)
      return check.bad(act_path + ".activityName",
                       fmt::format("duplicate activity name \"{}\" in experiment {} (also {}."
                                   "activities[{}])",
                                   act.name, exp.name, path, it->second));
    exp.activities.push_back(std::move(act));
    ++index;
  }
  return exp;
}

bool parse_decimal(std::string_view text, std::uint32_t& out) noexcept {
  if (text.empty() || text.size() > 10) return false;
  if (!std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

// "a, b, c": sorted case-insensitively (ties by byte order), for "known: ..." messages.
std::string known_names(std::vector<std::string_view> names) {
  auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
  std::sort(names.begin(), names.end(), [&](std::string_view a, std::string_view b) {
    const bool less =
        std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(),
                                     [&](char x, char y) { return lower(x) < lower(y); });
    const bool more =
        std::lexicographical_compare(b.begin(), b.end(), a.begin(), a.end(),
                                     [&](char x, char y) { return lower(x) < lower(y); });
    return less || (!more && a < b);
  });
  if (names.empty()) return "(none)";
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

std::string known_experiments(const std::vector<Experiment>& experiments) {
  std::vector<std::string_view> names;
  names.reserve(experiments.size());
  for (const Experiment& exp : experiments) names.emplace_back(exp.name);
  return known_names(std::move(names));
}

std::string known_activities(const Experiment& experiment) {
  std::vector<std::string_view> names;
  names.reserve(experiment.activities.size());
  for (const Activity& act : experiment.activities) names.emplace_back(act.name);
  return known_names(std::move(names));
}

bool starts_with_nocase(std::string_view text, std::string_view prefix) noexcept {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

Result<std::string> read_registry_file(std::string_view path_view) {
  const std::string path(path_view);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno(fmt::format("cannot read registry file {}", path));
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0)
    return fail_errno(fmt::format("cannot read registry file {}", path));
  if (S_ISDIR(st.st_mode))
    return fail_errno(fmt::format("cannot read registry file {}", path), EISDIR);
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(fmt::format("cannot read registry file {}", path));
    }
    if (n == 0) break;
    if (static_cast<std::size_t>(n) > detail::kMaxRegistryBytes - text.size())
      return fail(Errc::kTruncated,
                  fmt::format("cannot read registry file {}: larger than {} MiB, which no "
                              "registry is",
                              path, detail::kMaxRegistryBytes >> 20));
    text.append(buf, static_cast<std::size_t>(n));
  }
  return text;
}

}  // namespace

Result<Registry> Registry::parse(std::string_view json, std::string_view source_name) {
  const Checker check(source_name);
  simdjson::dom::parser parser;
  element doc;
  if (auto err = parser.parse(json.data(), json.size()).get(doc); err != simdjson::SUCCESS)
    return fail(Errc::kMalformed, fmt::format("{}: not a JSON document: {}", source_name,
                                              simdjson::error_message(err)));
  FM_TRY(object top, check.get_object(doc, "top level"));

  Registry reg;
  reg.source_ = std::string(source_name);
  element value;
  if (top.at_key("version").get(value) == simdjson::SUCCESS) {
    std::int64_t version = 0;
    if (value.type() != element_type::INT64 || value.get(version) != simdjson::SUCCESS ||
        version < 1)
      return check.bad("version", fmt::format("expected a positive integer, got {}", shown(value)));
  }
  if (top.at_key("modified").get(value) == simdjson::SUCCESS) {
    FM_TRY(std::string_view modified, check.get_name(value, "modified"));
    reg.modified_ = std::string(modified);
  }
  FM_TRY(element experiments_value, check.required(top, "experiments", "top level"));
  FM_TRY(array experiments, check.get_array(experiments_value, "experiments"));

  std::unordered_map<std::uint32_t, std::size_t> ids;
  std::unordered_map<std::string, std::size_t> names;
  std::size_t index = 0;
  for (element exp_value : experiments) {
    const std::string path = fmt::format("experiments[{}]", index);
    FM_TRY(Experiment exp, parse_experiment(check, exp_value, path));
    if (auto [it, fresh] = ids.emplace(exp.id, index); !fresh)
      return check.bad(
          path + ".expId",
          fmt::format("duplicate experiment id {} (also experiments[{}])", exp.id, it->second));
    if (auto [it, fresh] = names.emplace(exp.name, index); !fresh)
      return check.bad(path + ".expName",
                       fmt::format("duplicate experiment name \"{}\" (also experiments[{}])",
                                   exp.name, it->second));
    reg.experiments_.push_back(std::move(exp));
    ++index;
  }
  if (reg.experiments_.empty())
    return check.bad("experiments", "empty: a registry lists at least one experiment");
  return reg;
}

Result<Registry> Registry::load(std::string_view source, const LoadOptions& options) {
  if (source.empty())
    return fail(Errc::kInvalidArgument,
                "the registry source is empty: give a file, an http(s):// URL or builtin");
  if (source == "builtin") return builtin();
  if (starts_with_nocase(source, "http://") || starts_with_nocase(source, "https://")) {
    FM_TRY(std::string body, detail::http_get(source, options));
    return parse(body, source);
  }
  if (auto scheme = source.find("://"); scheme != std::string_view::npos)
    return fail(Errc::kUnsupported,
                fmt::format("registry source {}: {}:// is not supported; give a file path, an "
                            "http:// or https:// URL, or builtin",
                            source, source.substr(0, scheme)));
  FM_TRY(std::string text, read_registry_file(source));
  return parse(text, source);
}

const Experiment* Registry::find_experiment(std::uint32_t id) const noexcept {
  for (const Experiment& exp : experiments_)
    if (exp.id == id) return &exp;
  return nullptr;
}

const Experiment* Registry::find_experiment(std::string_view name) const noexcept {
  for (const Experiment& exp : experiments_)
    if (exp.name == name) return &exp;
  return nullptr;
}

std::optional<std::uint32_t> Registry::experiment_id(std::string_view name) const noexcept {
  if (const Experiment* exp = find_experiment(name)) return exp->id;
  return std::nullopt;
}

std::optional<std::uint32_t> Registry::activity_id(std::uint32_t experiment,
                                                   std::string_view name) const noexcept {
  if (const Experiment* exp = find_experiment(experiment))
    for (const Activity& act : exp->activities)
      if (act.name == name) return act.id;
  return std::nullopt;
}

std::optional<std::string_view> Registry::experiment_name(std::uint32_t id) const noexcept {
  if (const Experiment* exp = find_experiment(id)) return exp->name;
  return std::nullopt;
}

std::optional<std::string_view> Registry::activity_name(std::uint32_t experiment,
                                                        std::uint32_t activity) const noexcept {
  if (const Experiment* exp = find_experiment(experiment))
    for (const Activity& act : exp->activities)
      if (act.id == activity) return act.name;
  return std::nullopt;
}

// A name wins over a number: should a registry ever name an experiment "5", "5" means it.
Result<std::uint32_t> Registry::resolve_experiment(std::string_view name_or_id) const {
  if (auto id = experiment_id(name_or_id)) return *id;
  std::uint32_t id = 0;
  if (parse_decimal(name_or_id, id) && find_experiment(id)) return id;
  return fail(Errc::kNotFound, fmt::format("unknown experiment '{}'; known: {}", name_or_id,
                                           known_experiments(experiments_)));
}

Result<std::uint32_t> Registry::resolve_activity(std::uint32_t experiment,
                                                 std::string_view name_or_id) const {
  const Experiment* exp = find_experiment(experiment);
  if (!exp)
    return fail(Errc::kNotFound, fmt::format("unknown experiment id {}; known: {}", experiment,
                                             known_experiments(experiments_)));
  if (auto id = activity_id(experiment, name_or_id)) return *id;
  std::uint32_t id = 0;
  if (parse_decimal(name_or_id, id) && activity_name(experiment, id)) return id;
  return fail(Errc::kNotFound, fmt::format("unknown activity '{}' in experiment {} ({}); known: {}",
                                           name_or_id, exp->name, exp->id, known_activities(*exp)));
}

Result<std::uint32_t> make_scitag(std::uint32_t experiment, std::uint32_t activity) {
  if (experiment < 1 || experiment > kMaxScitagExperiment)
    return fail(Errc::kInvalidArgument,
                fmt::format("experiment id {} is out of range: a scitag carries experiment ids "
                            "1..{}",
                            experiment, kMaxScitagExperiment));
  if (activity < 1 || activity > kMaxScitagActivity)
    return fail(Errc::kInvalidArgument,
                fmt::format("activity id {} is out of range: a scitag carries activity ids 1..{}",
                            activity, kMaxScitagActivity));
  return (experiment << 6) | activity;
}

Result<std::pair<std::uint32_t, std::uint32_t>> split_scitag(std::uint32_t scitag) {
  if (scitag < kMinScitag || scitag > kMaxScitag)
    return fail(
        Errc::kInvalidArgument,
        fmt::format("scitag {} is out of range: scitags are experiment << 6 | activity, "
                    "{}..{} (experiment 1..{}, activity 1..{})",
                    scitag, kMinScitag, kMaxScitag, kMaxScitagExperiment, kMaxScitagActivity));
  const std::uint32_t activity = scitag & kMaxScitagActivity;
  if (activity == 0)
    return fail(Errc::kInvalidArgument,
                fmt::format("scitag {} is not valid: its activity part (scitag & 63) is 0, and "
                            "activity ids are 1..{}",
                            scitag, kMaxScitagActivity));
  return std::pair{scitag >> 6, activity};
}

}  // namespace flowmark::scitags
