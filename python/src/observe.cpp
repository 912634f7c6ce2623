// flowmark._flowmark.observe — `flowmark.observe()`'s engine: a capture and an observer set up
// as `flowmark observe` sets them up (capture::prepare_observe), run in slices with the GIL
// released, their records kept in typed C++ columns; Python takes them one dict at a time
// (iteration) or as whole columns (numpy arrays, made without a Python object per field).
// The pure-Python side (flowmark/_observe.py) wraps the columns in masked arrays / pandas.
#include <Python.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "bindings.hpp"
#include "flowmark/capture/observe_command.hpp"
#include "flowmark/core/exit_code.hpp"
#include "flowmark/observe/record_format.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::python {
namespace {

using observe::FlowRecord;
using observe::Nanos;
using Clock = std::chrono::steady_clock;

// How long a slice of work runs with the GIL released before Python's signals are checked.
constexpr auto kSlice = std::chrono::milliseconds(50);
// Records a slice gathers for iteration before it hands them over (fewer at the end, or
// when the slice's time is up).
constexpr std::size_t kIterRows = 4096;

__extension__ typedef unsigned __int128 U128;

// The packet-clock time as the JSON writes it (seconds with nine decimals) read back as a
// float: the double nearest to t / 1e9 (ties to even), exactly as Python's float() of the
// JSON text. The 80-bit quotient is within one step of it; the step is settled by comparing
// t with the midpoints to the neighbours in 128-bit integers.
double seconds(Nanos t) noexcept {
  if (t == 0) return 0.0;
  const bool negative = t < 0;
  const std::uint64_t a =
      negative ? ~static_cast<std::uint64_t>(t) + 1 : static_cast<std::uint64_t>(t);
  double d = static_cast<double>(static_cast<long double>(a) / 1e9L);
  int e2 = 0;
  (void)std::frexp(d, &e2);
  const int p = e2 - 1;  // d in [2^p, 2^(p+1)); its step is 2^(p-52)
  const auto m = static_cast<std::uint64_t>(std::ldexp(d, 52 - p));
  // In quarter steps: d = 4m, the midpoints 4m + 2 and 4m - 2 (4m - 1 below a power of two);
  // t / 1e9 = a * 2^(54 - p) / 1e9 quarter steps (p <= 33: the shift is at least 21 and the
  // product stays below 2^90).
  const U128 x = static_cast<U128>(a) << (54 - p);
  const U128 g = 1'000'000'000;
  const U128 hi = g * (4 * m + 2);
  const U128 lo = g * (4 * m - (m == (std::uint64_t{1} << 52) ? 1 : 2));
  if (x > hi || (x == hi && (m & 1) != 0)) {
    d = std::nextafter(d, std::numeric_limits<double>::infinity());
  } else if (x < lo || (x == lo && (m & 1) != 0)) {
    d = std::nextafter(d, 0.0);
  }
  return negative ? -d : d;
}

// A chain field's values: what FieldVisitor handed over for each record.
enum class Kind : std::uint8_t { kNull = 0, kBool, kNumber, kText };

struct ChainColumn {
  std::string name;
  Kind kind = Kind::kNull;       // the kind of its non-null values (probed, then seen)
  bool mixed = false;            // values of more than one kind (no built-in chain does this)
  std::vector<Kind> kinds;       // per record (kNull: null)
  std::vector<std::uint64_t> values;  // bool 0/1, the number, or an index into texts
};

// The records an observer emitted, in columns: the record itself as it is, the chains'
// fields as values (one FieldVisitor call each).
class RecordColumns final : public observe::FieldVisitor {
 public:
  // The chains' columns and their kinds, found by having each chain write states of a few
  // byte patterns (the built-in chains give each column one kind; a column that is null in
  // every probe gets its kind from the first value seen).
  void set_up(const observe::Observer& obs) {
    for (const auto& chain : obs.chains()) {
      const std::size_t first = columns_.size();
      for (auto& name : chain->columns()) {
        index_.emplace(name, columns_.size());
        columns_.push_back(ChainColumn{std::move(name), Kind::kNull, false, {}, {}});
      }
      alignas(8) std::byte state[512];
      const std::size_t size = std::min(chain->state_size(), sizeof state);
      for (const std::byte pattern : {std::byte{0xff}, std::byte{0x00}, std::byte{0x55},
                                      std::byte{0xaa}, std::byte{0x01}}) {
        std::memset(state, static_cast<int>(pattern), size);
        probe_at_ = first;
        probing_ = true;
        observe::FieldWriter w(*this);
        chain->write(FlowRecord{}, state, w);
        probing_ = false;
      }
    }
  }

