# Shared helpers for scripts that build test hosts: two network namespaces joined by a
# veth pair, with IPv4/IPv6 addresses and multicast routes. Source it, then:
#   netns_pair NAME_A NAME_B   # creates $NAME_A/$NAME_B, veth fm-a/fm-b, 10.99.0.1/2, fd99::1/2
#   netns_cleanup              # removes them (call from a trap)
NETNS_CREATED=()

netns_pair() {
  local a=$1 b=$2
  ip netns add "$a"
  NETNS_CREATED+=("$a")
  ip netns add "$b"
  NETNS_CREATED+=("$b")
  ip link add fm-a netns "$a" type veth peer name fm-b netns "$b"
  local ns dev addr4 addr6
  for ns in "$a" "$b"; do
    if [[ $ns == "$a" ]]; then dev=fm-a addr4=10.99.0.1/24 addr6=fd99::1/64
    else dev=fm-b addr4=10.99.0.2/24 addr6=fd99::2/64; fi
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr4" dev "$dev"
    ip -n "$ns" addr add "$addr6" dev "$dev" nodad
    ip -n "$ns" link set "$dev" up
    ip -n "$ns" route add 224.0.0.0/4 dev "$dev"
  done
}

netns_cleanup() {
  local ns
  for ns in "${NETNS_CREATED[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  NETNS_CREATED=()
}
