#!/usr/bin/env bash
# make run: a multicast demonstration between two network namespaces ("hosts") joined by a
# veth pair — SAY in one, RECV and HEAR in the other — using the built binaries.
set -euo pipefail
build=${1:-build/release}
bin=$(cd "$build" && pwd)/flowmark
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=netns.sh
source "$top/scripts/netns.sh"
if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root to create network namespaces (sudo make run)" >&2
  exit 1
fi
A=fm-demo-a-$$ B=fm-demo-b-$$
trap netns_cleanup EXIT
netns_pair "$A" "$B"
group=239.1.1.1 port=5000

echo "== host A (10.99.0.1) sends 5 sequenced datagrams to $group:$port; host B receives (JSON)"
ip netns exec "$B" "$bin" mcast recv --group $group --port $port --iface fm-b \
  --count 5 --json --stats --timeout 3 &
recv=$!
sleep 0.3
ip netns exec "$A" "$bin" mcast say --group $group --port $port --iface fm-a \
  --message "hello from A" --count 5 --interval 0.1
wait $recv

echo
echo "== IPv6, link-local group ff02::1:77 on fm-b, seed grammar (multicast RECV --use-std)"
ip netns exec "$B" "$build/multicast" RECV --use-std --port $port --iface fm-b \
  --join-mcast-groups ff02::1:77 --bind-group ff02::1:77 --timeout 3 &
recv=$!
sleep 0.3
ip netns exec "$A" "$build/multicast" SAY --mcast-group ff02::1:77 --iface fm-a --port $port \
  --message "Hello World!"
wait $recv

echo
echo "== HEAR on B acknowledges A's datagram; A prints the reply"
ip netns exec "$B" "$bin" mcast hear --group $group --port $port --iface fm-b --timeout 3 &
hear=$!
sleep 0.3
ip netns exec "$A" "$bin" mcast say --group $group --port $port --iface fm-a \
  --message "are you there?" --wait-reply --timeout 2
wait $hear
echo
echo "demo: done (namespaces $A and $B removed)"
