// flowmark._flowmark.mcast (see bindings.hpp): UDP multicast from Python over flowmark::mcast
// and flowmark::net — send(), Sender, Receiver (recv / recv_many with recvmmsg batches),
// sequenced streams and their statistics, and a joined socket for flowmark.multicast.
//
// Blocking calls wait with the GIL released, in slices of at most 100 ms between which the
// GIL is taken back and PyErr_CheckSignals() runs, so Ctrl-C interrupts them.
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/stl.h>

#include "bindings.hpp"
#include "flowmark/core/address.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/option_value.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/mcast/defaults.hpp"
#include "flowmark/mcast/receiver.hpp"
#include "flowmark/mcast/sender.hpp"
#include "flowmark/mcast/stream.hpp"
#include "flowmark/net/multicast.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::python {
namespace {

constexpr std::int64_t kSliceNs = 100'000'000;  // longest wait without checking for signals
constexpr std::size_t kMaxBatch = 1024;         // recvmmsg takes at most UIO_MAXIOV

// An Error as the Python exception a socket user expects: OSError(errno, message) for the
// kernel's refusals, ValueError for a value that is not acceptable.
[[noreturn]] void raise_error(const Error& e) {
  const auto& cat = e.code().category();
  if (cat == std::system_category() || cat == std::generic_category()) {
    py::object err = py::reinterpret_steal<py::object>(
        PyObject_CallFunction(PyExc_OSError, "is", e.code().value(), e.message().c_str()));
    PyErr_SetObject(PyExc_OSError, err.ptr());
    throw py::error_already_set();
  }
  switch (static_cast<Errc>(e.code().value())) {
    case Errc::kInvalidArgument:
    case Errc::kMalformed: throw py::value_error(e.message());
    case Errc::kNotFound: {
      py::object err = py::reinterpret_steal<py::object>(
          PyObject_CallFunction(PyExc_OSError, "is", ENODEV, e.message().c_str()));
      PyErr_SetObject(PyExc_OSError, err.ptr());
      throw py::error_already_set();
    }
    default: {
      PyErr_SetString(PyExc_OSError, e.message().c_str());
      throw py::error_already_set();
    }
  }
}

template <typename T>
T value_or_raise(Result<T>&& r) {
  if (!r) raise_error(r.error());
  return std::move(*r);
}
inline void check(Result<void>&& r) {
  if (!r) raise_error(r.error());
}

void check_signals() {
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

// "eth0", "3", an address of the interface, or an int index.
std::optional<Interface> to_iface(const py::object& o) {
  if (o.is_none()) return std::nullopt;
  std::string spec =
      py::isinstance<py::int_>(o) ? std::to_string(o.cast<long>()) : o.cast<std::string>();
  Interface ifc = value_or_raise(resolve_interface(spec));
  if (!ifc.multicast)
    raise_error(fail(Errc::kRefused, "interface " + ifc.name + " has multicast off (ip link set " +
                                         ifc.name + " multicast on)")
                    .error());
  return ifc;
}

IpAddress to_address(const std::string& text, const char* what) {
  auto a = IpAddress::parse(text);
  if (!a) throw py::value_error(std::string(what) + " " + text + ": " + a.error().message());
  return *a;
}

// A str or a sequence of str.
std::vector<std::string> to_strings(const py::object& o) {
  if (o.is_none()) return {};
  if (py::isinstance<py::str>(o)) return {o.cast<std::string>()};
  return o.cast<std::vector<std::string>>();
}

// Groups as given, with the interface named by a "%scope" when none was given.
std::vector<IpAddress> to_groups(const py::object& o, std::optional<Interface>& iface) {
  std::vector<IpAddress> groups;
  for (const auto& g : to_strings(o)) groups.push_back(to_address(g, "group"));
  if (groups.empty()) throw py::value_error("no group given");
  if (!iface) {
    for (const auto& g : groups) {
      if (g.scope_id() != 0) {
        iface = value_or_raise(resolve_interface(std::to_string(g.scope_id())));
        break;
      }
    }
  }
  for (const auto& g : groups) check(net::check_group(g, iface));
  return groups;
}

// Bytes of a payload argument: bytes, bytearray, memoryview (anything with the buffer
// protocol) or str (sent as UTF-8). The returned object keeps the bytes alive.
struct Payload {
  py::object keep;
  std::span<const std::byte> bytes;
};
Payload to_payload(const py::handle& h) {
  Payload p;
  if (py::isinstance<py::str>(h)) {
    p.keep = py::reinterpret_steal<py::object>(PyUnicode_AsUTF8String(h.ptr()));
    if (!p.keep) throw py::error_already_set();
  } else if (PyObject_CheckBuffer(h.ptr())) {
    p.keep = py::reinterpret_borrow<py::object>(h);
  } else {
    throw py::type_error("a payload is bytes, bytearray, memoryview or str, not " +
                         std::string(py::str(h.get_type().attr("__name__"))));
  }
  if (PyBytes_Check(p.keep.ptr())) {
    p.bytes = {reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(p.keep.ptr())),
               static_cast<std::size_t>(PyBytes_GET_SIZE(p.keep.ptr()))};
  } else {
    // A copy: a bytearray could change under us while the GIL is released.
    p.keep = py::reinterpret_steal<py::object>(PyBytes_FromObject(p.keep.ptr()));
    if (!p.keep) throw py::error_already_set();
    p.bytes = {reinterpret_cast<const std::byte*>(PyBytes_AS_STRING(p.keep.ptr())),
               static_cast<std::size_t>(PyBytes_GET_SIZE(p.keep.ptr()))};
  }
  return p;
}

py::tuple endpoint_tuple(const Endpoint& e) {
  return py::make_tuple(e.address.to_string_scoped(), e.port);
}

// Waits until fd is readable or the timeout passes (none: for ever), in slices with the GIL
// released; `stop` is checked between slices. Returns false on timeout or stop.
template <typename Stop>
bool wait_readable(int fd, std::optional<double> timeout, Stop&& stop) {
  const std::int64_t deadline =
      timeout ? monotonic_ns() + static_cast<std::int64_t>(std::max(0.0, *timeout) * 1e9) : 0;
  for (;;) {
    std::int64_t slice = kSliceNs;
    if (timeout) slice = std::clamp<std::int64_t>(deadline - monotonic_ns(), 0, kSliceNs);
    int r;
    int saved_errno;
    {
      py::gil_scoped_release nogil;
      pollfd p{fd, POLLIN, 0};
      r = ::poll(&p, 1, static_cast<int>((slice + 999'999) / 1'000'000));
      saved_errno = errno;
    }
    if (r > 0) return true;
    if (r < 0 && saved_errno != EINTR) raise_error(fail_errno("poll", saved_errno).error());
    check_signals();
    if (stop()) return false;
    if (timeout && monotonic_ns() >= deadline) return false;
  }
}

// ---- Receiver -----------------------------------------------------------------------------

class PyReceiver {
 public:
  PyReceiver(const py::object& groups, int port, const py::object& iface, const py::object& source,
             const py::object& bind, int rcvbuf, std::size_t buffer_size, std::size_t batch,
             bool stats, int ttl, bool loop)
      : buffer_size_(buffer_size),
        batch_(std::clamp<std::size_t>(batch, 1, kMaxBatch)),
        stats_on_(stats) {
    if (port < 0 || port > 65535) throw py::value_error("port: 0..65535");
    if (buffer_size == 0 || buffer_size > 65536) throw py::value_error("buffer_size: 1..65536");
    mcast::ReceiverConfig c;
    c.iface = to_iface(iface);
    c.groups = to_groups(groups, c.iface);
    for (const auto& s : to_strings(source)) {
      c.sources.push_back(value_or_raise(parse_source(OptionValue{s, "source " + s})));
    }
    c.port = static_cast<std::uint16_t>(port);
    if (!bind.is_none()) c.bind = to_address(bind.cast<std::string>(), "bind");
    c.send = {c.iface, ttl, loop};
    check(net::check_ttl(ttl));
    c.rcvbuf = rcvbuf;
    c.buffer_size = buffer_size;
    // Names of interfaces by index as this namespace sees them (the receiver may later be
    // read from a thread in another network namespace).
    if (c.iface) if_names_.emplace(c.iface->index, c.iface->name);
    c.batch = 1;  // its own reader is unused: the batches are read with ours
    {
      py::gil_scoped_release nogil;
      auto r = mcast::Receiver::open(c);
      if (r)
        rx_.emplace(std::move(*r));
      else
        error_ = r.error();
    }
    if (!rx_) raise_error(*error_);
  }

  // One datagram, or None after `timeout` seconds (None: wait for ever) or when closed
  // from another thread.
  py::object recv(std::optional<double> timeout) {
    py::list got = read(1, timeout);
    if (got.empty()) return py::none();
    return got[0];
  }

  py::list recv_many(std::optional<std::size_t> max, std::optional<double> timeout) {
    std::size_t n = max.value_or(batch_);
    if (n == 0) throw py::value_error("max must be at least 1");
    return read(std::min(n, kMaxBatch), timeout);
  }

  py::object next() {
    py::object d = recv(std::nullopt);
    if (d.is_none()) throw py::stop_iteration();
    return d;
  }

  int fileno() const { return live().fd(); }
  int port() const { return live().port(); }
  int family() const { return live().family() == Family::kV4 ? 4 : 6; }
  bool closed() const { return !rx_ || close_pending_; }
  std::uint64_t received() const { return received_; }
  std::uint64_t truncated() const { return truncated_; }

  void close() {
    if (busy_) {
      close_pending_ = true;  // the reading thread closes when it wakes (within 100 ms)
      return;
    }
    rx_.reset();
    readers_.clear();
  }

  // Sends from the receiving socket (source port = the group port), e.g. a HEAR reply.
  void send_to(const std::string& host, int port, const py::handle& data) {
    Payload p = to_payload(data);
    if (port <= 0 || port > 65535) throw py::value_error("port: 1..65535");
    // A scope this receiver named itself ("fe80::1%eth0" from recv) maps back to its index
    // without a lookup in the calling thread's namespace.
    Endpoint to;
    to.port = static_cast<std::uint16_t>(port);
    const auto pct = host.find('%');
    std::optional<std::uint32_t> known_scope;
    if (pct != std::string::npos) {
      for (const auto& [index, name] : if_names_)
        if (name == host.substr(pct + 1)) known_scope = index;
    }
    if (known_scope) {
      to.address = to_address(host.substr(0, pct), "address");
      to.address.set_scope_id(*known_scope);
    } else {
      to.address = to_address(host, "address");
    }
    Result<void> r;
    {
      py::gil_scoped_release nogil;
      r = live().send_to(to, p.bytes);
    }
    check(std::move(r));
  }

  py::dict stats() const {
    py::list streams;
    for (const auto& [key, s] : stats_.streams()) {
      py::dict d;
      d["source"] = key.sender.address.to_string_scoped();
      d["sport"] = key.sender.port;
      d["group"] = key.group.to_string();
      d["stream"] = key.stream;
      d["received"] = s.received();
      d["unique"] = s.unique();
      d["first_seq"] = s.first_sequence();
      d["last_seq"] = s.last_sequence();
      d["expected"] = s.expected();
      d["lost"] = s.lost();
      d["loss_pct"] =
          s.expected() ? 100.0 * static_cast<double>(s.lost()) / static_cast<double>(s.expected())
                       : 0.0;
      d["duplicates"] = s.duplicates();
      d["reordered"] = s.reordered();
      py::dict delay;
      delay["min"] = static_cast<double>(s.delay_min_ns()) / 1e3;
      delay["avg"] = static_cast<double>(s.delay_avg_ns()) / 1e3;
      delay["max"] = static_cast<double>(s.delay_max_ns()) / 1e3;
      delay["jitter"] = static_cast<double>(s.jitter_ns()) / 1e3;
      d["delay_us"] = delay;
      streams.append(d);
    }
    py::dict out;
    out["streams"] = streams;
    out["plain"] = plain_;
    out["truncated"] = truncated_;
    out["received"] = received_;
    return out;
  }

 private:
  const mcast::Receiver& live() const {
    if (!rx_ || close_pending_) throw py::value_error("I/O operation on a closed Receiver");
    return *rx_;
  }
  mcast::Receiver& live() {
    if (!rx_ || close_pending_) throw py::value_error("I/O operation on a closed Receiver");
    return *rx_;
  }

  net::DatagramReader& reader(std::size_t n) {
    auto it = readers_.find(n);
    if (it == readers_.end()) {
      if (readers_.size() >= 4) readers_.erase(std::prev(readers_.end()));  // bounded memory
      it = readers_.emplace(n, std::make_unique<net::DatagramReader>(buffer_size_, n)).first;
    }
    return *it->second;
  }

  // Marks the receiver in use by this thread for the duration of one read.
  struct Busy {
    PyReceiver& r;
    explicit Busy(PyReceiver& rr) : r(rr) {
      if (r.busy_) throw py::value_error("the Receiver is being read by another thread");
      r.busy_ = true;
    }
    ~Busy() {
      r.busy_ = false;
      if (r.close_pending_) {
        r.close_pending_ = false;
        r.rx_.reset();
        r.readers_.clear();
      }
    }
  };

  py::list read(std::size_t n, std::optional<double> timeout) {
    const int fd = live().fd();
    Busy busy(*this);
    net::DatagramReader& rd = reader(n);
    for (;;) {
      Result<std::span<const net::Datagram>> batch;
      {
        py::gil_scoped_release nogil;
        batch = rd.read(fd);
        if (batch && !batch->empty()) account(*batch);
      }
      if (!batch) raise_error(batch.error());
      if (!batch->empty()) return to_list(*batch);
      if (!wait_readable(fd, timeout, [&] { return close_pending_; })) return py::list();
    }
  }

  // Statistics of sequenced streams (GIL released: no Python objects here).
  void account(std::span<const net::Datagram> batch) {
    received_ += batch.size();
    for (const auto& d : batch) {
      if (d.truncated) ++truncated_;
      if (!stats_on_) continue;
      if (auto h = mcast::decode_stream_header(d.payload)) {
        const std::int64_t rx = d.rx_time_ns ? d.rx_time_ns : realtime_ns();
        stats_.add({d.source, d.destination, h->stream}, h->sequence,
                   mcast::one_way_delay_ns(rx, h->sent_ns));
      } else {
        ++plain_;
      }
    }
  }

  // (payload, (host, port), group) per datagram. Sender tuples and group strings are
  // cached: a stream comes from few senders to few groups.
  py::list to_list(std::span<const net::Datagram> batch) {
    PyObject* list = PyList_New(static_cast<Py_ssize_t>(batch.size()));
    if (!list) throw py::error_already_set();
    py::list out = py::reinterpret_steal<py::list>(list);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const net::Datagram& d = batch[i];
      PyObject* t = PyTuple_New(3);
      if (!t) throw py::error_already_set();
      PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), t);
      PyObject* payload = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(d.payload.data()),
                                                    static_cast<Py_ssize_t>(d.payload.size()));
      if (!payload) throw py::error_already_set();
      PyTuple_SET_ITEM(t, 0, payload);
      PyObject* sender = cached_sender(d.source);
      Py_INCREF(sender);
      PyTuple_SET_ITEM(t, 1, sender);
      PyObject* group = cached_group(d.destination);
      Py_INCREF(group);
      PyTuple_SET_ITEM(t, 2, group);
    }
    return out;
  }

