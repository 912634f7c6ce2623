// flowmark._flowmark.scitags (see bindings.hpp): the Scitags codecs of the C++ library —
// fireflies (firefly.hpp), flow labels (flow_label.hpp), the registry (registry.hpp), pipe
// lines (pipe_line.hpp) and the firefly sender (firefly_sender.hpp). python/flowmark/scitags.py
// turns these into the public API (dicts, named tuples, Announcer, Sender); the functions here
// take and return plain Python values.
//
// Errors: a flowmark::Error becomes OSError (with its errno) when it carries one, LookupError
// for an unknown name (Errc::kNotFound) and ValueError otherwise; firefly rejections are
// returned as (reason, detail) so the Python side can raise FireflyError with both.
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "flowmark/core/address.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/net/resolve.hpp"
#include "flowmark/scitags/firefly.hpp"
#include "flowmark/scitags/firefly_sender.hpp"
#include "flowmark/scitags/flow_label.hpp"
#include "flowmark/scitags/pipe_line.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::python {
namespace {

using scitags::Firefly;
using scitags::FireflyDecoder;
using scitags::FireflyEncoder;
using scitags::FlowEvent;
using scitags::Registry;

// Raises the Python exception for `e` (see the banner). `io`: a failure to fetch or read
// (kNotFound of an HTTP 404, kRefused, kTruncated) is an OSError, not a lookup or value error.
[[noreturn]] void raise_error(const Error& e, bool io = false) {
  const std::error_code& c = e.code();
  if (c.category() == std::generic_category() || c.category() == std::system_category()) {
    py::object args = py::make_tuple(c.value(), e.message());
    PyErr_SetObject(PyExc_OSError, args.ptr());  // OSError picks the errno's subclass
    throw py::error_already_set();
  }
  if (io && (c == Errc::kNotFound || c == Errc::kRefused || c == Errc::kTruncated)) {
    PyErr_SetString(PyExc_OSError, e.message().c_str());
    throw py::error_already_set();
  }
  if (c == Errc::kNotFound) {
    PyErr_SetString(PyExc_LookupError, e.message().c_str());
    throw py::error_already_set();
  }
  if (c == Errc::kRefused) {
    PyErr_SetString(PyExc_OSError, e.message().c_str());
    throw py::error_already_set();
  }
  throw py::value_error(e.message());
}

template <typename T>
T value_or_raise(Result<T> r, bool io = false) {
  if (!r) raise_error(r.error(), io);
  return std::move(*r);
}

// One decoder per mode, used under the GIL (decoding a firefly is microseconds of work). Never
// destroyed: the interpreter may outlive static destructors' order.
FireflyDecoder& decoder(bool lenient) {
  static FireflyDecoder* strict = new FireflyDecoder({.lenient_start_time = false});
  static FireflyDecoder* loose = new FireflyDecoder({.lenient_start_time = true});
  return lenient ? *loose : *strict;
}

std::optional<std::string> time_text(Micros t) {
  if (t <= 0) return std::nullopt;
  char buf[kRfc3339MicrosSize];
  format_rfc3339_micros(buf, t);
  return std::string(buf, kRfc3339MicrosSize);
}

py::object rejection(const scitags::Rejection& r) {
  return py::make_tuple(std::string(scitags::to_string(r.reason)), r.detail);
}

// decode_firefly(data, lenient) -> (document JSON text, header dict or None) | (reason, detail)
// The first element tells which: a str starting with '{' is the document.
py::tuple decode_firefly(std::string_view data, bool lenient) {
  auto f = decoder(lenient).decode(data);
  if (!f) return rejection(f.error());
  const Firefly& ff = **f;
  std::string json;
  scitags::append_firefly_json(json, ff);
  py::object header = py::none();
  if (ff.has_header) {
    py::dict h;
    h["hostname"] = ff.hostname.empty() ? py::object(py::none()) : py::str(ff.hostname);
    h["app-name"] = ff.app_name.empty() ? py::object(py::none()) : py::str(ff.app_name);
    h["timestamp"] = py::cast(time_text(ff.header_time));
    header = std::move(h);
  }
  return py::make_tuple(json, header);
}

// encode_firefly(document JSON, header, hostname, app_name, now_us) -> bytes | (reason, detail)
// The document is checked by the decoder (so every rule and message is the codec's), printed
// back in the canonical form (`flowmark firefly decode`'s), and given the syslog header the
// encoder writes for the same event.
py::object encode_firefly(std::string_view document, bool header, const std::string& hostname,
                          const std::string& app_name, Micros now) {
  auto f = decoder(false).decode(document);
  if (!f) return rejection(f.error());
  const Firefly& ff = **f;
  if (ff.has_header) throw py::value_error("encode_firefly takes a document, not a datagram");
  std::string out;
  if (header) {
    if (now <= 0) now = now_micros();
    FireflyEncoder with({.hostname = hostname, .app_name = app_name, .syslog_header = true});
    FireflyEncoder bare({.hostname = hostname, .app_name = app_name, .syslog_header = false});
    std::string full(value_or_raise(with.encode(ff.event, now)));
    const std::size_t doc = value_or_raise(bare.encode(ff.event, now)).size();
    out.assign(full, 0, full.size() - doc);
  }
  scitags::append_firefly_json(out, ff);
  return py::bytes(out);
}

py::tuple experiment_tuple(const scitags::Experiment& e) {
  py::list acts;
  for (const auto& a : e.activities) acts.append(py::make_tuple(a.name, a.id));
  return py::make_tuple(e.name, e.id, acts);
}

// The event a pipe line of these tokens describes (names resolve through `reg`); ValueError
// names the bad token as the named-pipe source would.
FlowEvent flow_event(const std::vector<std::string>& tokens, const Registry& reg) {
  std::vector<std::string_view> views(tokens.begin(), tokens.end());
  auto e = scitags::parse_pipe_tokens(views, reg);
  if (!e) throw py::value_error(e.error().message);
  return *e;
}

// The firefly sender: FireflySender + FireflyEncoder, destinations resolved and checked once.
class Sender {
 public:
  Sender(int ttl, const std::optional<std::string>& iface, const std::string& hostname,
         const std::string& application) {
    if (ttl < 0 || ttl > 255)
      throw py::value_error("ttl must be 0..255, got " + std::to_string(ttl));
    scitags::FireflySenderConfig config;
    config.ttl = ttl;
    if (iface) config.iface = value_or_raise(resolve_interface(*iface));
    tx_.emplace(config);
    encoder_.emplace(scitags::EncoderOptions{.hostname = hostname, .application = application});
  }

