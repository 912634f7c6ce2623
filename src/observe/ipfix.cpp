#include "flowmark/observe/ipfix.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>
#include <ctime>
#include <utility>

namespace flowmark::observe {
namespace {

using Field = IpfixWriter::Field;

// Element ids (RFC 7012 / IANA registry).
constexpr std::uint16_t kOctetDeltaCount = 1, kPacketDeltaCount = 2, kProtocolIdentifier = 4,
                        kIpClassOfService = 5, kTcpControlBits = 6, kSourceTransportPort = 7,
                        kSourceIPv4Address = 8, kDestinationTransportPort = 11,
                        kDestinationIPv4Address = 12, kSourceIPv6Address = 27,
                        kDestinationIPv6Address = 28, kFlowLabelIPv6 = 31, kVlanId = 58,
                        kFlowEndReason = 136, kFlowStartMilliseconds = 152,
                        kFlowEndMilliseconds = 153, kFlowStartNanoseconds = 156,
                        kFlowEndNanoseconds = 157, kBiflowDirection = 239;

constexpr std::size_t kHeaderSize = 16, kSetHeaderSize = 4;
constexpr std::uint32_t kRev = kIpfixReversePen;

// The fields of one template, in the order add_one() writes the values: the addresses, the
// common fields, (biflow) the reverse counters and class of service, the end reason and
// (biflow) direction, then (IPv6 with the scitags chain) the flow labels and the Scitags
// marking.
std::vector<Field> template_fields(bool v6, const IpfixOptions& o) {
  const bool uniflow = o.uniflow, packets = o.packet_fields;
  std::vector<Field> f{
      {v6 ? kSourceIPv6Address : kSourceIPv4Address, static_cast<std::uint16_t>(v6 ? 16 : 4)},
      {v6 ? kDestinationIPv6Address : kDestinationIPv4Address,
       static_cast<std::uint16_t>(v6 ? 16 : 4)},
      {kSourceTransportPort, 2},
      {kDestinationTransportPort, 2},
      {kProtocolIdentifier, 1}};
  if (packets) f.push_back({kVlanId, 2});
  f.push_back({o.nanoseconds ? kFlowStartNanoseconds : kFlowStartMilliseconds, 8});
  f.push_back({o.nanoseconds ? kFlowEndNanoseconds : kFlowEndMilliseconds, 8});
  // Each direction's counters: packets, octets, TCP flags, class of service (octets only
  // without packet_fields); forward, then (biflow) reverse.
  for (const std::uint32_t pen : {0u, kRev}) {
    if (pen == kRev && uniflow) break;
    if (packets) f.push_back({kPacketDeltaCount, 8, pen});
    f.push_back({kOctetDeltaCount, 8, pen});
    if (packets) {
      f.push_back({kTcpControlBits, 2, pen});
      f.push_back({kIpClassOfService, 1, pen});
    }
  }
  f.push_back({kFlowEndReason, 1});
  if (!uniflow) f.push_back({kBiflowDirection, 1});
  if (v6 && o.flow_label) {
    f.push_back({kFlowLabelIPv6, 4});
    if (!uniflow) f.push_back({kFlowLabelIPv6, 4, kRev});
  }
  if (o.scitags && (v6 || o.scitags_ipv4)) {
    f.push_back({kIpfixScitagExperimentId, 2, kIpfixCesnetPen});
    f.push_back({kIpfixScitagExperimentAct, 1, kIpfixCesnetPen});
  }
  return f;
}

std::size_t record_size(const std::vector<Field>& f) {
  std::size_t n = 0;
  for (const Field& x : f) n += x.length;
  return n;
}

// The largest data record plus the set header: the least room a message must have.
constexpr std::size_t kMinMessage = 512;

}  // namespace

std::uint64_t nanos_to_ntp(std::int64_t ns) noexcept {
  constexpr std::int64_t kSecond = 1'000'000'000;
  constexpr std::uint64_t kNtpToUnix = 2'208'988'800;  // seconds from 1900 to 1970
  std::int64_t s = ns / kSecond, sub = ns % kSecond;
  if (sub < 0) {  // before 1970: the fraction counts up from the second below
    sub += kSecond;
    --s;
  }
  const std::uint64_t frac = ((static_cast<std::uint64_t>(sub) << 32) + kSecond - 1) / kSecond;
  return (static_cast<std::uint64_t>(s) + kNtpToUnix) << 32 | frac;
}

std::int64_t ntp_to_nanos(std::uint64_t ntp) noexcept {
  const auto s = static_cast<std::int64_t>(ntp >> 32) - 2'208'988'800;
  const auto sub = static_cast<std::int64_t>(((ntp & 0xffffffff) * 1'000'000'000) >> 32);
  return s * 1'000'000'000 + sub;
}

IpfixWriter::IpfixWriter(IpfixOptions options, MessageSink sink)
    : options_(std::move(options)), sink_(std::move(sink)) {
  options_.max_message_size =
      std::clamp<std::size_t>(options_.max_message_size, kMinMessage, 65535);
  if (!options_.now) {
    options_.now = [] { return static_cast<std::uint32_t>(std::time(nullptr)); };
  }
  buf_.reserve(options_.max_message_size);
  for (int v6 = 0; v6 < 2; ++v6) {
    fields_[v6] = template_fields(v6 != 0, options_);
    record_size_[v6] = record_size(fields_[v6]);
    template_id_[v6] = options_.uniflow ? (v6 ? kIpfixTemplateUniV6 : kIpfixTemplateUniV4)
                                        : (v6 ? kIpfixTemplateV6 : kIpfixTemplateV4);
  }
}

template <class T>
void IpfixWriter::put(T v) {
  for (int shift = (sizeof(T) - 1) * 8; shift >= 0; shift -= 8)
    buf_.push_back(static_cast<std::uint8_t>(static_cast<std::uint64_t>(v) >> shift));
}

void IpfixWriter::begin_message() {
  buf_.clear();
  put<std::uint16_t>(10);  // version
  put<std::uint16_t>(0);   // length, set at the end
  put<std::uint32_t>(0);   // export time, set at the end
  put<std::uint32_t>(sequence_);
  put<std::uint32_t>(options_.observation_domain);
  set_start_ = 0;
  set_template_ = 0;
  records_in_message_ = 0;
  // Templates go first in the first message, and again when a refresh is due (RFC 7011
  // §8.4: over UDP a collector that restarted learns them again).
  bool due = !templates_sent_;
  if (!due && options_.template_refresh_messages != 0)
    due = messages_ - templates_message_ >= options_.template_refresh_messages;
  if (!due && options_.template_refresh_seconds != 0)
    due = options_.now() - templates_time_ >= options_.template_refresh_seconds;
  if (due) write_templates();
}

void IpfixWriter::end_set() {
  if (set_start_ == 0) return;
  const std::size_t len = buf_.size() - set_start_;
  buf_[set_start_ + 2] = static_cast<std::uint8_t>(len >> 8);
  buf_[set_start_ + 3] = static_cast<std::uint8_t>(len);
  set_start_ = 0;
  set_template_ = 0;
}

void IpfixWriter::write_templates() {
  auto one = [this](std::uint16_t id, const auto& fields) {
    put<std::uint16_t>(id);
    put<std::uint16_t>(static_cast<std::uint16_t>(fields.size()));
    for (const Field& f : fields) {
      put<std::uint16_t>(f.pen != 0 ? static_cast<std::uint16_t>(f.id | 0x8000) : f.id);
      put<std::uint16_t>(f.length);
      if (f.pen != 0) put<std::uint32_t>(f.pen);
    }
  };
  const std::size_t start = buf_.size();
  put<std::uint16_t>(2);  // template set
  put<std::uint16_t>(0);
  for (int v6 = 0; v6 < 2; ++v6) one(template_id_[v6], fields_[v6]);
  const std::size_t len = buf_.size() - start;
  buf_[start + 2] = static_cast<std::uint8_t>(len >> 8);
  buf_[start + 3] = static_cast<std::uint8_t>(len);
  templates_sent_ = true;
  templates_message_ = messages_;
  templates_time_ = options_.now();
}

std::vector<std::uint8_t> IpfixWriter::templates_message() {
  // Built in buf_ (put() and write_templates() write there), the message being built kept
  // aside, and the template refresh state left as it was.
  std::vector<std::uint8_t> building;
  building.swap(buf_);
  const bool sent = templates_sent_;
  const std::uint64_t sent_message = templates_message_;
  const std::uint32_t sent_time = templates_time_;
  put<std::uint16_t>(10);
  put<std::uint16_t>(0);
  put<std::uint32_t>(0);
  put<std::uint32_t>(sequence_);
  put<std::uint32_t>(options_.observation_domain);
  write_templates();
  const std::uint32_t now = options_.now();
  buf_[2] = static_cast<std::uint8_t>(buf_.size() >> 8);
  buf_[3] = static_cast<std::uint8_t>(buf_.size());
  for (int i = 0; i < 4; ++i) buf_[4 + i] = static_cast<std::uint8_t>(now >> (24 - 8 * i));
  templates_sent_ = sent;
  templates_message_ = sent_message;
  templates_time_ = sent_time;
  std::vector<std::uint8_t> out;
  out.swap(buf_);
  buf_.swap(building);
  return out;
}

void IpfixWriter::flush() {
  if (buf_.size() <= kHeaderSize) return;
  end_set();
  const std::uint32_t now = options_.now();
  buf_[2] = static_cast<std::uint8_t>(buf_.size() >> 8);
  buf_[3] = static_cast<std::uint8_t>(buf_.size());
  for (int i = 0; i < 4; ++i) buf_[4 + i] = static_cast<std::uint8_t>(now >> (24 - 8 * i));
  sink_(std::span<const std::uint8_t>(buf_.data(), buf_.size()));
  ++messages_;
  sequence_ += records_in_message_;
  buf_.clear();
}

void IpfixWriter::add(const FlowRecord& r, const IpfixExtras& x) {
  add_one(r, x, false);
  if (options_.uniflow && r.pkt_rev != 0) add_one(r, x, true);
}

void IpfixWriter::add_one(const FlowRecord& r, const IpfixExtras& x, bool reverse_side) {
  const bool v6 = r.ip_version == 6;
  const std::uint16_t tid = template_id_[v6];
  const std::size_t rec = record_size_[v6];
  if (buf_.empty()) begin_message();
  // Room for this record (and a set header if a new set must start)?
  const std::size_t need = rec + (set_template_ == tid ? 0 : kSetHeaderSize);
  if (buf_.size() + need > options_.max_message_size) {
    flush();
    begin_message();
  }
  if (set_template_ != tid) {
    end_set();
    set_start_ = buf_.size();
    set_template_ = tid;
    put<std::uint16_t>(tid);
    put<std::uint16_t>(0);
  }
  // The record's bytes are stored straight into room made for them (no per-byte growth).
  const std::size_t at = buf_.size();
  buf_.resize(at + rec);
  std::uint8_t* p = buf_.data() + at;
  auto store = [&p](auto v) {
    for (int shift = (static_cast<int>(sizeof(v)) - 1) * 8; shift >= 0; shift -= 8)
      *p++ = static_cast<std::uint8_t>(static_cast<std::uint64_t>(v) >> shift);
  };
  const IpAddress& src = reverse_side ? r.dip : r.sip;
  const IpAddress& dst = reverse_side ? r.sip : r.dip;
  const std::size_t alen = v6 ? 16 : 4;
  std::memcpy(p, src.bytes(), alen);
  std::memcpy(p + alen, dst.bytes(), alen);
  p += 2 * alen;
  store(static_cast<std::uint16_t>(reverse_side ? r.dp : r.sp));
  store(static_cast<std::uint16_t>(reverse_side ? r.sp : r.dp));
  store(static_cast<std::uint8_t>(r.proto));
  const bool packets = options_.packet_fields;
  if (packets) store(static_cast<std::uint16_t>(r.vlan));
  if (options_.nanoseconds) {
    store(nanos_to_ntp(r.first));
    store(nanos_to_ntp(r.last));
  } else {  // milliseconds since the epoch, rounded down
    store(static_cast<std::uint64_t>(r.first / 1'000'000));
    store(static_cast<std::uint64_t>(r.last / 1'000'000));
  }
  auto counters = [&](bool rev) {
    if (packets) store(static_cast<std::uint64_t>(rev ? r.pkt_rev : r.pkt_fwd));
    store(static_cast<std::uint64_t>(rev ? r.oct_rev : r.oct_fwd));
    if (packets) {
      store(static_cast<std::uint16_t>(rev ? r.tcp_flags_rev : r.tcp_flags_fwd));
      store(rev ? r.tos_rev : r.tos_fwd);
    }
  };
  if (options_.uniflow) {
    counters(reverse_side);
    store(static_cast<std::uint8_t>(r.end_reason));
  } else {
    counters(false);
    counters(true);
    store(static_cast<std::uint8_t>(r.end_reason));
    store(static_cast<std::uint8_t>(r.direction));
  }
  if (v6 && options_.flow_label) {
    store(reverse_side ? x.flow_label_rev : x.flow_label_fwd);
    if (!options_.uniflow) store(x.flow_label_rev);
  }
  if (options_.scitags && (v6 || options_.scitags_ipv4)) {
    store(x.scitags_experiment);
    store(x.scitags_activity);
  }
  assert(p == buf_.data() + at + rec);
  ++records_in_message_;
  ++records_;
}

}  // namespace flowmark::observe
