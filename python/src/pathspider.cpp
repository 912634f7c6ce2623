// flowmark._flowmark.pathspider (see bindings.hpp): the core of flowmark.pathspider.Observer.
//
// pathspider's chain classes run in Python, called from one C++ chain (PythonChains) on
// flowmark's Observer: flowmark groups the packets into flows and runs the timers; the C++
// chain keeps each flow's record dict in its per-flow state and, for every packet, calls
// the chains' Python methods the way pathspider 2.0.1's Observer does (the order, the
// keyword `rev`, `keep_flow = keep_flow and fn(...)`: once one returns something falsy the
// rest of that packet's functions are not called and the flow completes).
//
// The packet objects (Ip, Tcp, Udp, Icmp, Payload, IPprefix) offer what python-libtrace's
// plt objects offer those chains, read on demand from a copy of the packet's IP bytes
// (shared by an Ip and the objects made from it: a chain may keep them). The copy covers
// the IP packet as its header states its length (at most what was captured): no Ethernet
// padding, unlike plt's layer 3 (see README "pathspider's Observer").
//
// The GIL is released while frames are read and decoded and taken for each Python call; a
// Python exception in a chain (KeyboardInterrupt included) stops the run and is raised from
// run(). Between batches the loop checks for signals and the interrupt queue; a live capture
// blocked waiting for frames is broken out of by SIGINT (a handler installed for the run
// when run() is called from the main thread) and by the interrupt queue (polled every
// 100 ms by a helper thread).
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bindings.hpp"
#include "flowmark/capture/capture.hpp"
#include "flowmark/observe/chain.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/packet.hpp"

namespace flowmark::python {
namespace {

using observe::FlowRecord;
using observe::PacketView;
using observe::Verdict;

using Bytes = std::shared_ptr<const std::vector<std::uint8_t>>;

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
std::uint32_t be32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) << 24 | static_cast<std::uint32_t>(p[1]) << 16 |
         static_cast<std::uint32_t>(p[2]) << 8 | p[3];
}

py::bytearray bytearray_of(const std::uint8_t* p, std::size_t n) {
  return py::reinterpret_steal<py::bytearray>(
      PyByteArray_FromStringAndSize(reinterpret_cast<const char*>(p), static_cast<Py_ssize_t>(n)));
}

// ---- packet objects ----------------------------------------------------------------------

// plt's ipp.IPprefix as the chains use it: str() is the address, .addr its bytes.
struct IpPrefix {
  std::array<std::uint8_t, 16> a{};
  std::uint8_t version = 4;
  std::size_t width() const { return version == 4 ? 4 : 16; }
  std::string str() const {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(version == 4 ? AF_INET : AF_INET6, a.data(), buf, sizeof buf);
    return buf;
  }
};

// Bytes from a transport header's end to the IP packet's end (plt's TransportObject).
// ip_off/ip_len/ip_version/proto: the IP packet it came from, for flowmark.pathspider's
// adapter that hands it to pldns as a python-libtrace object (pathspider's DNSChain).
struct Payload {
  Bytes buf;
  std::size_t off = 0, len = 0;
  std::size_t ip_off = 0, ip_len = 0;
  std::uint8_t ip_version = 4, proto = 0;
  const std::uint8_t* p() const { return buf->data() + off; }
};

// A transport header (TCP, UDP, ICMP / ICMPv6) and everything after it in the IP packet.
struct Transport {
  Bytes buf;
  std::size_t off = 0, len = 0;  // of the header, to the IP packet's end
  double seconds = 0;
  std::uint8_t ip_version = 4;
  std::uint8_t proto = 0;
  std::size_t ip_off = 0, ip_len = 0;  // the IP packet it belongs to
  const std::uint8_t* p() const { return buf->data() + off; }
  // The 16-bit field at byte i, or None when the capture ends before it.
  py::object u16(std::size_t i) const {
    return i + 2 <= len ? py::object(py::int_(be16(p() + i))) : py::object(py::none());
  }
  py::object u32(std::size_t i) const {
    return i + 4 <= len ? py::object(py::int_(be32(p() + i))) : py::object(py::none());
  }
  py::object u8(std::size_t i) const {
    return i < len ? py::object(py::int_(p()[i])) : py::object(py::none());
  }
  py::object data() const { return bytearray_of(p(), len); }
  // plt's payload: None when nothing follows the header.
  py::object payload_after(std::size_t header) const {
    if (header >= len) return py::none();
    return py::cast(Payload{buf, off + header, len - header, ip_off, ip_len, ip_version, proto});
  }
};

struct Tcp : Transport {
  std::uint8_t flags() const { return len > 13 ? p()[13] : 0; }
  bool flag(std::uint8_t bit) const { return (flags() & bit) != 0; }
  std::size_t header() const { return len > 12 ? (p()[12] >> 4) * 4u : 20u; }
};
struct Udp : Transport {};
struct Icmp;