  PyObject* cached_sender(const Endpoint& e) {
    for (auto& [k, v] : senders_)
      if (k == e && k.address.scope_id() == e.address.scope_id()) return v.ptr();
    if (senders_.size() >= 64) senders_.erase(senders_.begin());
    std::string host = e.address.to_string();
    if (const std::uint32_t scope = e.address.scope_id(); scope != 0) {
      auto it = if_names_.find(scope);
      if (it == if_names_.end()) it = if_names_.emplace(scope, interface_name(scope)).first;
      host += "%" + it->second;
    }
    senders_.emplace_back(e, py::make_tuple(host, e.port));
    return senders_.back().second.ptr();
  }
  PyObject* cached_group(const IpAddress& g) {
    for (auto& [k, v] : groups_)
      if (k == g) return v.ptr();
    if (groups_.size() >= 64) groups_.erase(groups_.begin());
    groups_.emplace_back(g, py::str(g.to_string()));
    return groups_.back().second.ptr();
  }

  std::optional<mcast::Receiver> rx_;
  std::optional<Error> error_;
  std::size_t buffer_size_, batch_;
  std::map<std::size_t, std::unique_ptr<net::DatagramReader>> readers_;
  bool stats_on_;
  mcast::StatsTable stats_;
  std::uint64_t received_ = 0, truncated_ = 0, plain_ = 0;
  bool busy_ = false, close_pending_ = false;
  std::vector<std::pair<Endpoint, py::object>> senders_;
  std::map<std::uint32_t, std::string> if_names_;
  std::vector<std::pair<IpAddress, py::object>> groups_;
};

