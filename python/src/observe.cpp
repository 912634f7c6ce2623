// flowmark._flowmark.observe — `flowmark.observe()`'s engine: a capture and an observer set up
// as `flowmark observe` sets them up (capture::prepare_observe), run in slices with the GIL
// released, their records kept in typed C++ columns; Python takes them one dict at a time
// (iteration) or as whole columns (numpy arrays, made without a Python object per field).
// The pure-Python side (flowmark/_observe.py) wraps the columns in masked arrays / pandas.
#include <Python.h>
#include <netinet/in.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <expected>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "flowmark/capture/observe_command.hpp"
#include "flowmark/core/exit_code.hpp"
#include "flowmark/observe/record_format.hpp"
#include "flowmark/scitags/registry.hpp"
#include "observe_columns.hpp"

namespace flowmark::python {
namespace {

using observe::Nanos;
using Clock = std::chrono::steady_clock;

// How long a slice of work runs with the GIL released before Python's signals are checked.
constexpr auto kSlice = std::chrono::milliseconds(50);
// Records a slice gathers for iteration before it hands them over (fewer at the end, or
// when the slice's time is up).
constexpr std::size_t kIterRows = 4096;

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

IpAddress address_of(const std::array<std::uint8_t, 16>& b, bool v6) noexcept {
  if (!v6) {
    return IpAddress::v4(std::uint32_t{b[0]} << 24 | std::uint32_t{b[1]} << 16 |
                         std::uint32_t{b[2]} << 8 | b[3]);
  }
  in6_addr a{};
  std::memcpy(&a, b.data(), 16);
  return IpAddress::v6(a);
}

// str objects for addresses, by a direct-mapped cache of 8,192 entries: get() returns a new
// reference.
class AddressCache {
 public:
  AddressCache() : slots_(kSlots) {}
  ~AddressCache() {
    for (auto& s : slots_) Py_XDECREF(s.str);
  }
  AddressCache(const AddressCache&) = delete;
  AddressCache& operator=(const AddressCache&) = delete;

  PyObject* get(const std::array<std::uint8_t, 16>& b, bool v6) {
    std::uint64_t w[2];
    std::memcpy(w, b.data(), 16);
    const std::uint64_t h =
        (w[0] * 0x9E3779B97F4A7C15ull) ^ (w[1] * 0xC2B2AE3D27D4EB4Full) ^ (v6 ? 0x5bd1e995 : 0);
    Slot& s = slots_[(h >> 40) & (kSlots - 1)];
    if (s.str == nullptr || s.v6 != v6 || s.bytes != b) {
      PyObject* fresh = address_str(address_of(b, v6)).release().ptr();
      Py_XDECREF(s.str);
      s.str = fresh;
      s.bytes = b;
      s.v6 = v6;
    }
    Py_INCREF(s.str);
    return s.str;
  }

