// flowmark._flowmark.observe — `flowmark.observe()`'s engine: a capture and an observer set up
// as `flowmark observe` sets them up (capture::prepare_observe), run in slices with the GIL
// released, their records kept in typed C++ columns; Python takes them one dict at a time
// (iteration) or as whole columns (numpy arrays, made without a Python object per field).
// The pure-Python side (flowmark/_observe.py) wraps the columns in masked arrays / pandas.
#include <Python.h>
#include <netinet/in.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <bit>
#include <atomic>

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
// JSON text. A first guess within a step of it, then settled by comparing t with the
// midpoints to the neighbours in 128-bit integers.
double seconds(Nanos t) noexcept {
  if (t == 0) return 0.0;
  const bool negative = t < 0;
  const std::uint64_t a =
      negative ? ~static_cast<std::uint64_t>(t) + 1 : static_cast<std::uint64_t>(t);
  // The whole seconds are exact, the fraction is rounded once and the sum once: less than a
  // step off.
  double d = static_cast<double>(a / 1'000'000'000) +
             static_cast<double>(a % 1'000'000'000) / 1e9;
  for (int i = 0; i < 4; ++i) {  // one step at most; the bound is for safety
    // d in [2^p, 2^(p+1)), its step 2^(p-52), d = m steps (d is normal: 1e-9 <= d < 1e10).
    const auto bits = std::bit_cast<std::uint64_t>(d);
    const int p = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
    const std::uint64_t m = (bits & ((std::uint64_t{1} << 52) - 1)) | (std::uint64_t{1} << 52);
    // In quarter steps: d = 4m, the midpoints 4m + 2 and 4m - 2 (4m - 1 below a power of
    // two); t / 1e9 = a * 2^(54 - p) / 1e9 quarter steps (p <= 33: the shift is at least 21
    // and the product stays below 2^90).
    const U128 x = static_cast<U128>(a) << (54 - p);
    const U128 g = 1'000'000'000;
    const U128 hi = g * (4 * m + 2);
    const U128 lo = g * (4 * m - (m == (std::uint64_t{1} << 52) ? 1 : 2));
    if (x > hi || (x == hi && (m & 1) != 0)) {
      d = std::nextafter(d, std::numeric_limits<double>::infinity());
    } else if (x < lo || (x == lo && (m & 1) != 0)) {
      d = std::nextafter(d, 0.0);
    } else {
      break;
    }
  }
  return negative ? -d : d;
}

// Memory for the columns: blocks of 1 MiB or more are mapped with MAP_POPULATE, their pages
// made in one call rather than one fault each as they are first written (the columns of a
// million records, ~120 MB, are filled at once when the observer finishes; page by page, the
// faults cost about as much as the filling in a virtual machine).
template <class T>
struct ColumnAlloc {
  using value_type = T;
  static constexpr std::size_t kBig = std::size_t{1} << 20;
  ColumnAlloc() = default;
  template <class U>
  ColumnAlloc(const ColumnAlloc<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kBig) return static_cast<T*>(::operator new(bytes));
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kBig) return ::operator delete(p);
    munmap(p, bytes);
  }
  template <class U>
  bool operator==(const ColumnAlloc<U>&) const noexcept {
    return true;
  }
};
template <class T>
using Column = std::vector<T, ColumnAlloc<T>>;

// A chain field's values: what FieldVisitor handed over for each record.
enum class Kind : std::uint8_t { kNull = 0, kBool, kNumber, kText };

// One chain field over the records. Stored by the kind its chain writes it in (probed at
// set-up): bools or numbers, with a null mask; a text column, one whose kind the probes did not
// show, or one that gets values of another kind (no built-in chain does that) is generic: a
// kind and a value (the text's index for text) per record.
struct ChainColumn {
  std::string name;
  Kind kind = Kind::kNull;  // the probed kind
  bool generic = true;
  Column<std::uint8_t> mask;        // 1 where null
  Column<std::uint8_t> bools;       // kind kBool, not generic
  Column<std::uint64_t> numbers;    // kind kNumber, or generic values
  Column<Kind> kinds;               // generic
  const char* last_name = nullptr;  // the name's text as the chain last passed it