// ---- Sender -------------------------------------------------------------------------------

class PySender {
 public:
  PySender(const std::string& group, int port, const py::object& iface, int ttl, bool loop,
           const py::object& bind, int bind_port, bool gso) {
    if (port <= 0 || port > 65535) throw py::value_error("port: 1..65535");
    if (bind_port < 0 || bind_port > 65535) throw py::value_error("bind_port: 0..65535");
    mcast::SenderConfig c;
    auto ifc = to_iface(iface);
    auto groups = to_groups(py::str(group), ifc);
    c.group = {groups.front(), static_cast<std::uint16_t>(port)};
    check(net::check_ttl(ttl));
    c.send = {ifc, ttl, loop};
    if (!bind.is_none()) c.bind = to_address(bind.cast<std::string>(), "bind");
    c.bind_port = static_cast<std::uint16_t>(bind_port);
    c.gso = gso;
    tx_.emplace(value_or_raise(mcast::Sender::open(c)));
    stream_id_ = std::random_device{}();
  }

  void send(const py::handle& data) {
    Payload p = to_payload(data);
    InUse in_use(*this);
    Result<void> r;
    {
      py::gil_scoped_release nogil;
      r = live().send(p.bytes);
    }
    check(std::move(r));
  }

  // Every payload of the iterable, in sendmmsg batches; returns how many the kernel took.
  std::size_t send_many(const py::iterable& items) {
    std::vector<Payload> payloads;
    for (auto h : items) payloads.push_back(to_payload(h));
    std::vector<std::span<const std::byte>> spans;
    spans.reserve(payloads.size());
    const std::size_t limit = mcast::max_payload(live().group().address.family());
    for (const auto& p : payloads) {
      if (p.bytes.size() > limit)
        throw py::value_error("a payload of " + std::to_string(p.bytes.size()) +
                              " bytes; a UDP datagram holds at most " + std::to_string(limit));
      spans.push_back(p.bytes);
    }
    InUse in_use(*this);
    std::size_t sent = 0;
    for (std::size_t i = 0; i < spans.size();) {
      const std::size_t n = std::min<std::size_t>(4096, spans.size() - i);
      Result<std::size_t> r;
      {
        py::gil_scoped_release nogil;
        r = live().send_batch(std::span(spans).subspan(i, n));
      }
      sent += value_or_raise(std::move(r));
      i += n;
      check_signals();
    }
    return sent;
  }