  // Resolves "host[:port]" (port 10514 by default) and checks it; returns it as text.
  std::string add_destination(const std::string& text) {
    Endpoint to = value_or_raise(net::resolve_endpoint(text, scitags::kFireflyPort));
    to = value_or_raise(tx_->prepare(to));
    fixed_.push_back(to);
    return to.to_string();
  }

  // Encodes the event and sends it to the flow's destination (port 10514) when asked and to
  // every added destination. Tries them all; raises the first failure. Returns the datagram.
  py::bytes send(const std::vector<std::string>& tokens, const Registry& reg, Micros start,
                 Micros end, Micros now,
                 std::optional<std::pair<std::uint64_t, std::uint64_t>> usage,
                 bool to_destination) {
    FlowEvent e = flow_event(tokens, reg);
    if (now <= 0) now = now_micros();
    e.start_time = start > 0 ? start : now;
    if (end > 0) e.end_time = end;
    if (e.state == scitags::FlowState::kEnd && e.end_time <= 0)
      e.end_time = std::max(now, e.start_time);
    if (usage) e.usage = scitags::Usage{.received = usage->first, .sent = usage->second};
    std::string wire(value_or_raise(encoder_->encode(e, now)));
    std::vector<Endpoint> dests;
    if (to_destination)
      dests.push_back(value_or_raise(tx_->prepare({e.dst.address, scitags::kFireflyPort})));
    dests.insert(dests.end(), fixed_.begin(), fixed_.end());
    if (dests.empty())
      throw py::value_error("nowhere to send: no collectors and to_destination is false");
    std::optional<Error> first;
    {
      py::gil_scoped_release nogil;  // sendto on a UDP socket does not block for long
      for (const Endpoint& to : dests) {
        auto r = tx_->send(to, wire);
        if (!r && !first) first = std::move(r.error());
      }
    }
    if (first) raise_error(*first);
    return py::bytes(wire);
  }

 private:
  std::optional<scitags::FireflySender> tx_;
  std::optional<FireflyEncoder> encoder_;
  std::vector<Endpoint> fixed_;
};

}  // namespace