// An IPv4 or IPv6 packet (plt's ip / ip6): the outer packet of a frame or an ICMP quote.
struct Ip {
  Bytes buf;
  std::size_t off = 0, len = 0;  // of the IP header, to the packet's end
  std::size_t l4 = 0;            // transport header from off (0: none)
  std::uint8_t version = 4;
  std::uint8_t proto = 0;
  double seconds = 0;
  py::object tcp_, udp_, icmp_;  // made on first use

  const std::uint8_t* p() const { return buf->data() + off; }
  std::size_t header_len() const { return version == 4 ? (p()[0] & 15u) * 4 : 40; }
  std::uint8_t traffic_class() const {
    return version == 4 ? p()[1] : static_cast<std::uint8_t>((p()[0] & 15) << 4 | p()[1] >> 4);
  }
  std::uint8_t ttl() const { return version == 4 ? p()[8] : p()[7]; }
  IpPrefix prefix(bool src) const {
    IpPrefix x;
    x.version = version;
    const std::size_t at = version == 4 ? (src ? 12 : 16) : (src ? 8 : 24);
    std::memcpy(x.a.data(), p() + at, x.width());
    return x;
  }
  template <typename T>
  T transport() const {
    T t;
    t.buf = buf;
    t.off = off + l4;
    t.len = len - l4;
    t.seconds = seconds;
    t.ip_version = version;
    t.proto = proto;
    t.ip_off = off;
    t.ip_len = len;
    return t;
  }
  py::object tcp() {
    if (!tcp_) {
      tcp_ = (l4 != 0 && proto == observe::kProtoTcp && len >= l4 + 4) ? py::cast(transport<Tcp>())
                                                                       : py::object(py::none());
    }
    return tcp_;
  }
  py::object udp() {
    if (!udp_) {
      udp_ = (l4 != 0 && proto == observe::kProtoUdp && len >= l4 + 4) ? py::cast(transport<Udp>())
                                                                       : py::object(py::none());
    }
    return udp_;
  }
  py::object icmp(std::uint8_t want);
};

struct Icmp : Transport {
  // The quoted packet of an error message (ICMP 3 4 5 11 12, ICMPv6 1 2 3 4) as an Ip, or
  // the bytes after the 8-byte header for other messages; None when there is none.
  py::object payload() const {
    if (len <= 8) return py::none();
    const std::uint8_t type = p()[0];
    const bool error = ip_version == 4
                           ? (type == 3 || type == 4 || type == 5 || type == 11 || type == 12)
                           : (type >= 1 && type <= 4);
    if (!error) return bytearray_of(p() + 8, len - 8);
    const std::uint8_t* q = p() + 8;
    const std::size_t qn = len - 8;
    Ip ip;
    ip.buf = buf;
    ip.off = off + 8;
    ip.seconds = seconds;
    ip.version = ip_version;
    if (ip_version == 4) {
      if (qn < 20 || (q[0] >> 4) != 4 || (q[0] & 15) < 5) return py::none();
      ip.len = std::min<std::size_t>(qn, std::max<std::size_t>(be16(q + 2), 20));
      ip.proto = q[9];
      const std::size_t hl = (q[0] & 15u) * 4;
      const bool first_fragment = (be16(q + 6) & 0x1fff) == 0;
      if (first_fragment && hl < ip.len) ip.l4 = hl;
    } else {
      if (qn < 40 || (q[0] >> 4) != 6) return py::none();
      ip.len = std::min<std::size_t>(qn, 40 + static_cast<std::size_t>(be16(q + 4)));
      ip.proto = q[6];
      if (ip.len > 40) ip.l4 = 40;
    }
    return py::cast(std::move(ip));
  }
};

py::object Ip::icmp(std::uint8_t want) {
  if (want != (version == 4 ? observe::kProtoIcmp : observe::kProtoIcmpv6)) return py::none();
  if (!icmp_) {
    icmp_ = (l4 != 0 && proto == want && len >= l4 + 4) ? py::cast(transport<Icmp>())
                                                        : py::object(py::none());
  }
  return icmp_;
}

// ---- the chain that runs the Python chains -------------------------------------------------

// The chains' bound methods by hook, as pathspider's Observer._get_chains finds them.
struct Hooks {
  std::vector<py::object> new_flow, ip4, ip6, icmp4, icmp6, tcp, udp;
  std::vector<py::object> none;  // for other protocols
};

