#!/usr/bin/env bash
# make demo-collector: flowmarkd as the collector of several simulated sites.
#   - source `fireflies`: UDP 127.0.0.1:10514 (the Scitags firefly port);
#   - [[site]] tables for four sites (scripts/demo_sites.py sends as them);
#   - backend `store`: the flows in an SQLite file (read it with `flowmark report`);
#   - backend `dashboard`: the live page, http://127.0.0.1:8750/ ;
#   - backend `prometheus`: aggregate series per experiment, activity and site pair on
#     http://127.0.0.1:9000/metrics (no per-flow series: flow_metrics = false).
# Runs until Ctrl-C on a terminal; otherwise for RUN_SECONDS (default 20). At the end the
# report of what was stored is printed.
set -euo pipefail
build=${1:-build/release}
bin=$(cd "$build" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/flowmark-collector.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -f $work/flows.db ]]; then
    echo "== flowmark report --store $work/flows.db --by experiment,src_site,dst_site"
    "$bin/flowmark" report --store "$work/flows.db" --by experiment,src_site,dst_site || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

static=$bin/dashboard
[[ -d $static ]] || static=/usr/share/flowmark/dashboard

cat > "$work/flowmark.toml" <<TOML
[service]
flow_timeout = 300

[[site]]
name = "CERN-PROD"
networks = ["128.142.0.0/16", "2001:1458::/32"]
[[site]]
name = "BNL-ATLAS"
networks = ["130.199.0.0/16", "2620:0:210::/48"]
[[site]]
name = "FNAL"
networks = ["131.225.0.0/16", "2620:6a::/32"]
[[site]]
name = "DESY-HH"
networks = ["131.169.0.0/16", "2001:638:700::/48"]

[source.fireflies]
type = "firefly"
bind = "127.0.0.1"
port = 10514

[backend.store]
type = "store"
path = "$work/flows.db"

[backend.dashboard]
type = "dashboard"
listen = "127.0.0.1:8750"
static_dir = "$static"

[backend.metrics]
type = "prometheus"
listen = "127.0.0.1:9000"
flow_metrics = false
TOML

echo "== configuration ($work/flowmark.toml)"
"$bin/flowmarkd" --check -c "$work/flowmark.toml"
echo "== flowmarkd -c $work/flowmark.toml"
"$bin/flowmarkd" -c "$work/flowmark.toml" &
pids+=($!)
sleep 1
echo "== dashboard: http://127.0.0.1:8750/   metrics: http://127.0.0.1:9000/metrics"

seconds=${RUN_SECONDS:-20}
[[ -t 0 ]] && seconds=0
echo "== four simulated sites announce their transfers (scripts/demo_sites.py)"
python3 "$top/scripts/demo_sites.py" --to 127.0.0.1:10514 --duration "$seconds" --rate 3 &
pids+=($!)
wait "${pids[-1]}" || true
sleep 1
echo "== aggregate series (bytes by experiment and site pair)"
curl -s http://127.0.0.1:9000/metrics | grep '^flowmark_collector_bytes_total' | head -20 || true
