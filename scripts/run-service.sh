#!/usr/bin/env bash
# make run: flowmarkd on a built-in default, showing what it marks.
#   - source `sockets`: this host's TCP connections (netlink sock_diag, every 2 s), each
#     classified by a rule (experiment "default", activity "default");
#   - backend `firefly`: fireflies to a `flowmark firefly listen` collector on 127.0.0.1;
#   - backend `prometheus`: metrics on http://127.0.0.1:9000/metrics.
# The collector prints every firefly. So that something happens on a quiet machine, a TCP
# connection to the exporter is opened every few seconds and held for 3 s (start, then end).
# Runs until Ctrl-C on a terminal; otherwise for RUN_SECONDS (default 20).
set -euo pipefail
build=${1:-build/release}
bin=$(cd "$build" && pwd)
work=$(mktemp -d /tmp/flowmark-run.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

cat > "$work/flowmark.toml" <<TOML
[service]
flow_timeout = 3600

[[rule]]
dst = ["0.0.0.0/0", "::/0"]
experiment = "default"
activity = "default"

[source.connections]
type = "sockets"
period = 2.0
skip_private = false       # this demo's connections are on loopback
announce_existing = true

[backend.fireflies]
type = "firefly"
to_destination = false
collectors = ["127.0.0.1:10514"]

[backend.metrics]
type = "prometheus"
listen = "127.0.0.1:9000"
TOML

echo "== configuration ($work/flowmark.toml)"
"$bin/flowmarkd" --check -c "$work/flowmark.toml"
echo "== collector: flowmark firefly listen --bind 127.0.0.1 (one line per firefly)"
"$bin/flowmark" firefly listen --bind 127.0.0.1 --port 10514 --format text &
pids+=($!)
sleep 0.3
echo "== flowmarkd -c $work/flowmark.toml"
"$bin/flowmarkd" -c "$work/flowmark.toml" &
pids+=($!)
sleep 1

seconds=${RUN_SECONDS:-20}
[[ -t 0 ]] && seconds=0
start=$SECONDS
while true; do
  # A TCP connection held for 3 s: one start and one end firefly.
  if exec 3<>/dev/tcp/127.0.0.1/9000; then
    sleep 3
    exec 3>&-
  fi
  live=$(curl -s http://127.0.0.1:9000/metrics | grep -E '^flowmark_live_flows ' || true)
  echo "-- metrics: ${live:-flowmark_live_flows ?}"
  sleep 2
  if ((seconds > 0 && SECONDS - start >= seconds)); then break; fi
done
