#!/usr/bin/env bash
# Installs every Debian package flowmark needs to build, test, fuzz, lint and benchmark.
# Idempotent: when everything is present it only runs dpkg-query and exits.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config git
  # libraries
  libfmt-dev libspdlog-dev libcli11-dev libsimdjson-dev libcurl4-openssl-dev libpcap-dev
  # the collector's store: SQLite (embedded) and PostgreSQL (libpq)
  libsqlite3-dev libpq-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev python3
  # observer tests: captures built independently of our code, and a peer to cross-check
  python3-scapy tshark
  # IPFIX export tests: independent readers (libfixbuf's ipfixDump, python3-ipfix) and
  # libfixbuf itself for bench/ipfix_writer_bench.cpp
  libfixbuf-tools libfixbuf-dev python3-ipfix
  # observer tests: pathspider's own test captures (tests/data/*.pcap), its chains and Observer,
  # and python-libtrace (which pathspider decodes packets with)
  pathspider python3-libtrace
  # integration tests: namespaces, veth, nftables (loss injection; no sch_netem here), ss
  iproute2 iputils-ping procps kmod nftables
  # fuzzing (libFuzzer) and lint
  clang-19 libclang-rt-19-dev clang-format-19 clang-tidy-19
  # benchmarks: GNU time (CPU per process), iperf2 (a peer to compare with), perf (profiles)
  time iperf linux-perf
  # benchmarks: peer flow meters for bench/observe_bench.sh (softflowd, nfpcapd, argus +
  # racluster, ndpiReader; tshark is above)
  softflowd nfdump argus-server argus-client libndpi-bin
  # service (flowmarkd): TOML config, Prometheus exporter, eBPF (libbpf skeletons); sd_notify is
  # spoken without libsystemd
  libtomlplusplus-dev prometheus-cpp-dev libbpf-dev bpftool
  # service: flowd-go's YAML configuration (/etc/flowd-go/conf.yaml) read as it is
  libyaml-cpp-dev
  # eBPF datapath: the Linux UAPI headers the TC program includes (clang-19 is above)
  linux-libc-dev
  # service tests: a real Prometheus server scrapes the exporter; a real STUN server
  prometheus coturn
  # kafka backend: librdkafka (its mock cluster is the tests' broker); kcat, the tests'
  # independent consumer
  librdkafka-dev kcat
  # store tests: a real PostgreSQL server (initdb/pg_ctl of postgresql-15) started by the test
  postgresql
  # make run: the demo reads the exporter with curl
  curl
  # make package and its test: dpkg-shlibdeps (dpkg-dev) and file for CPack's dependency
  # list; lintian; systemd-analyze (systemd) and man (man-db) check the installed package
  dpkg-dev file lintian systemd man-db
  # manual pages: tests/docs/check_man.py renders each with groff (man-db uses groff-base too)
  groff-base
  # the Python module (python/): Debian's python3 headers and pybind11; its tests (pytest) and
  # the DataFrame / array conversions (pandas, numpy)
  python3-dev pybind11-dev python3-pytest python3-pandas python3-numpy
  # virtualenvs of Debian's python3 (`python3 -m flowmark.venv`, its test and the package test)
  python3-venv
  # the dashboard's page in a real browser (tests/integration/test_dashboard.py)
  chromium
)
# The dashboard's charting library is installed by the build with `npm ci` (cmake/Dashboard.cmake):
# Debian's npm where no npm is installed (a Node.js from elsewhere brings its own).
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when they are absent or older than a day.
if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1) ]]; then
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