  // `count` datagrams of the stream header followed by `message` (padded with '.' to
  // `size` bytes), `interval` seconds apart (0: as fast as possible). Returns how many the
  // kernel took; Ctrl-C interrupts.
  std::uint64_t send_stream(const py::handle& message, std::uint64_t count, double interval,
                            std::optional<std::size_t> size) {
    Payload m = to_payload(message);
    const std::size_t limit = mcast::max_payload(live().group().address.family());
    std::size_t len = mcast::kStreamHeaderSize + m.bytes.size();
    if (size) {
      if (*size < mcast::kStreamHeaderSize || *size > limit)
        throw py::value_error("size: " + std::to_string(mcast::kStreamHeaderSize) + ".." +
                              std::to_string(limit) + " for a sequenced datagram");
      len = std::max(len, *size);
    }
    if (len > limit)
      throw py::value_error("the message is " + std::to_string(len) +
                            " bytes with its header; a UDP datagram holds at most " +
                            std::to_string(limit));
    if (interval < 0 || !std::isfinite(interval)) throw py::value_error("interval: 0 or more");
    constexpr std::size_t kBatch = mcast::Sender::kBatch;
    std::vector<std::byte> slots(len * kBatch, std::byte{'.'});
    for (std::size_t k = 0; k < kBatch; ++k)
      std::memcpy(slots.data() + k * len + mcast::kStreamHeaderSize, m.bytes.data(),
                  m.bytes.size());
    std::vector<std::span<const std::byte>> spans(kBatch);
    InUse in_use(*this);
    const auto interval_ns = static_cast<std::int64_t>(interval * 1e9);
    const std::int64_t start = monotonic_ns();
    std::uint64_t sent = 0;
    for (std::uint64_t i = 0; i < count;) {
      Result<std::size_t> r{0};
      std::uint64_t done = 0;
      {
        py::gil_scoped_release nogil;
        const std::int64_t slice_end = monotonic_ns() + kSliceNs;
        while (i + done < count && monotonic_ns() < slice_end && r) {
          std::size_t n = 0;
          if (interval_ns > 0) {
            const std::int64_t due = start + static_cast<std::int64_t>(i + done) * interval_ns;
            if (due > monotonic_ns()) {
              sleep_until_monotonic(std::min(due, slice_end));
              if (due > monotonic_ns()) continue;
            }
            n = 1;
          } else {
            n = static_cast<std::size_t>(std::min<std::uint64_t>(kBatch, count - i - done));
          }
          for (std::size_t k = 0; k < n; ++k) {
            std::byte* slot = slots.data() + k * len;
            mcast::encode_stream_header(
                {slot, mcast::kStreamHeaderSize},
                {stream_id_, sequence_++, static_cast<std::uint64_t>(realtime_ns())});
            spans[k] = {slot, len};
          }
          r = live_nogil().send_batch(std::span(spans).first(n));
          if (r) sent += *r;
          done += n;
        }
      }
      if (!r) raise_error(r.error());
      i += done;
      check_signals();
    }
    return sent;
  }

