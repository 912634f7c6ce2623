#include "daemon/common/tracker.hpp"

#include <fmt/format.h>

#include <utility>

namespace flowmark::daemon::sockets {

using scitags::FlowEvent;
using scitags::FlowState;

bool is_closing(TcpState s) noexcept {
  switch (s) {
    case TcpState::kFinWait1:
    case TcpState::kFinWait2:
    case TcpState::kCloseWait:
    case TcpState::kLastAck:
    case TcpState::kClosing:
    case TcpState::kTimeWait:
    case TcpState::kClose: return true;
    default: return false;
  }
}

ConnectionTracker::ConnectionTracker(TrackerOptions options, Emit emit)
    : options_(std::move(options)),
      emit_(std::move(emit)),
      random_(options_.seed != 0 ? options_.seed : std::random_device{}()) {}

void ConnectionTracker::begin(Micros now) {
  ++poll_;
  now_ = now;
}

bool ConnectionTracker::wanted(const SocketInfo& s) {
  const auto& dst = s.dst.address;
  if ((options_.skip_private && !dst.is_global()) ||
      any_contains(options_.internal_networks, dst)) {
    ++stats_.skipped_internal;
    return false;
  }
  if (!options_.ports.empty()) {
    bool match = false;
    for (const auto& r : options_.ports) {
      if (r.contains(s.dst.port) || r.contains(s.src.port)) {
        match = true;
        break;
      }
    }
    if (!match) {
      ++stats_.skipped_port;
      return false;
    }
  }
  return true;
}

Tag ConnectionTracker::draw_tag() {
  if (options_.choices.empty()) return options_.tag;
  std::uniform_int_distribution<std::size_t> pick(0, options_.choices.size() - 1);
  return options_.choices[pick(random_)];
}

void ConnectionTracker::emit_end(Entry& e) {
  e.ended = true;
  FlowEvent end = e.event;
  end.state = FlowState::kEnd;
  end.current_time = now_;
  end.end_time = now_;
  emit_(end);
}

void ConnectionTracker::observe(const SocketInfo& s) {
  // Listeners and unconnected UDP sockets have no peer: nothing to mark.
  if (s.state == TcpState::kListen || s.dst.port == 0 || s.dst.address.is_unspecified()) return;

  if (auto it = table_.find(s.cookie); it != table_.end()) {
    Entry& e = it->second;
    e.seen = poll_;
    if (s.tcp) {
      e.event.tcp = s.tcp;
      e.event.usage = scitags::Usage{.received = s.tcp->bytes_received, .sent = s.tcp->bytes_acked};
    }
    if (!e.ended && is_closing(s.state)) {
      ++stats_.ends_closing;
      emit_end(e);
    }
    return;
  }
  if (auto it = ignored_.find(s.cookie); it != ignored_.end()) {
    it->second = poll_;
    return;
  }

  const bool established = s.state == TcpState::kEstablished;
  // First seen already closing (but not CLOSE, which is also where failed connects end):
  // it opened and started closing between two polls. Announce both, once.
  const bool short_lived = !established && s.state != TcpState::kClose && is_closing(s.state);
  if (!established && !short_lived) return;  // handshakes: wait until they are established
  if (!wanted(s)) {
    ignored_.emplace(s.cookie, poll_);
    return;
  }
  if (first_ && !options_.announce_existing) {
    ++stats_.existing;
    ignored_.emplace(s.cookie, poll_);
    return;
  }

  Entry e;
  e.seen = poll_;
  e.event.state = FlowState::kStart;
  e.event.protocol = s.protocol;
  e.event.src = s.src;
  e.event.dst = s.dst;
  const Tag tag = draw_tag();
  e.event.experiment = tag.experiment;
  e.event.activity = tag.activity;
  e.event.start_time = now_;
  e.event.current_time = now_;
  if (s.tcp) {
    e.event.tcp = s.tcp;
    e.event.usage = scitags::Usage{.received = s.tcp->bytes_received, .sent = s.tcp->bytes_acked};
  }
  ++stats_.starts;
  emit_(e.event);
  if (short_lived) {
    ++stats_.short_lived;
    emit_end(e);
  }
  table_.emplace(s.cookie, std::move(e));
}

void ConnectionTracker::finish() {
  for (auto it = table_.begin(); it != table_.end();) {
    if (it->second.seen == poll_) {
      ++it;
      continue;
    }
    if (!it->second.ended) {
      ++stats_.ends_vanished;
      emit_end(it->second);
    }
    it = table_.erase(it);
  }
  std::erase_if(ignored_, [this](const auto& kv) { return kv.second != poll_; });
  first_ = false;
}

void ConnectionTracker::abandon() {}

void ConnectionTracker::poll(std::span<const SocketInfo> snapshot, Micros now) {
  begin(now);
  for (const auto& s : snapshot) observe(s);
  finish();
}

}  // namespace flowmark::daemon::sockets