  void add(const FlowRecord& r, const observe::Observer& obs) {
    records_.push_back(r);
    at_ = 0;
    observe::visit_chain_fields(r, obs, *this);
    // A chain that wrote fewer fields than its columns (none does): nulls for the rest.
    for (std::size_t i = 0; i < columns_.size(); ++i) {
      if (columns_[i].kinds.size() < records_.size()) put(i, Kind::kNull, 0);
    }
  }

  std::size_t size() const noexcept { return records_.size(); }
  const std::vector<FlowRecord>& records() const noexcept { return records_; }
  const std::vector<ChainColumn>& columns() const noexcept { return columns_; }
  const std::string& text(std::uint64_t i) const noexcept { return texts_[i]; }

  void clear() noexcept {
    records_.clear();
    texts_.clear();
    for (auto& c : columns_) {
      c.kinds.clear();
      c.values.clear();
    }
  }

  // FieldVisitor: the k-th field of a record is the k-th column when the chains write their
  // columns in order (they do); else it is found by name.
  void null(std::string_view name) override { field(name, Kind::kNull, 0); }
  void boolean(std::string_view name, bool v) override { field(name, Kind::kBool, v ? 1 : 0); }
  void number(std::string_view name, std::uint64_t v) override { field(name, Kind::kNumber, v); }
  void text(std::string_view name, std::string_view v) override {
    if (probing_) return field(name, Kind::kText, 0);
    texts_.emplace_back(v);
    field(name, Kind::kText, texts_.size() - 1);
  }

 private:
  void field(std::string_view name, Kind kind, std::uint64_t value) {
    std::size_t& at = probing_ ? probe_at_ : at_;
    std::size_t i = at;
    if (i >= columns_.size() || columns_[i].name != name) {
      auto it = index_.find(std::string(name));
      if (it == index_.end()) return;  // a field its chain did not list among its columns
      i = it->second;
    }
    at = i + 1;
    if (probing_) {
      if (kind != Kind::kNull && columns_[i].kind == Kind::kNull) columns_[i].kind = kind;
      return;
    }
    put(i, kind, value);
  }
  void put(std::size_t i, Kind kind, std::uint64_t value) {
    ChainColumn& c = columns_[i];
    if (c.kinds.size() >= records_.size()) return;  // a second value for one record
    if (kind != Kind::kNull) {
      if (c.kind == Kind::kNull) c.kind = kind;
      else if (c.kind != kind) c.mixed = true;
    }
    c.kinds.push_back(kind);
    c.values.push_back(value);
  }

  std::vector<FlowRecord> records_;
  std::vector<ChainColumn> columns_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<std::string> texts_;
  std::size_t at_ = 0, probe_at_ = 0;
  bool probing_ = false;
};

// The record's own fields, in the JSON's order.
constexpr const char* kRecordFields[] = {
    "sip",  "dip",           "proto",         "sp",        "dp",          "first",
    "last", "pkt_fwd",       "pkt_rev",       "oct_fwd",   "oct_rev",     "ip_version",
    "vlan", "tcp_flags_fwd", "tcp_flags_rev", "fragments", "icmp_errors", "continuation"};

[[noreturn]] void raise(PyObject* type, const py::object& value) {
  PyErr_SetObject(type, value.ptr());
  throw py::error_already_set();
}

py::str ascii(const char* s, std::size_t n) {
  PyObject* o = PyUnicode_New(static_cast<Py_ssize_t>(n), 127);
  if (o == nullptr) throw py::error_already_set();
  std::memcpy(PyUnicode_1BYTE_DATA(o), s, n);
  return py::reinterpret_steal<py::str>(o);
}

py::str address_str(const IpAddress& a) {
  char buf[observe::kAddressTextMax];
  return ascii(buf, static_cast<std::size_t>(observe::format_address(buf, a) - buf));
}

// A set-up error as the Python exception that fits: ValueError for what the caller gave
// (chains, timeouts, filter, registry name) and for a file that is not a capture;
// FileNotFoundError / PermissionError for a capture file that is missing or unreadable;
// OSError (with its errno where there is one) for the rest (interfaces, registry files).
[[noreturn]] void raise_setup_error(const capture::ObserveSetupError& e, const std::string& file) {
  const std::error_code& code = e.error.code();
  const py::str message(e.error.message());
  if (e.exit_code == kExitUsage) raise(PyExc_ValueError, message);
  const bool system =
      code.category() == std::system_category() || code.category() == std::generic_category();
  if (!file.empty() && file != "-" && code.category() == flowmark_category()) {
    // The reader says "cannot read the capture" whether the file is missing or not a
    // capture: which one is told by the file system.
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0)
      raise(PyExc_OSError, py::make_tuple(errno, message, file));
    if (::access(file.c_str(), R_OK) != 0)
      raise(PyExc_OSError, py::make_tuple(errno, message, file));
    if (code == make_error_code(Errc::kMalformed)) raise(PyExc_ValueError, message);
  }
  if (system) raise(PyExc_OSError, py::make_tuple(code.value(), message));
  if (code == make_error_code(Errc::kNotFound))
    raise(PyExc_OSError, py::make_tuple(file.empty() ? ENODEV : ENOENT, message));
  raise(PyExc_OSError, message);
}