  py::tuple local() const { return endpoint_tuple(live().local()); }
  int fileno() const { return live().fd(); }
  std::uint64_t refused() const { return live().refused(); }
  std::uint32_t stream_id() const { return stream_id_; }
  std::uint64_t sequence() const { return sequence_; }
  bool closed() const { return !tx_; }
  void close() {
    if (busy_) throw py::value_error("the Sender is sending in another thread");
    tx_.reset();
  }

 private:
  // The socket's message buffers serve one send at a time: a second thread is refused
  // rather than left to race while the GIL is released.
  struct InUse {
    PySender& s;
    explicit InUse(PySender& ss) : s(ss) {
      if (s.busy_) throw py::value_error("the Sender is sending in another thread");
      s.live();
      s.busy_ = true;
    }
    ~InUse() { s.busy_ = false; }
  };
  bool busy_ = false;

  mcast::Sender& live_nogil() { return *tx_; }
  mcast::Sender& live() {
    if (!tx_) throw py::value_error("I/O operation on a closed Sender");
    return *tx_;
  }
  const mcast::Sender& live() const {
    if (!tx_) throw py::value_error("I/O operation on a closed Sender");
    return *tx_;
  }
  std::optional<mcast::Sender> tx_;
  std::uint32_t stream_id_ = 0;
  std::uint64_t sequence_ = 0;
};