class PythonChains final : public observe::Chain {
 public:
  explicit PythonChains(Hooks hooks) : hooks_(std::move(hooks)) {
    rev_name_ = py::make_tuple("rev");
    pkt_first_ = py::str("pkt_first");
    pkt_last_ = py::str("pkt_last");
  }
  ~PythonChains() override {
    py::gil_scoped_acquire gil;
    hooks_ = Hooks{};
    ip_ = py::object();
    rev_name_ = py::tuple();
    pkt_first_ = py::str();
    pkt_last_ = py::str();
  }

  std::string_view name() const noexcept override { return "python"; }
  std::size_t state_size() const noexcept override { return sizeof(PyObject*); }
  unsigned hooks() const noexcept override {
    return observe::kHookNewFlow | observe::kHookIp | observe::kHookTcp | observe::kHookUdp;
  }
  std::vector<std::string> columns() const override { return {}; }
  void write(const FlowRecord&, const std::byte*, observe::FieldWriter&) const override {}

  // The frame on_packet() is given next (the bytes the packet objects are copied from).
  void next_frame(std::span<const std::byte> frame, std::int64_t ts_ns) {
    frame_ = frame;
    seconds_ = static_cast<double>(ts_ns) / 1e9;
    ++seq_;
  }
  bool failed() const { return error_.has_value(); }
  // rec["pkt_last"] = the record's last packet time (seconds), GIL held.
  void set_last(const py::dict& rec, const FlowRecord& r) { set_time(rec, pkt_last_, r.last); }
  static void set_time(const py::dict& rec, const py::str& key, observe::Nanos t) {
    py::float_ v(static_cast<double>(t) / 1e9);
    if (PyDict_SetItem(rec.ptr(), key.ptr(), v.ptr()) != 0) throw py::error_already_set();
  }
  // The first Python exception a chain raised (then no chain is called any more).
  std::optional<py::error_already_set> take_error() {
    auto e = std::move(error_);
    error_.reset();
    return e;
  }

  bool new_flow(FlowRecord& r, std::byte* state, const PacketView& p) noexcept override {
    py::gil_scoped_acquire gil;
    if (failed()) return false;
    try {
      py::dict rec;
      set_time(rec, pkt_first_, r.first);
      py::object ip = packet(p);
      for (const py::object& fn : hooks_.new_flow) {
        if (!call(fn, rec, ip)) return false;  // vetoed: the flow is ignored
      }
      set_last(rec, r);
      *reinterpret_cast<PyObject**>(state) = rec.release().ptr();
      return true;
    } catch (py::error_already_set& e) {
      error_ = std::move(e);
    } catch (const std::exception& e) {
      error_ = python_error(e);
    }
    return false;
  }

  Verdict on_ip(FlowRecord& r, std::byte* state, const PacketView& p, bool rev) noexcept override {
    keep_ = true;
    const bool v4 = p.ip_version == 4;
    const auto& ip_fns = v4 ? hooks_.ip4 : hooks_.ip6;
    const auto& icmp_fns = v4 ? hooks_.icmp4 : hooks_.icmp6;
    const std::uint8_t icmp_proto = v4 ? observe::kProtoIcmp : observe::kProtoIcmpv6;
    const bool is_icmp = p.proto == icmp_proto && !(p.is_fragment && p.frag_offset != 0);
    const auto& l4_fns = p.proto == observe::kProtoTcp   ? hooks_.tcp
                         : p.proto == observe::kProtoUdp ? hooks_.udp
                                                         : hooks_.none;
    // Nothing of this packet for Python: pkt_last is written when the record is emitted.
    if (ip_fns.empty() && (icmp_fns.empty() || !is_icmp) && l4_fns.empty())
      return Verdict::kContinue;
    if (*reinterpret_cast<PyObject**>(state) == nullptr) return Verdict::kContinue;
    py::gil_scoped_acquire gil;
    if (failed()) return Verdict::kContinue;
    try {
      auto rec = py::reinterpret_borrow<py::dict>(*reinterpret_cast<PyObject**>(state));
      set_last(rec, r);
      if (ip_fns.empty() && (icmp_fns.empty() || !is_icmp)) return Verdict::kContinue;
      py::object ip = packet(p);
      for (const py::object& fn : ip_fns) {
        if (!keep_) break;
        keep_ = call(fn, rec, ip, rev);
      }
      if (is_icmp && !icmp_fns.empty()) {
        Ip& obj = ip.cast<Ip&>();
        py::object icmp = obj.icmp(icmp_proto);
        if (!icmp.is_none()) {
          for (const py::object& fn : icmp_fns) {
            if (!keep_) break;
            py::object q = icmp.cast<const Icmp&>().payload();  // pathspider: icmp.payload
            keep_ = call(fn, rec, ip, q, rev);
          }
        }
      }
    } catch (py::error_already_set& e) {
      error_ = std::move(e);
    } catch (const std::exception& e) {
      error_ = python_error(e);
    }
    return keep_ ? Verdict::kContinue : Verdict::kComplete;
  }