// One flowmark.observe() run: the capture, the observer, the records not yet handed out.
class Run {
 public:
  explicit Run(capture::ObserveSetup setup)
      : capture_(std::move(setup.capture)),
        observer_(setup.config, [this](const FlowRecord& r) { columns_.add(r, observer_); }) {
    setup.add_to(observer_);
    columns_.set_up(observer_);
    capture_->set_return_when_idle(true);
  }

  // The next record as a dict, or nullopt at the end.
  std::optional<py::dict> next() {
    Busy busy(*this);
    while (next_row_ >= columns_.size()) {
      columns_.clear();
      next_row_ = 0;
      if (finished_) {
        raise_read_error();
        return std::nullopt;
      }
      run_slice(kIterRows);
      check_signals();
    }
    return row(next_row_++);
  }

  // Every remaining record, as columns: {name: array} for the record's fields (sp and dp as
  // (values, mask)) and {name: (values, mask)} for the chains' (mask: True where null).
  py::dict columns() {
    Busy busy(*this);
    while (!finished_) {
      run_slice(std::numeric_limits<std::size_t>::max());
      check_signals();
    }
    raise_read_error();
    py::dict out = to_columns();
    columns_.clear();
    next_row_ = 0;
    return out;
  }

  // Ends the input as Ctrl-C ends `flowmark observe`: the flows held are emitted and what is
  // left to iterate (or to_arrays()) are the records so far.
  void stop() noexcept { capture_->break_loop(); }

  std::vector<std::string> column_names() const {
    std::vector<std::string> names(std::begin(kRecordFields), std::end(kRecordFields));
    for (const auto& c : columns_.columns()) names.push_back(c.name);
    return names;
  }

  py::dict stats() const {
    const auto& st = observer_.stats();
    py::dict d;
    d["packets"] = st.packets;
    d["drops"] = capture_->drops() ? py::object(py::int_(*capture_->drops())) : py::none();
    d["short_packets"] = st.short_packets;
    d["non_ip"] = st.non_ip;
    d["fragments"] = st.fragments;
    d["fragments_unmatched"] = st.fragments_unmatched;
    d["flows"] = st.flows;
    d["ignored"] = st.ignored;
    d["ignored_packets"] = st.ignored_packets;
    d["late_packets"] = st.late_packets;
    d["evicted"] = st.evicted;
    d["emitted"] = st.emitted;
    d["icmp_errors_matched"] = st.icmp_errors_matched;
    d["active_flows"] = observer_.active_flows();
    d["bytes_per_flow"] = observer_.bytes_per_flow();
    py::dict errors;
    for (std::size_t i = 1; i < st.decode_errors.size(); ++i)
      errors[py::str(std::string(observe::to_string(static_cast<observe::DecodeError>(i))))] =
          st.decode_errors[i];
    d["decode_errors"] = errors;
    d["finished"] = finished_;
    return d;
  }

 private:
  // One thread at a time (the GIL is let go while the capture is read).
  struct Busy {
    explicit Busy(Run& r) : run(r) {
      if (run.busy_)
        raise(PyExc_RuntimeError,
              py::str("flowmark.observe: this run is in use by another thread"));
      run.busy_ = true;
    }
    ~Busy() { run.busy_ = false; }
    Run& run;
  };

