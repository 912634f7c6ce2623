#include "daemon/common/tcp_info_reader.hpp"

#include <memory>
#include <mutex>

#include <spdlog/spdlog.h>

#include "flowmark/netclient/sock_diag.hpp"

namespace flowmark::daemon {
namespace {

class NetlinkTcpInfo {
 public:
  std::optional<scitags::TcpInfo> operator()(const scitags::FlowEvent& e) {
    return read<scitags::TcpInfo>(e, &netclient::SockDiag::tcp_info);
  }
  std::optional<scitags::TcpDetail> detail(const scitags::FlowEvent& e) {
    return read<scitags::TcpDetail>(e, &netclient::SockDiag::tcp_detail);
  }

 private:
  template <typename T>
  std::optional<T> read(const scitags::FlowEvent& e,
                        Result<std::optional<T>> (netclient::SockDiag::*get)(const Endpoint&,
                                                                             const Endpoint&)) {
    if (e.protocol != scitags::Protocol::kTcp) return std::nullopt;
    std::lock_guard lock(mutex_);
    if (!diag_) {
      auto d = netclient::SockDiag::open();
      if (!d) {
        if (!warned_) spdlog::warn("TCP information unavailable: {}", d.error().message());
        warned_ = true;
        return std::nullopt;
      }
      diag_.emplace(std::move(*d));
    }
    // The flow's source is usually this host; a flow announced from the other side is
    // found the other way round.
    for (int side = 0; side < 2; ++side) {
      auto r = side == 0 ? ((*diag_).*get)(e.src, e.dst) : ((*diag_).*get)(e.dst, e.src);
      if (r && r->has_value()) return *r;  // Result<optional<T>>
    }
    return std::nullopt;
  }

  std::mutex mutex_;
  std::optional<netclient::SockDiag> diag_;
  bool warned_ = false;
};

}  // namespace

std::function<std::optional<scitags::TcpDetail>(const scitags::FlowEvent&)>
make_tcp_detail_reader() {
  auto reader = std::make_shared<NetlinkTcpInfo>();
  return [reader](const scitags::FlowEvent& e) { return reader->detail(e); };
}

std::function<std::optional<scitags::TcpInfo>(const scitags::FlowEvent&)> make_tcp_info_reader() {
  auto reader = std::make_shared<NetlinkTcpInfo>();
  return [reader](const scitags::FlowEvent& e) { return (*reader)(e); };
}

}  // namespace flowmark::daemon