  void reserve(std::size_t n) {
    mask.reserve(n);
    if (generic) {
      kinds.reserve(n);
      numbers.reserve(n);
    } else if (kind == Kind::kBool) {
      bools.reserve(n);
    } else {
      numbers.reserve(n);
    }
  }
  void clear() noexcept {
    mask.clear();
    bools.clear();
    numbers.clear();
    kinds.clear();
  }
  [[gnu::always_inline, gnu::flatten]] void put(Kind k, std::uint64_t v) {
    if (!generic && k != Kind::kNull && k != kind) to_generic();
    mask.push_back(k == Kind::kNull ? 1 : 0);
    if (generic) {
      kinds.push_back(k);
      numbers.push_back(v);
    } else if (kind == Kind::kBool) {
      bools.push_back(k == Kind::kNull ? 0 : static_cast<std::uint8_t>(v != 0));
    } else {
      numbers.push_back(k == Kind::kNull ? 0 : v);
    }
  }
  void to_generic() {
    kinds.clear();
    for (std::size_t i = 0; i < mask.size(); ++i) kinds.push_back(mask[i] ? Kind::kNull : kind);
    if (kind == Kind::kBool) numbers.assign(bools.begin(), bools.end());
    bools.clear();
    generic = true;
  }
  // The value of record i as Python has it.
  Kind kind_at(std::size_t i) const noexcept {
    return generic ? kinds[i] : mask[i] ? Kind::kNull : kind;
  }
  std::uint64_t value_at(std::size_t i) const noexcept {
    return !generic && kind == Kind::kBool ? bools[i] : numbers[i];
  }
};

// The record's own fields, one vector each, in the types the arrays have.
struct BaseColumns {
  // Addresses as their 16 bytes (IPv4: the first 4) and a family byte (bit 0: sip is IPv6,
  // bit 1: dip is), not as IpAddress (24 bytes each).
  Column<std::array<std::uint8_t, 16>> sip, dip;
  Column<std::uint8_t> families;
  Column<std::uint8_t> proto, ip_version, tcp_flags_fwd, tcp_flags_rev;
  Column<std::uint8_t> continuation, no_ports;  // numpy bool
  Column<std::uint16_t> sp, dp, vlan;           // sp, dp: 0 without ports
  Column<double> first, last;
  Column<std::uint64_t> pkt_fwd, pkt_rev, oct_fwd, oct_rev;
  Column<std::uint32_t> fragments, icmp_errors;

  template <class F>
  void each(F&& f) {
    f(sip), f(dip), f(families), f(proto), f(ip_version), f(tcp_flags_fwd), f(tcp_flags_rev);
    f(continuation), f(no_ports), f(sp), f(dp), f(vlan), f(first), f(last);
    f(pkt_fwd), f(pkt_rev), f(oct_fwd), f(oct_rev), f(fragments), f(icmp_errors);
  }
  static std::array<std::uint8_t, 16> bytes_of(const IpAddress& a) noexcept {
    std::array<std::uint8_t, 16> b{};
    std::memcpy(b.data(), a.bytes(), a.size());
    return b;
  }
  [[gnu::flatten]] void add(const FlowRecord& r) {
    sip.push_back(bytes_of(r.sip));
    dip.push_back(bytes_of(r.dip));
    families.push_back(static_cast<std::uint8_t>((r.sip.is_v6() ? 1 : 0) | (r.dip.is_v6() ? 2 : 0)));
    proto.push_back(r.proto);
    ip_version.push_back(r.ip_version);
    tcp_flags_fwd.push_back(r.tcp_flags_fwd);
    tcp_flags_rev.push_back(r.tcp_flags_rev);
    continuation.push_back(r.continuation ? 1 : 0);
    no_ports.push_back(r.has_ports ? 0 : 1);
    sp.push_back(r.has_ports ? r.sp : 0);
    dp.push_back(r.has_ports ? r.dp : 0);
    vlan.push_back(r.vlan);
    first.push_back(seconds(r.first));
    last.push_back(seconds(r.last));
    pkt_fwd.push_back(r.pkt_fwd);
    pkt_rev.push_back(r.pkt_rev);
    oct_fwd.push_back(r.oct_fwd);
    oct_rev.push_back(r.oct_rev);
    fragments.push_back(r.fragments);
    icmp_errors.push_back(r.icmp_errors);
  }
};