  Verdict on_transport(FlowRecord&, std::byte* state, const PacketView& p,
                       bool rev) noexcept override {
    const bool is_tcp = p.proto == observe::kProtoTcp;
    const auto& fns = is_tcp ? hooks_.tcp : hooks_.udp;
    if (fns.empty() || !keep_) return keep_ ? Verdict::kContinue : Verdict::kComplete;
    if (*reinterpret_cast<PyObject**>(state) == nullptr) return Verdict::kContinue;
    py::gil_scoped_acquire gil;
    if (failed()) return Verdict::kContinue;
    try {
      auto rec = py::reinterpret_borrow<py::dict>(*reinterpret_cast<PyObject**>(state));
      py::object ip = packet(p);
      Ip& obj = ip.cast<Ip&>();
      py::object hdr = is_tcp ? obj.tcp() : obj.udp();
      if (!hdr.is_none()) {
        for (const py::object& fn : fns) {
          if (!keep_) break;
          keep_ = call(fn, rec, hdr, rev);
        }
      }
    } catch (py::error_already_set& e) {
      error_ = std::move(e);
    } catch (const std::exception& e) {
      error_ = python_error(e);
    }
    return keep_ ? Verdict::kContinue : Verdict::kComplete;
  }

 private:
  static py::error_already_set python_error(const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return py::error_already_set();
  }

  // The Ip object of the packet being handled (made once per packet, GIL held).
  py::object packet(const PacketView& p) {
    if (ip_ && ip_seq_ == seq_) return ip_;
    const auto* frame = reinterpret_cast<const std::uint8_t*>(frame_.data());
    std::size_t avail = frame_.size() > p.ip_offset ? frame_.size() - p.ip_offset : 0;
    std::size_t n = avail;
    if (p.ip_length != 0) n = std::min<std::size_t>(avail, p.ip_length);
    Ip ip;
    ip.buf = std::make_shared<const std::vector<std::uint8_t>>(frame + p.ip_offset,
                                                               frame + p.ip_offset + n);
    ip.len = n;
    ip.version = p.ip_version;
    ip.proto = p.proto;
    ip.seconds = seconds_;
    if (p.l4_offset > p.ip_offset && p.l4_offset - p.ip_offset < n)
      ip.l4 = p.l4_offset - p.ip_offset;
    ip_ = py::cast(std::move(ip));
    ip_seq_ = seq_;
    return ip_;
  }

  // fn(args..., rev=rev) with pathspider's truth test of the result.
  template <typename... A>
  bool call(const py::object& fn, A&&... a) {
    return truthy(vcall(fn, std::forward<A>(a)...));
  }
  py::object vcall(const py::object& fn, const py::dict& rec, const py::object& ip) {
    PyObject* args[] = {rec.ptr(), ip.ptr()};
    return steal(PyObject_Vectorcall(fn.ptr(), args, 2, nullptr));
  }
  py::object vcall(const py::object& fn, const py::dict& rec, const py::object& x, bool rev) {
    PyObject* args[] = {rec.ptr(), x.ptr(), rev ? Py_True : Py_False};
    return steal(PyObject_Vectorcall(fn.ptr(), args, 2, rev_name_.ptr()));
  }
  py::object vcall(const py::object& fn, const py::dict& rec, const py::object& ip,
                   const py::object& q, bool rev) {
    PyObject* args[] = {rec.ptr(), ip.ptr(), q.ptr(), rev ? Py_True : Py_False};
    return steal(PyObject_Vectorcall(fn.ptr(), args, 3, rev_name_.ptr()));
  }
  static py::object steal(PyObject* o) {
    if (o == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(o);
  }
  static bool truthy(const py::object& o) {
    const int t = PyObject_IsTrue(o.ptr());
    if (t < 0) throw py::error_already_set();
    return t != 0;
  }

  Hooks hooks_;
  py::tuple rev_name_;
  py::str pkt_first_, pkt_last_;
  std::span<const std::byte> frame_;
  double seconds_ = 0;
  std::uint64_t seq_ = 0, ip_seq_ = 0;
  py::object ip_;
  bool keep_ = true;
  std::optional<py::error_already_set> error_;
};

// ---- the observer -------------------------------------------------------------------------

// The capture a SIGINT handler breaks out of (one run at a time per process).
std::atomic<capture::Capture*> g_sigint_capture{nullptr};
struct sigaction g_old_sigint {};
void on_sigint(int sig) {
  if (auto* c = g_sigint_capture.load()) c->break_loop();
  // Python's own handler notes the signal: KeyboardInterrupt once the loop checks.
  if (g_old_sigint.sa_flags & SA_SIGINFO) {
    if (g_old_sigint.sa_sigaction != nullptr) g_old_sigint.sa_sigaction(sig, nullptr, nullptr);
  } else if (g_old_sigint.sa_handler != SIG_DFL && g_old_sigint.sa_handler != SIG_IGN) {
    g_old_sigint.sa_handler(sig);
  }
}

class PathspiderObserver {
 public:
  PathspiderObserver(const std::string& kind, const std::string& where, Hooks hooks,
                     double idle_timeout, double expiry_timeout) {
    if (kind == "file") {
      // A regular file is read with read(2) (no page-table work per page of a mapping,
      // as `flowmark observe` with one worker); a batch's frames are used before the next.
      struct stat st {};
      auto cap = ::stat(where.c_str(), &st) == 0 && S_ISREG(st.st_mode)
                     ? capture::open_read_file(where)
                     : capture::open_file_capture(where);
      if (!cap) throw std::runtime_error(cap.error().message());
      capture_ = std::move(*cap);
    } else if (kind == "live" || kind == "pcapint") {
      auto cap = capture::open_live_capture(
          where, "",
          kind == "live" ? capture::LiveBackend::kAfPacket : capture::LiveBackend::kPcap);
      if (!cap) throw std::runtime_error(cap.error().message());
      capture_ = std::move(*cap);
      live_ = true;
    } else {
      throw std::invalid_argument("unknown capture kind '" + kind + "'");
    }
    observe::ObserverConfig config;
    config.idle_timeout_ns = static_cast<observe::Nanos>(idle_timeout * 1e9);
    config.expiry_delay_ns = static_cast<observe::Nanos>(expiry_timeout * 1e9);
    config.active_timeout_ns = 0;  // pathspider has none; a split would reuse the dict
    observer_ =
        std::make_unique<observe::Observer>(config, [this](const FlowRecord& r) { on_record(r); });
    auto chain = std::make_unique<PythonChains>(std::move(hooks));
    chain_ = chain.get();
    observer_->add_chain(std::move(chain));
  }