  // Reads and observes, with the GIL released, until `rows` records are waiting, kSlice has
  // passed, a live capture is idle, or the input ends (then the observer is finished).
  void run_slice(std::size_t rows) {
    py::gil_scoped_release nogil;
    const auto deadline = Clock::now() + kSlice;
    observe::LinkType link = observe::LinkType::kEthernet;
    for (unsigned n = 0;; ++n) {
      auto got = capture_->next_batch(batch_, link);
      if (!got) {
        error_ = got.error().message();  // the records so far still come out
        end();
        return;
      }
      if (*got == 0) {
        if (capture_->idle()) return;
        end();
        return;
      }
      observer_.on_packets(link, std::span(batch_).first(*got));
      if (columns_.size() >= rows) return;
      if ((n & 7) == 7 && Clock::now() >= deadline) return;
    }
  }
  void end() noexcept {
    observer_.finish();
    finished_ = true;
  }
  static void check_signals() {
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
  void raise_read_error() {
    if (!error_) return;
    std::string message = std::move(*error_);
    error_.reset();
    raise(PyExc_ValueError, py::str(message));
  }

  py::dict row(std::size_t i) {
    if (keys_.empty()) {
      for (const auto& n : column_names()) {
        PyObject* k = PyUnicode_FromStringAndSize(n.data(), static_cast<Py_ssize_t>(n.size()));
        if (k == nullptr) throw py::error_already_set();
        PyUnicode_InternInPlace(&k);
        keys_.push_back(py::reinterpret_steal<py::str>(k));
      }
    }
    const FlowRecord& r = columns_.records()[i];
    py::dict d;
    std::size_t k = 0;
    auto set = [&](py::object v) { d[keys_[k++]] = std::move(v); };
    set(address_str(r.sip));
    set(address_str(r.dip));
    set(py::int_(r.proto));
    set(r.has_ports ? py::object(py::int_(r.sp)) : py::none());
    set(r.has_ports ? py::object(py::int_(r.dp)) : py::none());
    set(py::float_(seconds(r.first)));
    set(py::float_(seconds(r.last)));
    set(py::int_(r.pkt_fwd));
    set(py::int_(r.pkt_rev));
    set(py::int_(r.oct_fwd));
    set(py::int_(r.oct_rev));
    set(py::int_(r.ip_version));
    set(py::int_(r.vlan));
    set(py::int_(r.tcp_flags_fwd));
    set(py::int_(r.tcp_flags_rev));
    set(py::int_(r.fragments));
    set(py::int_(r.icmp_errors));
    set(py::bool_(r.continuation));
    for (const auto& c : columns_.columns()) set(value(c, i));
    return d;
  }
  py::object value(const ChainColumn& c, std::size_t i) const {
    const std::uint64_t v = c.values[i];
    switch (c.kinds[i]) {
      case Kind::kNull: return py::none();
      case Kind::kBool: return py::bool_(v != 0);
      case Kind::kNumber: return py::int_(v);
      case Kind::kText: return py::str(columns_.text(v));
    }
    return py::none();
  }

  // An object array of n Nones.
  static py::array objects(std::size_t n) {
    py::array a(py::dtype("O"), std::vector<py::ssize_t>{static_cast<py::ssize_t>(n)});
    auto** objs = static_cast<PyObject**>(a.mutable_data());
    for (std::size_t i = 0; i < n; ++i) {
      Py_XDECREF(objs[i]);
      Py_INCREF(Py_None);
      objs[i] = Py_None;
    }
    return a;
  }

  template <class T>
  static py::array_t<T> array(std::size_t n) {
    return py::array_t<T>(static_cast<py::ssize_t>(n));
  }

  py::dict to_columns() {
    const std::size_t begin = next_row_, n = columns_.size() - begin;
    const FlowRecord* recs = columns_.records().data() + begin;
    py::dict out;
    auto proto = array<std::uint8_t>(n), ipv = array<std::uint8_t>(n),
         ff = array<std::uint8_t>(n), fr = array<std::uint8_t>(n);
    auto sp = array<std::uint16_t>(n), dp = array<std::uint16_t>(n), vlan = array<std::uint16_t>(n);
    auto nports = array<bool>(n), cont = array<bool>(n);
    auto first = array<double>(n), last = array<double>(n);
    auto pf = array<std::uint64_t>(n), pr = array<std::uint64_t>(n), of = array<std::uint64_t>(n),
         orv = array<std::uint64_t>(n);
    auto frag = array<std::uint32_t>(n), icmp = array<std::uint32_t>(n);
    // Addresses: their text written first (without the GIL), then made into str objects.
    std::vector<char> text(n * 2 * observe::kAddressTextMax);
    std::vector<std::uint8_t> lengths(n * 2);
    {
      auto* p_proto = proto.mutable_data();
      auto* p_ipv = ipv.mutable_data();
      auto* p_ff = ff.mutable_data();
      auto* p_fr = fr.mutable_data();
      auto* p_sp = sp.mutable_data();
      auto* p_dp = dp.mutable_data();
      auto* p_vlan = vlan.mutable_data();
      auto* p_np = nports.mutable_data();
      auto* p_cont = cont.mutable_data();
      auto* p_first = first.mutable_data();
      auto* p_last = last.mutable_data();
      auto* p_pf = pf.mutable_data();
      auto* p_pr = pr.mutable_data();
      auto* p_of = of.mutable_data();
      auto* p_or = orv.mutable_data();
      auto* p_frag = frag.mutable_data();
      auto* p_icmp = icmp.mutable_data();
      py::gil_scoped_release nogil;
      for (std::size_t i = 0; i < n; ++i) {
        const FlowRecord& r = recs[i];
        p_proto[i] = r.proto;
        p_ipv[i] = r.ip_version;
        p_ff[i] = r.tcp_flags_fwd;
        p_fr[i] = r.tcp_flags_rev;
        p_sp[i] = r.has_ports ? r.sp : 0;
        p_dp[i] = r.has_ports ? r.dp : 0;
        p_np[i] = !r.has_ports;
        p_vlan[i] = r.vlan;
        p_cont[i] = r.continuation;
        p_first[i] = seconds(r.first);
        p_last[i] = seconds(r.last);
        p_pf[i] = r.pkt_fwd;
        p_pr[i] = r.pkt_rev;
        p_of[i] = r.oct_fwd;
        p_or[i] = r.oct_rev;
        p_frag[i] = r.fragments;
        p_icmp[i] = r.icmp_errors;
        char* t = text.data() + 2 * i * observe::kAddressTextMax;
        lengths[2 * i] =
            static_cast<std::uint8_t>(observe::format_address(t, r.sip) - t);
        t += observe::kAddressTextMax;
        lengths[2 * i + 1] =
            static_cast<std::uint8_t>(observe::format_address(t, r.dip) - t);
      }
    }
    for (int side = 0; side < 2; ++side) {
      py::array a = objects(n);
      auto** objs = static_cast<PyObject**>(a.mutable_data());
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t j = 2 * i + static_cast<std::size_t>(side);
        PyObject* s = ascii(text.data() + j * observe::kAddressTextMax, lengths[j]).release().ptr();
        Py_DECREF(objs[i]);
        objs[i] = s;
      }
      out[side == 0 ? "sip" : "dip"] = a;
    }
    out["proto"] = proto;
    out["sp"] = py::make_tuple(sp, nports);
    out["dp"] = py::make_tuple(dp, nports);
    out["first"] = first;
    out["last"] = last;
    out["pkt_fwd"] = pf;
    out["pkt_rev"] = pr;
    out["oct_fwd"] = of;
    out["oct_rev"] = orv;
    out["ip_version"] = ipv;
    out["vlan"] = vlan;
    out["tcp_flags_fwd"] = ff;
    out["tcp_flags_rev"] = fr;
    out["fragments"] = frag;
    out["icmp_errors"] = icmp;
    out["continuation"] = cont;
    for (const auto& c : columns_.columns()) out[py::str(c.name)] = chain_column(c, begin, n);
    return out;
  }

