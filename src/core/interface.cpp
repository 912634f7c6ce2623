#include "flowmark/core/interface.hpp"

#include <ifaddrs.h>
#include <net/if.h>

#include <algorithm>
#include <charconv>
#include <memory>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace flowmark {
namespace {

struct IfAddrsDeleter {
  void operator()(ifaddrs* p) const noexcept { freeifaddrs(p); }
};
using IfAddrs = std::unique_ptr<ifaddrs, IfAddrsDeleter>;

IfAddrs get_ifaddrs() {
  ifaddrs* head = nullptr;
  if (getifaddrs(&head) != 0) return IfAddrs(nullptr);
  return IfAddrs(head);
}

std::optional<IpAddress> address_of(const ifaddrs* ifa) {
  if (ifa->ifa_addr == nullptr) return std::nullopt;
  if (ifa->ifa_addr->sa_family != AF_INET && ifa->ifa_addr->sa_family != AF_INET6)
    return std::nullopt;
  return Endpoint::from_sockaddr(ifa->ifa_addr).address;
}

Interface describe(std::uint32_t index, const std::string& name) {
  Interface ifc{index, name, std::nullopt, false, false};
  auto all = get_ifaddrs();
  for (const ifaddrs* p = all.get(); p != nullptr; p = p->ifa_next) {
    if (name != p->ifa_name) continue;
    ifc.multicast = (p->ifa_flags & IFF_MULTICAST) != 0;
    ifc.up = (p->ifa_flags & IFF_UP) != 0;
    if (auto a = address_of(p); a && a->is_v4() && !ifc.ipv4) ifc.ipv4 = a;
  }
  return ifc;
}

std::string known_interfaces() {
  std::vector<std::string> names;
  struct if_nameindex* all = if_nameindex();
  if (all != nullptr) {
    for (auto* p = all; p->if_index != 0; ++p) names.emplace_back(p->if_name);
    if_freenameindex(all);
  }
  return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace

Result<Interface> resolve_interface(std::string_view spec) {
  if (spec.empty()) return fail(Errc::kInvalidArgument, "empty interface name");
  std::uint32_t index = 0;
  auto [p, ec] = std::from_chars(spec.data(), spec.data() + spec.size(), index);
  if (ec == std::errc() && p == spec.data() + spec.size()) {
    char name[IF_NAMESIZE];
    if (if_indextoname(index, name) == nullptr)
      return fail(Errc::kNotFound, fmt::format("no interface with index {} (interfaces: {})", spec,
                                               known_interfaces()));
    return describe(index, name);
  }
  if (spec.find_first_of(".:") != std::string_view::npos) {
    auto addr = IpAddress::parse(spec);
    if (addr) {
      auto all = get_ifaddrs();
      for (const ifaddrs* q = all.get(); q != nullptr; q = q->ifa_next) {
        if (auto a = address_of(q); a && *a == *addr)
          return describe(if_nametoindex(q->ifa_name), q->ifa_name);
      }
      return fail(Errc::kNotFound, fmt::format("no local interface has address {} (interfaces: {})",
                                               spec, known_interfaces()));
    }
  }
  if (spec.size() >= IF_NAMESIZE)
    return fail(Errc::kInvalidArgument, fmt::format("interface name '{}' is too long", spec));
  std::string name(spec);
  index = if_nametoindex(name.c_str());
  if (index == 0)
    return fail(Errc::kNotFound,
                fmt::format("no interface named '{}' (interfaces: {})", spec, known_interfaces()));
  return describe(index, name);
}

std::string interface_name(std::uint32_t index) {
  char name[IF_NAMESIZE];
  if (if_indextoname(index, name) != nullptr) return name;
  return std::to_string(index);
}

std::vector<IpAddress> local_addresses() {
  std::vector<IpAddress> out;
  auto all = get_ifaddrs();
  for (const ifaddrs* p = all.get(); p != nullptr; p = p->ifa_next)
    if (auto a = address_of(p); a && std::find(out.begin(), out.end(), *a) == out.end())
      out.push_back(*a);
  return out;
}

}  // namespace flowmark