 private:
  static constexpr std::size_t kSlots = 8192;
  struct Slot {
    std::array<std::uint8_t, 16> bytes{};
    bool v6 = false;
    PyObject* str = nullptr;
  };
  std::vector<Slot> slots_;
};

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
    if (::stat(file.c_str(), &st) != 0) raise(PyExc_OSError, py::make_tuple(errno, message, file));
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
      : capture_(std::move(setup.capture)), observer_(setup.config, [this](const FlowRecord& r) {
          if (!discard_) columns_.add(r, observer_);
        }) {
    setup.add_to(observer_);
    columns_.set_up(observer_);
    capture_->set_return_when_idle(true);
    snapshot_.bytes_per_flow = observer_.bytes_per_flow();
    snapshot_.drops = capture_->drops();
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

  // For bench/python_observe_bench.py: reads to the end keeping no record (the observer's own
  // time, the chains' included).
  void discard_all() {
    Busy busy(*this);
    discard_ = true;
    while (!finished_) {
      run_slice(std::numeric_limits<std::size_t>::max());
      check_signals();
    }
    raise_read_error();
  }

  // Seconds spent reading and observing (records into the C++ columns included), making
  // arrays of the columns, and in the observer's finish() (where the flows still open at the
  // end of a file come out: with a capture whose flows all stay open, the sink's own time is
  // the difference between a run that keeps the records and one that does not).
  py::dict timing() const {
    py::dict d;
    d["observe"] = observe_seconds_;
    d["convert"] = convert_seconds_;
    d["finish"] = finish_seconds_;
    return d;
  }

  // Ends the input as Ctrl-C ends `flowmark observe`: the flows held are emitted and what is
  // left to iterate (or to_arrays()) are the records so far.
  void stop() noexcept { capture_->break_loop(); }

  std::vector<std::string> column_names() const {
    std::vector<std::string> names(std::begin(kRecordFields), std::end(kRecordFields));
    for (const auto& c : columns_.columns()) names.push_back(c.name);
    return names;
  }

  // The counters as of the end of the last slice (another thread may ask while this run reads
  // without the GIL: it gets that snapshot, not the observer's counters as they change).
  py::dict stats() const {
    const Snapshot& snap = snapshot_;
    const auto& st = snap.stats;
    py::dict d;
    d["packets"] = st.packets;
    d["drops"] = snap.drops ? py::object(py::int_(*snap.drops)) : py::none();
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
    d["active_flows"] = snap.active_flows;
    d["bytes_per_flow"] = snap.bytes_per_flow;
    py::dict errors;
    for (std::size_t i = 1; i < st.decode_errors.size(); ++i)
      errors[py::str(std::string(observe::to_string(static_cast<observe::DecodeError>(i))))] =
          st.decode_errors[i];
    d["decode_errors"] = errors;
    d["finished"] = snap.finished;
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
    read_slice(rows);
    snapshot_ = {observer_.stats(), capture_->drops(), observer_.active_flows(),
                 observer_.bytes_per_flow(), finished_};
  }
  void read_slice(std::size_t rows) {
    py::gil_scoped_release nogil;
    const auto start = Clock::now();
    const auto deadline = start + kSlice;
    struct Account {
      double& total;
      Clock::time_point start;
      ~Account() { total += std::chrono::duration<double>(Clock::now() - start).count(); }
    } account{observe_seconds_, start};
    observe::LinkType link = observe::LinkType::kEthernet;
    for (;;) {
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
      if (Clock::now() >= deadline) return;
    }
  }
  void end() noexcept {
    // The flows still held all come out now: room for them at once.
    try {
      if (!discard_) columns_.reserve(columns_.size() + observer_.active_flows());
    } catch (const std::bad_alloc&) {  // then they grow as they come
    }
    const auto start = Clock::now();
    observer_.finish();
    finish_seconds_ = std::chrono::duration<double>(Clock::now() - start).count();
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
    const BaseColumns& b = columns_.base();
    const bool ports = b.no_ports[i] == 0;
    py::dict d;
    std::size_t k = 0;
    auto set = [&](py::object v) { d[keys_[k++]] = std::move(v); };
    set(address_str(address_of(b.sip[i], (b.families[i] & 1) != 0)));
    set(address_str(address_of(b.dip[i], (b.families[i] & 2) != 0)));
    set(py::int_(b.proto[i]));
    set(ports ? py::object(py::int_(b.sp[i])) : py::none());
    set(ports ? py::object(py::int_(b.dp[i])) : py::none());
    set(py::float_(b.first[i]));
    set(py::float_(b.last[i]));
    set(py::int_(b.pkt_fwd[i]));
    set(py::int_(b.pkt_rev[i]));
    set(py::int_(b.oct_fwd[i]));
    set(py::int_(b.oct_rev[i]));
    set(py::int_(b.ip_version[i]));
    set(py::int_(b.vlan[i]));
    set(py::int_(b.tcp_flags_fwd[i]));
    set(py::int_(b.tcp_flags_rev[i]));
    set(py::int_(b.fragments[i]));
    set(py::int_(b.icmp_errors[i]));
    set(py::bool_(b.continuation[i] != 0));
    for (const auto& c : columns_.columns()) set(value(c, i));
    return d;
  }
  py::object value(const ChainColumn& c, std::size_t i) const {
    const std::uint64_t v = c.value_at(i);
    switch (c.kind_at(i)) {
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
    const auto start = Clock::now();
    py::dict out = make_columns();
    convert_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
    return out;
  }

  // A vector's elements from `begin` as a numpy array that owns the vector (no copy).
  template <class T>
  static py::array hand_over(Column<T>& v, std::size_t begin, py::dtype dtype) {
    auto* owned = new Column<T>(std::move(v));
    py::capsule owner(owned, [](void* p) { delete static_cast<Column<T>*>(p); });
    v = {};
    return py::array(dtype,
                     std::vector<py::ssize_t>{static_cast<py::ssize_t>(owned->size() - begin)},
                     owned->data() + begin, owner);
  }
  template <class T>
  static py::array hand_over(Column<T>& v, std::size_t begin) {
    return hand_over(v, begin, py::dtype::of<T>());
  }
  static py::array hand_over_bool(Column<std::uint8_t>& v, std::size_t begin) {
    return hand_over(v, begin, py::dtype::of<bool>());
  }

  // The records from next_row_ on, as arrays; the columns are left empty.
  py::dict make_columns() {
    const std::size_t begin = next_row_, n = columns_.size() - begin;
    BaseColumns& b = columns_.base();
    py::dict out;
    // Addresses: str objects, one per distinct address among the last few thousand (a
    // server's address recurs in many records; the str is shared, as Python shares it).
    AddressCache cache;
    for (int side = 0; side < 2; ++side) {
      const auto& addrs = side == 0 ? b.sip : b.dip;
      const std::uint8_t v6_bit = side == 0 ? 1 : 2;
      py::array a = objects(n);
      auto** objs = static_cast<PyObject**>(a.mutable_data());
      for (std::size_t i = 0; i < n; ++i) {
        PyObject* s = cache.get(addrs[begin + i], (b.families[begin + i] & v6_bit) != 0);
        Py_DECREF(objs[i]);
        objs[i] = s;
      }
      out[side == 0 ? "sip" : "dip"] = a;
    }
    out["proto"] = hand_over(b.proto, begin);
    // sp and dp share the mask of the records without ports.
    py::array no_ports = hand_over_bool(b.no_ports, begin);
    out["sp"] = py::make_tuple(hand_over(b.sp, begin), no_ports);
    out["dp"] = py::make_tuple(hand_over(b.dp, begin), no_ports);
    out["first"] = hand_over(b.first, begin);
    out["last"] = hand_over(b.last, begin);
    out["pkt_fwd"] = hand_over(b.pkt_fwd, begin);
    out["pkt_rev"] = hand_over(b.pkt_rev, begin);
    out["oct_fwd"] = hand_over(b.oct_fwd, begin);
    out["oct_rev"] = hand_over(b.oct_rev, begin);
    out["ip_version"] = hand_over(b.ip_version, begin);
    out["vlan"] = hand_over(b.vlan, begin);
    out["tcp_flags_fwd"] = hand_over(b.tcp_flags_fwd, begin);
    out["tcp_flags_rev"] = hand_over(b.tcp_flags_rev, begin);
    out["fragments"] = hand_over(b.fragments, begin);
    out["icmp_errors"] = hand_over(b.icmp_errors, begin);
    out["continuation"] = hand_over_bool(b.continuation, begin);
    for (auto& c : columns_.columns()) out[py::str(c.name)] = chain_column(c, begin, n);
    return out;
  }

  // (values, mask): bool or uint64 values (0 where null), or an object array (None where
  // null) for text and for a column of mixed kinds.
  py::tuple chain_column(ChainColumn& c, std::size_t begin, std::size_t n) const {
    if (!c.generic) {
      py::array values =
          c.kind == Kind::kBool ? hand_over_bool(c.bools, begin) : hand_over(c.numbers, begin);
      return py::make_tuple(values, hand_over_bool(c.mask, begin));
    }
    py::array a = objects(n);
    auto** objs = static_cast<PyObject**>(a.mutable_data());
    for (std::size_t i = 0; i < n; ++i) {
      if (c.mask[begin + i]) continue;  // None
      PyObject* v = value(c, begin + i).release().ptr();
      Py_DECREF(objs[i]);
      objs[i] = v;
    }
    return py::make_tuple(a, hand_over_bool(c.mask, begin));
  }

  std::unique_ptr<capture::Capture> capture_;
  RecordColumns columns_;
  observe::Observer observer_;
  std::array<observe::FrameRef, 256> batch_;
  std::size_t next_row_ = 0;
  bool finished_ = false;
  struct Snapshot {
    observe::ObserverStats stats;
    std::optional<std::uint64_t> drops;
    std::size_t active_flows = 0, bytes_per_flow = 0;
    bool finished = false;
  };
  Snapshot snapshot_;
  bool busy_ = false;
  bool discard_ = false;
  double observe_seconds_ = 0, convert_seconds_ = 0, finish_seconds_ = 0;
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
                              const std::string& chains, double idle_timeout, double expiry_delay,
                              double active_timeout, std::size_t max_flows,
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
      .def("stats", &Run::stats)
      .def("discard_all", &Run::discard_all)
      .def("timing", &Run::timing);
  m.def("open", &open_run, py::arg("file"), py::arg("iface"), py::arg("chains"),
        py::arg("idle_timeout"), py::arg("expiry_delay"), py::arg("active_timeout"),
        py::arg("max_flows"), py::arg("filter"), py::arg("registry"), py::arg("icmp_flows"),
        py::arg("vlan"), py::arg("tcp_completion"), py::arg("capture"),
        "a Run set up as `flowmark observe` sets itself up (raises on bad options or input)");
  m.attr("default_chains") = std::string(observe::kDefaultChains);
}

}  // namespace flowmark::python