  ~PathspiderObserver() {
    // Flows still held own a reference to their dict: hand them over and drop them.
    if (observer_) {
      py::gil_scoped_release nogil;
      observer_->finish();
      observer_.reset();
    }
    pending_.clear();
  }

  // Reads the capture to its end (or an interrupt), calling put(record) for each record as
  // it is emitted, then emits every flow still held. Returns True when interrupted by irq.
  bool run(const py::object& put, const py::object& irqueue) {
    // Only where Ctrl-C is Python's KeyboardInterrupt: a program with its own SIGINT
    // handler (or none) decides for itself.
    auto threading = py::module_::import("threading");
    auto signal = py::module_::import("signal");
    const bool ctrl_c_interrupts =
        threading.attr("current_thread")().is(threading.attr("main_thread")()) &&
        signal.attr("getsignal")(signal.attr("SIGINT")).is(signal.attr("default_int_handler"));
    SigintGuard sigint(live_ && ctrl_c_interrupts ? capture_.get() : nullptr);
    IrqWatcher watcher(live_ && !irqueue.is_none() ? capture_.get() : nullptr, irqueue);
    std::array<observe::FrameRef, 64> batch;
    bool interrupted = false;
    while (true) {
      std::size_t n = 0;
      std::optional<std::string> read_error;
      {
        py::gil_scoped_release nogil;
        observe::LinkType link{};
        auto got = capture_->next_batch(batch, link);
        if (!got) {
          read_error = got.error().message();
        } else {
          n = *got;
          for (std::size_t i = 0; i < n && !chain_->failed(); ++i) {
            chain_->next_frame(batch[i].frame, batch[i].ts_ns);
            observer_->on_packet(batch[i].ts_ns, link, batch[i].frame);
          }
        }
      }
      if (auto e = chain_->take_error()) {
        throw std::move(*e);
      }
      drain(put);
      if (read_error) throw std::runtime_error(*read_error);
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (watcher.fired() || (!irqueue.is_none() && irq_fired(irqueue))) {
        interrupted = true;
        break;
      }
      if (n == 0) break;
    }
    flush();
    drain(put);
    return interrupted;
  }

  // Every flow held is emitted (completed ones first, then active ones), as pathspider's
  // flush() does; the records wait for the next run().
  void flush() {
    {
      py::gil_scoped_release nogil;
      observer_->finish();
    }
    if (auto e = chain_->take_error()) throw std::move(*e);
  }

  py::dict stats() const {
    const auto& s = observer_->stats();
    py::dict d;
    d["packets"] = s.packets;
    d["non_ip"] = s.non_ip;
    d["short"] = s.short_packets;
    d["flows"] = s.flows;
    d["ignored"] = s.ignored;
    d["ignored_packets"] = s.ignored_packets;
    d["emitted"] = s.emitted;
    d["late_packets"] = s.late_packets;
    d["drops"] =
        capture_->drops() ? py::object(py::int_(*capture_->drops())) : py::object(py::none());
    return d;
  }

