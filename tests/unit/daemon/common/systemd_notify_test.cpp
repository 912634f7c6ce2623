// systemd's notification protocol without libsystemd: a datagram socket of our own stands for
// systemd's (a path and an abstract name), and the watchdog's environment.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "daemon/common/systemd_notify.hpp"

namespace flowmark::daemon {
namespace {

// A bound AF_UNIX datagram socket: what systemd listens on for a Type=notify service.
class Listener {
 public:
  // `name` starting with '@': abstract.
  explicit Listener(std::string name) : name_(std::move(name)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name_.data(), name_.size());
    if (name_[0] == '@') a.sun_path[0] = '\0';
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a),
                    static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size())) == 0;
  }
  ~Listener() {
    ::close(fd_);
    if (name_[0] == '/') ::unlink(name_.c_str());
  }
  bool bound() const { return bound_; }
  // The next datagram, or "" after 5 s.
  std::string next() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) != 1) return "";
    char buf[512];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
  }

 private:
  std::string name_;
  int fd_ = -1;
  bool bound_ = false;
};

TEST(SystemdNotify, SendsTheStateToThePathOrAbstractSocket) {
  const std::string path = "/tmp/fm-notify-" + std::to_string(::getpid());
  const std::string abstract = "@fm-notify-" + std::to_string(::getpid());
  for (const auto& name : {path, abstract}) {
    Listener l(name);
    ASSERT_TRUE(l.bound()) << name;
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
    EXPECT_TRUE(systemd_notify("READY=1")) << name;
    EXPECT_EQ(l.next(), "READY=1") << name;
    EXPECT_TRUE(systemd_notify("STATUS=3 live flows\nMONOTONIC_USEC=42")) << name;
    EXPECT_EQ(l.next(), "STATUS=3 live flows\nMONOTONIC_USEC=42") << name;
  }
  // Nobody listening, or no socket named: false, and nothing else happens.
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  EXPECT_FALSE(systemd_notify("READY=1"));
  ::setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
  EXPECT_FALSE(systemd_notify("READY=1"));
  ::unsetenv("NOTIFY_SOCKET");
  EXPECT_FALSE(systemd_notify("READY=1"));
}

TEST(SystemdNotify, WatchdogPeriodFromTheEnvironment) {
  ::unsetenv("WATCHDOG_PID");
  ::unsetenv("WATCHDOG_USEC");
  EXPECT_EQ(systemd_watchdog_usec(), 0u);
  ::setenv("WATCHDOG_USEC", "30000000", 1);
  EXPECT_EQ(systemd_watchdog_usec(), 30000000u);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_EQ(systemd_watchdog_usec(), 30000000u);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);  // another process's
  EXPECT_EQ(systemd_watchdog_usec(), 0u);
  ::unsetenv("WATCHDOG_PID");
  ::setenv("WATCHDOG_USEC", "30s", 1);  // not a number
  EXPECT_EQ(systemd_watchdog_usec(), 0u);
  ::unsetenv("WATCHDOG_USEC");
}

}  // namespace
}  // namespace flowmark::daemon