void bind_scitags(py::module_& m) {
  m.attr("FIREFLY_PORT") = scitags::kFireflyPort;
  m.attr("MAX_LABEL_EXPERIMENT") = scitags::kMaxLabelExperiment;
  m.attr("MAX_LABEL_ACTIVITY") = scitags::kMaxLabelActivity;
  m.attr("MAX_ENTROPY") = scitags::kMaxEntropy;

  m.def(
      "decode_firefly",
      [](py::bytes data, bool lenient) { return decode_firefly(std::string_view(data), lenient); },
      py::arg("data"), py::arg("lenient") = false);
  m.def(
      "encode_firefly",
      [](const std::string& document, bool header, const std::string& hostname,
         const std::string& app_name,
         Micros now) { return encode_firefly(document, header, hostname, app_name, now); },
      py::arg("document"), py::arg("header"), py::arg("hostname"), py::arg("app_name"),
      py::arg("now"));
  m.def("now_micros", [] { return now_micros(); });
  m.def("parse_time", [](const std::string& text) { return value_or_raise(parse_rfc3339(text)); });
  m.def("format_time", [](Micros t) { return time_text(t); });

  m.def(
      "encode_label",
      [](std::uint32_t experiment, std::uint32_t activity, std::uint32_t entropy) {
        return value_or_raise(scitags::encode_flow_label(experiment, activity, entropy));
      },
      py::arg("experiment"), py::arg("activity"), py::arg("entropy"));
  m.def(
      "decode_label",
      [](std::int64_t label) {
        if (label < 0 || label > 0xFFFFF)
          throw py::value_error(std::to_string(label) +
                                " is not a flow label (0..1048575, or 0x0..0xfffff)");
        auto d = scitags::decode_flow_label(static_cast<std::uint32_t>(label));
        return py::make_tuple(d.experiment, d.activity, d.entropy);
      },
      py::arg("label"));
  m.def(
      "make_scitag",
      [](std::uint32_t e, std::uint32_t a) { return value_or_raise(scitags::make_scitag(e, a)); },
      py::arg("experiment"), py::arg("activity"));
  m.def(
      "split_scitag", [](std::uint32_t tag) { return value_or_raise(scitags::split_scitag(tag)); },
      py::arg("scitag"));

  py::class_<Registry>(m, "Registry")
      .def_static("builtin", [] { return Registry::builtin(); })
      .def_static(
          "load",
          [](const std::string& source, bool verify_tls, long timeout) {
            Result<Registry> r;
            {
              py::gil_scoped_release nogil;  // a URL is fetched with libcurl
              r = Registry::load(source, {.verify_tls = verify_tls, .timeout_seconds = timeout});
            }
            return value_or_raise(std::move(r), /*io=*/true);
          },
          py::arg("source"), py::arg("verify_tls") = true, py::arg("timeout") = 10)
      .def_static(
          "parse",
          [](const std::string& text, const std::string& name) {
            return value_or_raise(Registry::parse(text, name));
          },
          py::arg("text"), py::arg("source_name") = "<string>")
      .def_property_readonly("source", [](const Registry& r) { return std::string(r.source()); })
      .def_property_readonly("modified",
                             [](const Registry& r) { return std::string(r.modified()); })
      .def("experiments",
           [](const Registry& r) {
             py::list out;
             for (const auto& e : r.experiments()) out.append(experiment_tuple(e));
             return out;
           })
      .def("resolve_experiment",
           [](const Registry& r, const std::string& s) {
             return value_or_raise(r.resolve_experiment(s));
           })
      .def("resolve_activity",
           [](const Registry& r, std::uint32_t e, const std::string& s) {
             return value_or_raise(r.resolve_activity(e, s));
           })
      .def("experiment_name",
           [](const Registry& r, std::uint32_t id) -> std::optional<std::string> {
             auto n = r.experiment_name(id);
             if (!n) return std::nullopt;
             return std::string(*n);
           })
      .def("activity_name",
           [](const Registry& r, std::uint32_t e, std::uint32_t a) -> std::optional<std::string> {
             auto n = r.activity_name(e, a);
             if (!n) return std::nullopt;
             return std::string(*n);
           });

  // The canonical pipe line (ids, not names) for 8 tokens, or ValueError naming the token.
  m.def(
      "pipe_line",
      [](const std::vector<std::string>& tokens, const Registry& reg) {
        const FlowEvent e = flow_event(tokens, reg);
        return std::string(scitags::to_string(e.state)) + " " +
               std::string(scitags::to_string(e.protocol)) + " " + e.src.address.to_string() + " " +
               std::to_string(e.src.port) + " " + e.dst.address.to_string() + " " +
               std::to_string(e.dst.port) + " " + std::to_string(e.experiment) + " " +
               std::to_string(e.activity);
      },
      py::arg("tokens"), py::arg("registry"));

  py::class_<Sender>(m, "Sender")
      .def(py::init<int, const std::optional<std::string>&, const std::string&,
                    const std::string&>(),
           py::arg("ttl"), py::arg("iface"), py::arg("hostname"), py::arg("application"))
      .def("add_destination", &Sender::add_destination, py::arg("destination"))
      .def("send", &Sender::send, py::arg("tokens"), py::arg("registry"), py::arg("start"),
           py::arg("end"), py::arg("now"), py::arg("usage"), py::arg("to_destination"));
}

}  // namespace flowmark::python