  // (values, mask): bool or uint64 values (0 where null), or an object array (None where
  // null) for text and for a column of mixed kinds.
  py::tuple chain_column(const ChainColumn& c, std::size_t begin, std::size_t n) const {
    auto mask = array<bool>(n);
    bool* m = mask.mutable_data();
    const Kind* kinds = c.kinds.data() + begin;
    const std::uint64_t* values = c.values.data() + begin;
    if (!c.mixed && (c.kind == Kind::kBool || c.kind == Kind::kNumber)) {
      if (c.kind == Kind::kBool) {
        auto a = array<bool>(n);
        bool* p = a.mutable_data();
        {
          py::gil_scoped_release nogil;
          for (std::size_t i = 0; i < n; ++i) {
            m[i] = kinds[i] == Kind::kNull;
            p[i] = values[i] != 0 && !m[i];
          }
        }
        return py::make_tuple(a, mask);
      }
      auto a = array<std::uint64_t>(n);
      std::uint64_t* p = a.mutable_data();
      {
        py::gil_scoped_release nogil;
        for (std::size_t i = 0; i < n; ++i) {
          m[i] = kinds[i] == Kind::kNull;
          p[i] = m[i] ? 0 : values[i];
        }
      }
      return py::make_tuple(a, mask);
    }
    py::array a = objects(n);
    auto** objs = static_cast<PyObject**>(a.mutable_data());
    for (std::size_t i = 0; i < n; ++i) {
      m[i] = kinds[i] == Kind::kNull;
      if (m[i]) continue;  // numpy filled it with None
      PyObject* v = value(c, begin + i).release().ptr();
      Py_DECREF(objs[i]);
      objs[i] = v;
    }
    return py::make_tuple(a, mask);
  }