// The records an observer emitted, in columns: the record's own fields, and the chains'
// fields as values (one FieldVisitor call each).
class RecordColumns final : public observe::FieldVisitor {
 public:
  // The chains' columns and their kinds, found by having each chain write states of a few
  // byte patterns (the built-in chains give each column one kind).
  void set_up(const observe::Observer& obs) {
    for (const auto& chain : obs.chains()) {
      const std::size_t first = columns_.size();
      for (auto& name : chain->columns()) {
        index_.emplace(name, columns_.size());
        ChainColumn c;
        c.name = std::move(name);
        columns_.push_back(std::move(c));
      }
      alignas(8) std::byte state[512];
      const std::size_t size = std::min(chain->state_size(), sizeof state);
      for (const std::byte pattern :
           {std::byte{0xff}, std::byte{0x00}, std::byte{0x55}, std::byte{0xaa}, std::byte{0x01}}) {
        std::memset(state, static_cast<int>(pattern), size);
        probe_at_ = first;
        probing_ = true;
        observe::FieldWriter w(*this);
        chain->write(FlowRecord{}, state, w);
        probing_ = false;
      }
    }
    for (auto& c : columns_) c.generic = !(c.kind == Kind::kBool || c.kind == Kind::kNumber);
  }

  void reserve(std::size_t n) {
    base_.each([n](auto& v) { v.reserve(n); });
    for (auto& c : columns_) c.reserve(n);
  }

  void add(const FlowRecord& r, const observe::Observer& obs) {
    base_.add(r);
    ++rows_;
    at_ = 0;
    observe::visit_chain_fields(r, obs, *this);
    // A chain that wrote fewer fields than its columns (none does): nulls for the rest.
    for (auto& c : columns_) {
      if (c.mask.size() < rows_) c.put(Kind::kNull, 0);
    }
  }

  std::size_t size() const noexcept { return rows_; }
  BaseColumns& base() noexcept { return base_; }
  const BaseColumns& base() const noexcept { return base_; }
  std::vector<ChainColumn>& columns() noexcept { return columns_; }
  const std::vector<ChainColumn>& columns() const noexcept { return columns_; }
  const std::string& text(std::uint64_t i) const noexcept { return texts_[i]; }

  void clear() noexcept {
    base_.each([](auto& v) { v.clear(); });
    texts_.clear();
    for (auto& c : columns_) c.clear();
    rows_ = 0;
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
    // The chains pass the same constant names record after record: a column remembers the
    // last pointer it matched (with the name's length), which spares comparing the text.
    if (i >= columns_.size() ||
        ((columns_[i].last_name != name.data() || columns_[i].name.size() != name.size()) &&
         columns_[i].name != name)) {
      auto it = index_.find(std::string(name));
      if (it == index_.end()) return;  // a field its chain did not list among its columns
      i = it->second;
    }
    ChainColumn& c = columns_[i];
    c.last_name = name.data();
    at = i + 1;
    if (probing_) {
      if (kind != Kind::kNull && c.kind == Kind::kNull) c.kind = kind;
      return;
    }
    if (c.mask.size() >= rows_) return;  // a second value for one record
    c.put(kind, value);
  }

  BaseColumns base_;
  std::size_t rows_ = 0;
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