py::object decode_header(const py::bytes& payload) {
  std::string_view v = payload;
  auto h = mcast::decode_stream_header(std::as_bytes(std::span(v.data(), v.size())));
  if (!h) return py::none();
  py::dict d;
  d["stream"] = h->stream;
  d["sequence"] = h->sequence;
  d["sent_ns"] = h->sent_ns;
  return d;
}

py::bytes encode_header(std::uint32_t stream, std::uint64_t sequence,
                        std::optional<std::uint64_t> sent_ns) {
  std::array<std::byte, mcast::kStreamHeaderSize> h{};
  mcast::encode_stream_header(
      h, {stream, sequence, sent_ns.value_or(static_cast<std::uint64_t>(realtime_ns()))});
  return py::bytes(reinterpret_cast<const char*>(h.data()), h.size());
}

// A UDP socket bound to `port` and joined to `groups` (for flowmark.multicast, which hands
// it to Python's socket module): the caller owns the returned descriptor.
int open_joined_socket(const py::object& groups, int port, const py::object& iface,
                       const py::object& source, const py::object& bind, int rcvbuf) {
  if (port < 0 || port > 65535) throw py::value_error("port: 0..65535");
  net::GroupSocketConfig c;
  c.iface = to_iface(iface);
  c.groups = to_groups(groups, c.iface);
  for (const auto& s : to_strings(source))
    c.sources.push_back(value_or_raise(parse_source(OptionValue{s, "source " + s})));
  c.port = static_cast<std::uint16_t>(port);
  if (!bind.is_none()) c.bind = to_address(bind.cast<std::string>(), "bind");
  c.rcvbuf = rcvbuf;
  auto s = value_or_raise(net::open_group_socket(c));
  return s.fd.release();
}

}  // namespace