  std::unique_ptr<capture::Capture> capture_;
  RecordColumns columns_;
  observe::Observer observer_;
  std::array<observe::FrameRef, 256> batch_;
  std::size_t next_row_ = 0;
  bool finished_ = false;
  bool busy_ = false;
  std::optional<std::string> error_;
  std::vector<py::str> keys_;
};

// The registry's names for the scitags chain (as `flowmark observe --registry` loads them).
Result<observe::ScitagsNames> registry_names(const std::string& source) {
  FM_TRY(auto reg, scitags::Registry::load(source));
  auto shared = std::make_shared<scitags::Registry>(std::move(reg));
  observe::ScitagsNames names;
  names.experiment = [shared](std::uint32_t e) -> std::optional<std::string> {
    if (auto n = shared->experiment_name(e)) return std::string(*n);
    return std::nullopt;
  };
  names.activity = [shared](std::uint32_t e, std::uint32_t a) -> std::optional<std::string> {
    if (auto n = shared->activity_name(e, a)) return std::string(*n);
    return std::nullopt;
  };
  return names;
}

std::unique_ptr<Run> open_run(const std::string& file, const std::string& iface,
                              const std::string& chains, double idle_timeout,
                              double expiry_delay, double active_timeout, std::size_t max_flows,
                              const std::string& filter, const std::string& registry,
                              bool icmp_flows, bool vlan, bool tcp_completion,
                              const std::string& capture_backend) {
  capture::ObserveOptions o;
  o.file = file;
  o.iface = iface;
  o.chains = chains;
  o.idle_timeout = idle_timeout;
  o.expiry_delay = expiry_delay;
  o.active_timeout = active_timeout;
  o.max_flows = max_flows;
  o.filter = filter;
  o.icmp_flows = icmp_flows;
  o.key_vlan = vlan;
  o.no_tcp_completion = !tcp_completion;
  o.capture = capture_backend;
  o.scitags_names = [registry] { return registry_names(registry); };
  std::optional<std::expected<capture::ObserveSetup, capture::ObserveSetupError>> setup;
  {
    // Opening may read a registry over HTTP or wait for an interface.
    py::gil_scoped_release nogil;
    setup = capture::prepare_observe(o);
  }
  if (!*setup) raise_setup_error(setup->error(), file);
  return std::make_unique<Run>(std::move(**setup));
}

}  // namespace

void bind_observe(py::module_& m) {
  py::class_<Run>(m, "Run", "one flowmark.observe() run (use flowmark.observe())")
      .def("next", &Run::next, "the next record as a dict, or None at the end")
      .def("columns", &Run::columns, "every remaining record as columns")
      .def("stop", &Run::stop, "end the input: the flows held are emitted")
      .def("column_names", &Run::column_names)
      .def("stats", &Run::stats);
  m.def("open", &open_run, py::arg("file"), py::arg("iface"), py::arg("chains"),
        py::arg("idle_timeout"), py::arg("expiry_delay"), py::arg("active_timeout"),
        py::arg("max_flows"), py::arg("filter"), py::arg("registry"), py::arg("icmp_flows"),
        py::arg("vlan"), py::arg("tcp_completion"), py::arg("capture"),
        "a Run set up as `flowmark observe` sets itself up (raises on bad options or input)");
  m.attr("default_chains") = std::string(observe::kDefaultChains);
}

}  // namespace flowmark::python
