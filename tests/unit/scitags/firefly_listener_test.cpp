#include "flowmark/scitags/firefly_listener.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "flowmark/net/socket.hpp"
#include "flowmark/scitags/firefly_commands.hpp"
#include "flowmark/scitags/firefly_sender.hpp"

namespace flowmark::scitags {
namespace {

struct Collect : FireflySink {
  std::vector<FlowEvent> events;
  std::vector<Endpoint> senders;
  std::vector<Reject> rejects;
  int batches = 0;
  void on_firefly(const Endpoint& from, const Firefly& f) override {
    events.push_back(f.event);
    senders.push_back(from);
  }
  void on_reject(const Endpoint&, const Rejection& r) override { rejects.push_back(r.reason); }
  void on_batch_end() override { ++batches; }
};

ListenerConfig loopback() {
  ListenerConfig c;
  c.bind = *IpAddress::parse("127.0.0.1");
  c.port = 0;
  return c;
}

FlowEvent event() {
  FlowEvent e;
  e.src = *Endpoint::parse("192.0.2.1:2345");
  e.dst = *Endpoint::parse("192.0.2.2:5777");
  e.experiment = 2;
  e.activity = 1;
  e.start_time = 1742896800'123456;
  return e;
}

// Loopback, port 0: what is sent is in the socket's queue when sendto returns.
TEST(FireflyListener, DecodesCountsAndRejectsOnLoopback) {
  auto l = FireflyListener::open(loopback());
  ASSERT_TRUE(l.has_value()) << l.error().message();
  const auto local = l->local_endpoints();
  ASSERT_EQ(local.size(), 1u);
  ASSERT_NE(local[0].port, 0);

  FireflyEncoder enc({.hostname = "test"});
  auto wire = enc.encode(event(), 1742896800'000000);
  ASSERT_TRUE(wire.has_value());
  FireflySender tx;
  ASSERT_TRUE(tx.send(local[0], *wire).has_value());
  ASSERT_TRUE(tx.send(local[0], "not json at all").has_value());
  ASSERT_TRUE(tx.send(local[0], R"({"flow-lifecycle":{}})").has_value());
  auto n = tx.send_repeated(local[0], *wire, 100, 0);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 100u);

  Collect sink;
  auto got = l->drain(sink);
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(*got, 103u);
  ASSERT_EQ(sink.events.size(), 101u);
  EXPECT_EQ(sink.events[0].src, event().src);
  EXPECT_EQ(sink.events[0].experiment, 2u);
  EXPECT_EQ(sink.senders[0].address.to_string(), "127.0.0.1");
  EXPECT_EQ(sink.rejects, (std::vector<Reject>{Reject::kBadHeader, Reject::kMissingField}));
  EXPECT_GE(sink.batches, 1);

  const ListenerCounts& c = l->counts();
  EXPECT_EQ(c.received, 103u);
  EXPECT_EQ(c.accepted, 101u);
  EXPECT_EQ(c.rejected_total(), 2u);
  std::string json;
  c.append_json(json);
  EXPECT_NE(json.find(R"("type":"stats","received":103,"accepted":101)"), std::string::npos)
      << json;
  EXPECT_NE(json.find(R"("bad_header":1)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("missing_field":1)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("not_json":0)"), std::string::npos) << json;

  // Nothing more waiting: an empty drain.
  auto again = l->drain(sink);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, 0u);
}

TEST(FireflyListener, StopAfterCurrentLeavesTheRestOfTheBatch) {
  auto l = FireflyListener::open(loopback());
  ASSERT_TRUE(l.has_value()) << l.error().message();
  FireflySender tx;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(tx.send(l->local_endpoints()[0], "x").has_value());
  struct StopAtTwo : FireflySink {
    FireflyListener* l = nullptr;
    int seen = 0;
    void on_firefly(const Endpoint&, const Firefly&) override {}
    void on_reject(const Endpoint&, const Rejection&) override {
      if (++seen == 2) l->stop_after_current();
    }
  } sink;
  sink.l = &*l;
  ASSERT_TRUE(l->drain(sink).has_value());
  EXPECT_EQ(sink.seen, 2);
  EXPECT_EQ(l->counts().received, 2u);
}

TEST(FireflyListener, SourcesNeedAGroup) {
  ListenerConfig c;
  c.port = 0;
  c.sources = {*IpAddress::parse("192.0.2.1")};
  auto l = FireflyListener::open(c);
  ASSERT_FALSE(l.has_value());
  EXPECT_NE(l.error().message().find("--group"), std::string::npos);
}

TEST(FireflyText, OneReadableLine) {
  Firefly f;
  f.event = event();
  f.event.state = FlowState::kEnd;
  f.event.end_time = 1742897100'000000;
  f.event.usage = Usage{1024, 2048};
  f.application = "xrootd";
  std::string out;
  append_firefly_text(out, *Endpoint::parse("10.0.0.1:40000"), f);
  EXPECT_EQ(out,
            "10.0.0.1:40000 end tcp 192.0.2.1:2345 -> 192.0.2.2:5777 exp 2/atlas act 1/default "
            "start 2025-03-25T10:00:00.123456+00:00 end 2025-03-25T10:05:00.000000+00:00 "
            "usage rx 1024 tx 2048 app \"xrootd\"");
}

// Printing a decoded firefly must not invent what the datagram did not carry: no
// current-time (optional in the schema), a null start-time kept as null (--lenient), no
// empty application.
TEST(FireflyJson, PrintingNeverInventsFields) {
  FireflyDecoder dec({.lenient_start_time = true});
  auto r = dec.decode(
      R"({"flow-lifecycle":{"state":"end","start-time":null,"end-time":"2025-03-25T10:00:00Z"},)"
      R"("flow-id":{"afi":"ipv4","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp",)"
      R"("src-port":1,"dst-port":2},"context":{"experiment-id":1,"activity-id":2}})");
  ASSERT_TRUE(r.has_value()) << r.error().detail;
  std::string out;
  append_firefly_json(out, **r);
  EXPECT_EQ(out, R"({"version":1,"flow-lifecycle":{"state":"end","start-time":null,)"
                 R"("end-time":"2025-03-25T10:00:00.000000+00:00"},"flow-id":{"afi":"ipv4",)"
                 R"("src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp","src-port":1,)"
                 R"("dst-port":2},"context":{"experiment-id":1,"activity-id":2}})");
}

// The encoder formats addresses itself (no sprintf); it must write what inet_ntop writes.
TEST(FireflyJson, AddressesAreWrittenAsInetNtopWritesThem) {
  std::mt19937_64 rng(42);
  FireflyEncoder enc({.hostname = "h", .syslog_header = false});
  std::vector<std::array<std::uint8_t, 16>> v6 = {
      {},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1},
      {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1},
      {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
      {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a}};
  for (int i = 0; i < 2000; ++i) {
    std::array<std::uint8_t, 16> b{};
    for (auto& x : b) {
      const auto r = rng();
      x = (r & 3) == 0 ? static_cast<std::uint8_t>(r >> 8) : 0;  // many zero runs
    }
    v6.push_back(b);
  }
  for (const auto& b : v6) {
    in6_addr a6;
    std::memcpy(&a6, b.data(), 16);
    char want[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a6, want, sizeof want);
    FlowEvent e = event();
    e.src = {IpAddress::v6(a6), 1};
    e.dst = {IpAddress::v6(a6), 2};
    auto w = enc.encode(e, 1742896800'000000);
    ASSERT_TRUE(w.has_value());
    EXPECT_NE(w->find(std::string(R"("src-ip":")") + want + '"'), std::string_view::npos)
        << want << " in " << *w;
  }
  for (int i = 0; i < 2000; ++i) {
    const auto v = static_cast<std::uint32_t>(i < 10 ? i * 0x01010101u : rng());
    FlowEvent e = event();
    e.src = {IpAddress::v4(v), 1};
    auto w = enc.encode(e, 1742896800'000000);
    ASSERT_TRUE(w.has_value());
    const in_addr a4 = e.src.address.in4();
    char want[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a4, want, sizeof want);
    EXPECT_NE(w->find(std::string(R"("src-ip":")") + want + '"'), std::string_view::npos)
        << want << " in " << *w;
  }
}

// Datagrams as they arrive at a UDP socket (a receiver without UDP_GRO, as collectors are):
// up to `want` of them, waiting up to 10 s for each.
std::vector<std::string> receive(int fd, std::size_t want) {
  std::vector<std::string> got;
  std::string buf(65536, '\0');
  while (got.size() < want) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10'000) <= 0) break;
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) break;
    got.emplace_back(buf.data(), static_cast<std::size_t>(n));
  }
  return got;
}

// send_many gives each destination the same datagrams, byte for byte and in order, whether
// runs of one destination and one size leave as GSO buffers or one by one: runs longer than a
// GSO buffer, runs ended by a shorter datagram, runs broken by another destination or a longer
// datagram, empty datagrams, and datagrams too long to share a buffer.
TEST(FireflySender, SendManyGivesEachDestinationItsDatagramsWithAndWithoutGso) {
  std::vector<UniqueFd> rx;
  std::vector<Endpoint> to;
  for (int k = 0; k < 2; ++k) {
    auto fd = net::bind_udp({*IpAddress::parse("127.0.0.1"), 0});
    ASSERT_TRUE(fd.has_value()) << fd.error().message();
    ASSERT_TRUE(net::set_receive_buffer(fd->get(), 32 << 20).has_value());
    auto here = net::local_endpoint(fd->get());
    ASSERT_TRUE(here.has_value());
    to.push_back(*here);
    rx.push_back(std::move(*fd));
  }
  std::mt19937 rng(18);
  const std::array<std::size_t, 7> sizes{0, 1, 300, 301, 449, 1400, 40000};
  std::vector<std::string> data;
  std::vector<std::size_t> dest;
  while (data.size() < 1500) {
    const std::size_t size = sizes[rng() % sizes.size()];
    const std::size_t d = rng() % 2;
    const std::size_t run = 1 + rng() % (rng() % 4 == 0 ? 150 : 5);
    for (std::size_t k = 0; k < run; ++k) {
      std::string s(size, '\0');
      for (auto& c : s) c = static_cast<char>(rng());
      if (size >= 4) std::memcpy(s.data(), &k, 4);
      data.push_back(std::move(s));
      dest.push_back(d);
    }
    if (rng() % 3 == 0 && size > 1) {  // a shorter one after the run
      data.emplace_back(size - 1, 'x');
      dest.push_back(d);
    }
  }
  for (bool gso : {true, false}) {
    SCOPED_TRACE(gso ? "gso" : "no gso");
    FireflySenderConfig config;
    config.gso = gso;
    FireflySender tx(config);
    std::vector<FireflySender::Message> messages;
    for (std::size_t i = 0; i < data.size(); ++i) messages.push_back({&to[dest[i]], data[i]});
    // A slice at a time, so that the receivers' buffers hold what is in flight.
    for (std::size_t i = 0; i < messages.size(); i += 300) {
      const std::size_t n = std::min<std::size_t>(300, messages.size() - i);
      std::vector<int> errors(n, -1);
      tx.send_many(std::span(messages).subspan(i, n), errors);
      EXPECT_EQ(errors, std::vector<int>(n, 0));
      for (std::size_t d = 0; d < 2; ++d) {
        std::vector<std::string> want;
        for (std::size_t k = i; k < i + n; ++k) {
          if (dest[k] == d) want.push_back(data[k]);
        }
        const auto got = receive(rx[d].get(), want.size());
        ASSERT_EQ(got.size(), want.size()) << "destination " << d << ", from datagram " << i;
        for (std::size_t k = 0; k < want.size(); ++k) {
          ASSERT_EQ(got[k], want[k]) << "destination " << d << ", its datagram " << k;
        }
      }
    }
    // 1,000 = 15 full GSO buffers and a part.
    const std::string one = data[1].size() == 449 ? data[1] : std::string(449, 'r');
    auto n = tx.send_repeated(to[0], one, 1000, 0);
    ASSERT_TRUE(n.has_value()) << n.error().message();
    EXPECT_EQ(*n, 1000u);
    const auto got = receive(rx[0].get(), 1000);
    ASSERT_EQ(got.size(), 1000u);
    for (const auto& g : got) ASSERT_EQ(g, one);
  }
}

// A path whose MTU a GSO segment does not fit (fireflies longer than it are fragmented as
// before): the kernel refuses the buffer, and the run's datagrams go one by one, every one
// delivered. In a network namespace of this thread with loopback's MTU at 1,280.
TEST(FireflySender, GsoRefusedByThePathSendsOneByOne) {
  std::string skipped;
  std::vector<std::string> got;
  std::vector<int> errors(40, -1);
  std::vector<std::string> data;
  for (std::size_t k = 0; k < 40; ++k)
    data.emplace_back(k < 20 ? 1400 : 600, static_cast<char>('a' + k % 26));
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      skipped = std::string("no network namespace (needs CAP_SYS_ADMIN): ") + std::strerror(errno);
      return;
    }
    const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "lo");
    ifr.ifr_mtu = 1280;
    if (::ioctl(s, SIOCSIFMTU, &ifr) != 0 || ::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
      skipped = std::string("cannot set lo's MTU: ") + std::strerror(errno);
      ::close(s);
      return;
    }
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    const int up = ::ioctl(s, SIOCSIFFLAGS, &ifr);
    ::close(s);
    if (up != 0) {
      skipped = std::string("cannot bring lo up: ") + std::strerror(errno);
      return;
    }
    auto fd = net::bind_udp({*IpAddress::parse("127.0.0.1"), 0});
    if (!fd) {
      skipped = fd.error().message();
      return;
    }
    const Endpoint to = *net::local_endpoint(fd->get());
    FireflySender tx;
    std::vector<FireflySender::Message> messages;
    for (const auto& d : data) messages.push_back({&to, d});
    tx.send_many(messages, errors);  // 20 of 1,400 bytes, then 20 of 600 (GSO still)
    got = receive(fd->get(), data.size());
  }).join();
  if (!skipped.empty()) GTEST_SKIP() << skipped;
  EXPECT_EQ(errors, std::vector<int>(data.size(), 0));
  EXPECT_EQ(got, data);
}

TEST(FireflySender, PrepareChecksGroups) {
  FireflySender tx;
  auto ll = tx.prepare(*Endpoint::parse("[ff02::1]:10514"));
  ASSERT_FALSE(ll.has_value());
  EXPECT_NE(ll.error().message().find("interface"), std::string::npos) << ll.error().message();
  EXPECT_TRUE(tx.prepare(*Endpoint::parse("239.1.1.1:10514")).has_value());
  EXPECT_FALSE(tx.prepare(*Endpoint::parse("0.0.0.0:10514")).has_value());
}

}  // namespace
}  // namespace flowmark::scitags