void bind_mcast(py::module_& m) {
  m.attr("DEFAULT_PORT") = mcast::kDefaultPort;
  m.attr("DEFAULT_GROUP") = mcast::kDefaultGroup;
  m.attr("DEFAULT_TTL") = mcast::kDefaultTtl;
  m.attr("DEFAULT_RCVBUF") = kDefaultReceiveBuffer;
  m.attr("STREAM_HEADER_SIZE") = mcast::kStreamHeaderSize;
  m.attr("MAX_BATCH") = kMaxBatch;

  py::class_<PyReceiver>(m, "Receiver")
      .def(py::init<const py::object&, int, const py::object&, const py::object&, const py::object&,
                    int, std::size_t, std::size_t, bool, int, bool>(),
           py::arg("groups"), py::arg("port") = mcast::kDefaultPort, py::arg("iface") = py::none(),
           py::arg("source") = py::none(), py::kw_only(), py::arg("bind") = py::none(),
           py::arg("rcvbuf") = kDefaultReceiveBuffer, py::arg("buffer_size") = 65536,
           py::arg("batch") = 64, py::arg("stats") = false, py::arg("ttl") = mcast::kDefaultTtl,
           py::arg("loop") = true)
      .def("recv", &PyReceiver::recv, py::arg("timeout") = py::none())
      .def("recv_many", &PyReceiver::recv_many, py::arg("max") = py::none(),
           py::arg("timeout") = py::none())
      .def("send_to", &PyReceiver::send_to, py::arg("host"), py::arg("port"), py::arg("data"))
      .def("stats", &PyReceiver::stats)
      .def("fileno", &PyReceiver::fileno)
      .def("close", &PyReceiver::close)
      .def_property_readonly("port", &PyReceiver::port)
      .def_property_readonly("family", &PyReceiver::family)
      .def_property_readonly("closed", &PyReceiver::closed)
      .def_property_readonly("received", &PyReceiver::received)
      .def_property_readonly("truncated", &PyReceiver::truncated)
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &PyReceiver::next)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyReceiver& r, py::args) {
        r.close();
        return false;
      });

  py::class_<PySender>(m, "Sender")
      .def(py::init<const std::string&, int, const py::object&, int, bool, const py::object&, int,
                    bool>(),
           py::arg("group") = mcast::kDefaultGroup, py::arg("port") = mcast::kDefaultPort,
           py::arg("iface") = py::none(), py::arg("ttl") = mcast::kDefaultTtl, py::kw_only(),
           py::arg("loop") = true, py::arg("bind") = py::none(), py::arg("bind_port") = 0,
           py::arg("gso") = false)
      .def("send", &PySender::send, py::arg("data"))
      .def("send_many", &PySender::send_many, py::arg("payloads"))
      .def("send_stream", &PySender::send_stream, py::arg("message") = py::bytes(),
           py::arg("count") = 1, py::arg("interval") = 0.0, py::arg("size") = py::none())
      .def("fileno", &PySender::fileno)
      .def("close", &PySender::close)
      .def_property_readonly("local", &PySender::local)
      .def_property_readonly("refused", &PySender::refused)
      .def_property_readonly("stream_id", &PySender::stream_id)
      .def_property_readonly("sequence", &PySender::sequence)
      .def_property_readonly("closed", &PySender::closed)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PySender& s, py::args) {
        s.close();
        return false;
      });

  m.def("decode_stream_header", &decode_header, py::arg("payload"));
  m.def("encode_stream_header", &encode_header, py::arg("stream"), py::arg("sequence"),
        py::arg("sent_ns") = py::none());
  m.def("open_joined_socket", &open_joined_socket, py::arg("groups"), py::arg("port"),
        py::arg("iface") = py::none(), py::arg("source") = py::none(), py::arg("bind") = py::none(),
        py::arg("rcvbuf") = 0);
}

}  // namespace flowmark::python