  std::size_t pending() const { return pending_.size(); }

 private:
  // The sink (GIL not held): the record's dict leaves the flow's state for pending_.
  void on_record(const FlowRecord& r) {
    auto* state = const_cast<std::byte*>(observer_->chain_state(r, 0));
    if (state == nullptr) return;
    PyObject* rec = *reinterpret_cast<PyObject**>(state);
    *reinterpret_cast<PyObject**>(state) = nullptr;
    if (rec == nullptr) return;
    py::gil_scoped_acquire gil;
    auto dict = py::reinterpret_steal<py::dict>(rec);
    try {
      chain_->set_last(dict, r);
    } catch (py::error_already_set&) {
      PyErr_Clear();
    }
    pending_.push_back(std::move(dict));
  }

  void drain(const py::object& put) {
    while (!pending_.empty()) {
      py::object rec = std::move(pending_.front());
      pending_.pop_front();
      put(rec);
    }
  }

  static bool irq_fired(const py::object& irqueue) {
    try {
      irqueue.attr("get_nowait")();
      return true;
    } catch (py::error_already_set& e) {
      if (e.matches(py::module_::import("queue").attr("Empty"))) return false;
      throw;
    }
  }

  // SIGINT breaks a live capture's wait; the previous handler runs too (Python's: it notes
  // the signal, KeyboardInterrupt follows at the next check).
  class SigintGuard {
   public:
    explicit SigintGuard(capture::Capture* cap) : cap_(cap) {
      if (cap_ == nullptr) return;
      g_sigint_capture.store(cap_);
      struct sigaction sa {};
      sa.sa_handler = on_sigint;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGINT, &sa, &g_old_sigint);
      installed_ = true;
    }
    ~SigintGuard() {
      if (!installed_) return;
      sigaction(SIGINT, &g_old_sigint, nullptr);
      g_sigint_capture.store(nullptr);
    }

   private:
    capture::Capture* cap_;
    bool installed_ = false;
  };

  // Polls the interrupt queue every 100 ms while a live capture waits for frames.
  class IrqWatcher {
   public:
    IrqWatcher(capture::Capture* cap, py::object irqueue) : cap_(cap), irq_(std::move(irqueue)) {
      if (cap_ == nullptr) return;
      thread_ = std::thread([this] { loop(); });
    }
    ~IrqWatcher() {
      if (!thread_.joinable()) return;
      {
        std::lock_guard lock(mu_);
        stop_ = true;
      }
      cv_.notify_all();
      py::gil_scoped_release nogil;
      thread_.join();
    }
    bool fired() const { return fired_.load(); }

   private:
    void loop() {
      std::unique_lock lock(mu_);
      while (!stop_) {
        cv_.wait_for(lock, std::chrono::milliseconds(100));
        if (stop_) break;
        lock.unlock();
        bool got = false;
        {
          py::gil_scoped_acquire gil;
          try {
            got = irq_fired(irq_);
          } catch (py::error_already_set&) {
            got = false;
          }
        }
        lock.lock();
        if (got) {
          fired_ = true;
          cap_->break_loop();
          break;
        }
      }
    }
    capture::Capture* cap_;
    py::object irq_;
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    std::atomic<bool> fired_{false};
  };

  std::unique_ptr<capture::Capture> capture_;
  std::unique_ptr<observe::Observer> observer_;
  PythonChains* chain_ = nullptr;
  std::deque<py::object> pending_;
  bool live_ = false;
};

std::vector<py::object> as_vector(const py::iterable& fns) {
  std::vector<py::object> v;
  for (auto fn : fns) v.push_back(py::reinterpret_borrow<py::object>(fn));
  return v;
}

}  // namespace

void bind_pathspider(py::module_& m) {
  py::class_<IpPrefix>(m, "IPprefix", "An address as python-libtrace's ipp.IPprefix")
      .def_property_readonly("addr",
                             [](const IpPrefix& x) { return bytearray_of(x.a.data(), x.width()); })
      .def_property_readonly("version", [](const IpPrefix& x) { return x.version; })
      .def_property_readonly("length", [](const IpPrefix& x) { return x.width() * 8; })
      .def("__str__", &IpPrefix::str)
      .def("__repr__", [](const IpPrefix& x) { return "IPprefix('" + x.str() + "')"; })
      .def("__eq__", [](const IpPrefix& a,
                        const IpPrefix& b) { return a.version == b.version && a.a == b.a; })
      .def("__hash__", [](const IpPrefix& x) {
        return py::hash(py::bytes(reinterpret_cast<const char*>(x.a.data()), x.width()));
      });

  py::class_<Payload>(m, "Payload", "What follows a transport header (plt's TransportObject)")
      .def_property_readonly("data", [](const Payload& x) { return bytearray_of(x.p(), x.len); })
      .def_property_readonly("size", [](const Payload& x) { return x.len; })
      .def("__len__", [](const Payload& x) { return x.len; })
      .def_property_readonly(
          "_ip_bytes",
          [](const Payload& x) {
            return py::bytes(reinterpret_cast<const char*>(x.buf->data() + x.ip_off), x.ip_len);
          })
      .def_property_readonly("_ip_version", [](const Payload& x) { return x.ip_version; })
      .def_property_readonly("_proto", [](const Payload& x) { return x.proto; })
      .def("__bytes__",
           [](const Payload& x) { return py::bytes(reinterpret_cast<const char*>(x.p()), x.len); });

  py::class_<Tcp>(m, "Tcp", "A TCP segment (plt's tcp)")
      .def_property_readonly("src_port", [](const Tcp& t) { return t.u16(0); })
      .def_property_readonly("dst_port", [](const Tcp& t) { return t.u16(2); })
      .def_property_readonly("seq_nbr", [](const Tcp& t) { return t.u32(4); })
      .def_property_readonly("ack_nbr", [](const Tcp& t) { return t.u32(8); })
      .def_property_readonly("doff", [](const Tcp& t) { return t.header() / 4; })
      .def_property_readonly("hdr_len", [](const Tcp& t) { return t.header() / 4; })
      .def_property_readonly("flags", [](const Tcp& t) { return t.flags(); })
      .def_property_readonly("fin_flag", [](const Tcp& t) { return t.flag(0x01); })
      .def_property_readonly("syn_flag", [](const Tcp& t) { return t.flag(0x02); })
      .def_property_readonly("rst_flag", [](const Tcp& t) { return t.flag(0x04); })
      .def_property_readonly("psh_flag", [](const Tcp& t) { return t.flag(0x08); })
      .def_property_readonly("ack_flag", [](const Tcp& t) { return t.flag(0x10); })
      .def_property_readonly("urg_flag", [](const Tcp& t) { return t.flag(0x20); })
      .def_property_readonly("ece_flag", [](const Tcp& t) { return t.flag(0x40); })
      .def_property_readonly("cwr_flag", [](const Tcp& t) { return t.flag(0x80); })
      .def_property_readonly("window", [](const Tcp& t) { return t.u16(14); })
      .def_property_readonly("checksum", [](const Tcp& t) { return t.u16(16); })
      .def_property_readonly("urg_ptr", [](const Tcp& t) { return t.u16(18); })
      .def_property_readonly("size", [](const Tcp& t) { return t.len; })
      .def_property_readonly("seconds", [](const Tcp& t) { return t.seconds; })
      .def_property_readonly("data", &Tcp::data)
      .def_property_readonly("payload", [](const Tcp& t) { return t.payload_after(t.header()); });

  py::class_<Udp>(m, "Udp", "A UDP datagram (plt's udp)")
      .def_property_readonly("src_port", [](const Udp& u) { return u.u16(0); })
      .def_property_readonly("dst_port", [](const Udp& u) { return u.u16(2); })
      .def_property_readonly("len", [](const Udp& u) { return u.u16(4); })
      .def_property_readonly("checksum", [](const Udp& u) { return u.u16(6); })
      .def_property_readonly("size", [](const Udp& u) { return u.len; })
      .def_property_readonly("seconds", [](const Udp& u) { return u.seconds; })
      .def_property_readonly("data", &Udp::data)
      .def_property_readonly("payload", [](const Udp& u) { return u.payload_after(8); });

  py::class_<Icmp>(m, "Icmp", "An ICMP or ICMPv6 message (plt's icmp)")
      .def_property_readonly("type", [](const Icmp& i) { return i.u8(0); })
      .def_property_readonly("code", [](const Icmp& i) { return i.u8(1); })
      .def_property_readonly("checksum", [](const Icmp& i) { return i.u16(2); })
      .def_property_readonly("size", [](const Icmp& i) { return i.len; })
      .def_property_readonly("seconds", [](const Icmp& i) { return i.seconds; })
      .def_property_readonly("data", &Icmp::data)
      .def_property_readonly("payload", &Icmp::payload);

  auto v4 = [](const Ip& ip, auto f) -> py::object {
    if (ip.version != 4) return py::none();
    return py::int_(f(ip.p()));
  };
  auto v6 = [](const Ip& ip, auto f) -> py::object {
    if (ip.version != 6) return py::none();
    return py::int_(f(ip.p()));
  };
  py::class_<Ip>(m, "Ip", "An IPv4 or IPv6 packet (plt's ip / ip6)")
      .def_property_readonly("version", [](const Ip& ip) { return ip.version; })
      .def_property_readonly("proto", [](const Ip& ip) { return ip.proto; })
      .def_property_readonly("size", [](const Ip& ip) { return ip.len; })
      .def_property_readonly("seconds", [](const Ip& ip) { return ip.seconds; })
      .def_property_readonly("traffic_class", &Ip::traffic_class)
      .def_property_readonly("ttl", &Ip::ttl)
      .def_property_readonly("hop_limit", &Ip::ttl)
      .def_property_readonly("src_prefix", [](const Ip& ip) { return ip.prefix(true); })
      .def_property_readonly("dst_prefix", [](const Ip& ip) { return ip.prefix(false); })
      .def_property_readonly("data", [](const Ip& ip) { return bytearray_of(ip.p(), ip.len); })
      .def_property_readonly("payload",
                             [](const Ip& ip) {
                               const std::size_t h = ip.l4 != 0 ? ip.l4 : ip.header_len();
                               return h < ip.len ? bytearray_of(ip.p() + h, ip.len - h)
                                                 : bytearray_of(ip.p(), 0);
                             })
      .def_property_readonly(
          "hdr_len", [v4](const Ip& ip) { return v4(ip, [](auto b) { return b[0] & 15; }); })
      .def_property_readonly(
          "pkt_len", [v4](const Ip& ip) { return v4(ip, [](auto b) { return be16(b + 2); }); })
      .def_property_readonly(
          "ident", [v4](const Ip& ip) { return v4(ip, [](auto b) { return be16(b + 4); }); })
      .def_property_readonly("has_rf",
                             [](const Ip& ip) { return ip.version == 4 && (ip.p()[6] & 0x80); })
      .def_property_readonly("has_df",
                             [](const Ip& ip) { return ip.version == 4 && (ip.p()[6] & 0x40); })
      .def_property_readonly("has_mf",
                             [](const Ip& ip) { return ip.version == 4 && (ip.p()[6] & 0x20); })
      .def_property_readonly(
          "frag_offset",
          [v4](const Ip& ip) { return v4(ip, [](auto b) { return be16(b + 6) & 0x1fff; }); })
      .def_property_readonly(
          "checksum", [v4](const Ip& ip) { return v4(ip, [](auto b) { return be16(b + 10); }); })
      .def_property_readonly(
          "flow_label",
          [v6](const Ip& ip) { return v6(ip, [](auto b) { return be32(b) & 0xfffff; }); })
      .def_property_readonly(
          "payload_len", [v6](const Ip& ip) { return v6(ip, [](auto b) { return be16(b + 4); }); })
      .def_property_readonly("next_hdr",
                             [v6](const Ip& ip) { return v6(ip, [](auto b) { return b[6]; }); })
      .def_property_readonly("tcp", &Ip::tcp)
      .def_property_readonly("udp", &Ip::udp)
      .def_property_readonly("icmp", [](Ip& ip) { return ip.icmp(observe::kProtoIcmp); })
      .def_property_readonly("icmp6", [](Ip& ip) { return ip.icmp(observe::kProtoIcmpv6); })
      .def("__repr__", [](const Ip& ip) {
        return "<flowmark.pathspider.Ip v" + std::to_string(ip.version) + " " +
               ip.prefix(true).str() + " > " + ip.prefix(false).str() + " proto " +
               std::to_string(ip.proto) + ">";
      });

  py::class_<PathspiderObserver>(m, "_Observer")
      .def(py::init([](const std::string& kind, const std::string& where, py::dict hooks,
                       double idle_timeout, double expiry_timeout) {
             Hooks h;
             auto get = [&](const char* name) {
               return hooks.contains(name) ? as_vector(hooks[name]) : std::vector<py::object>{};
             };
             h.new_flow = get("new_flow");
             h.ip4 = get("ip4");
             h.ip6 = get("ip6");
             h.icmp4 = get("icmp4");
             h.icmp6 = get("icmp6");
             h.tcp = get("tcp");
             h.udp = get("udp");
             return std::make_unique<PathspiderObserver>(kind, where, std::move(h), idle_timeout,
                                                         expiry_timeout);
           }),
           py::arg("kind"), py::arg("where"), py::arg("hooks"), py::arg("idle_timeout"),
           py::arg("expiry_timeout"))
      .def("run", &PathspiderObserver::run, py::arg("put"), py::arg("irqueue") = py::none())
      .def("flush", &PathspiderObserver::flush)
      .def("stats", &PathspiderObserver::stats)
      .def("pending", &PathspiderObserver::pending);
}

}  // namespace flowmark::python
