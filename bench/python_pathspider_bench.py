#!/usr/bin/python3
"""Packets per second of pathspider's ECN chain in Python (flowmark.pathspider.Observer)
against the same fields from flowmark's C++ chains, on one capture.

    /usr/bin/python3 bench/python_pathspider_bench.py [--build DIR] [--packets N]
                                                      [--flows K] [--repeat R] [CAPTURE]

Without CAPTURE, DIR/bench/observe_gen writes one (N frames, 1,000,000 by default, of K
concurrent flows, 20,000) into DIR/python_pathspider_bench/ (kept for later runs). Each
row is the best of R runs (3) of reading the whole capture, records included:
- floor: flowmark.pathspider.Observer with no chain (C++ grouping and timers, a dict per
  flow, no Python per packet) — the binding's own cost;
- trivial: one Python chain whose ip4/ip6 return True (a Python call per packet);
- pathspider basic+ecn: pathspider.chains.basic.BasicChain and pathspider.chains.ecn.ECNChain,
  unmodified, in Python;
- C++ basic,ecn: `flowmark observe -r CAPTURE --chains basic,ecn --format jsonl` (the CLI,
  output to /dev/null: the same fields from the C++ chains);
- flowmark.observe basic,ecn: the same through the Python module, when this build has it.
Ratios are to the floor of the same run. The first run of each row also warms the page
cache. Say how many cores the machine had and what else ran when quoting the figures.
"""
import argparse
import os
import queue
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--build", default=os.path.join(here, "build", "release"))
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--flows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("capture", nargs="?")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.build, "python"))

    import flowmark.pathspider as fps
    try:
        from pathspider.chains.basic import BasicChain
        from pathspider.chains.ecn import ECNChain
    except ImportError as e:
        sys.exit(f"needs Debian's pathspider (apt-get install pathspider): {e}")

    capture = args.capture
    if capture is None:
        out_dir = os.path.join(args.build, "python_pathspider_bench")
        os.makedirs(out_dir, exist_ok=True)
        capture = os.path.join(out_dir, f"gen_{args.packets}_{args.flows}.pcap")
        if not os.path.exists(capture):
            gen = os.path.join(args.build, "bench", "observe_gen")
            if not os.access(gen, os.X_OK):
                sys.exit(f"no {gen}: build it (cmake --build {args.build} --target observe_gen)")
            subprocess.run([gen, "--packets", str(args.packets), "--flows", str(args.flows),
                            capture], check=True, stdout=subprocess.DEVNULL)

    class Trivial:
        def ip4(self, rec, ip, rev):
            return True

        def ip6(self, rec, ip, rev):
            return True

    def python_run(chains):
        observer = fps.Observer("pcapfile:" + capture, chains=chains)
        out = queue.SimpleQueue()
        t = time.perf_counter()
        observer.run_flow_enqueuer(out)
        dt = time.perf_counter() - t
        return observer.stats()["packets"], out.qsize() - 1, dt

    flowmark_bin = os.path.join(args.build, "flowmark")

    def cli_run():
        t = time.perf_counter()
        proc = subprocess.run([flowmark_bin, "observe", "-r", capture, "--chains", "basic,ecn",
                               "--format", "jsonl"], stdout=subprocess.PIPE, check=True)
        dt = time.perf_counter() - t
        return None, proc.stdout.count(b"\n"), dt

    rows = [("floor (no chain)", lambda: python_run([])),
            ("trivial Python chain", lambda: python_run([Trivial])),
            ("pathspider basic+ecn (Python)", lambda: python_run([BasicChain, ECNChain])),
            ("C++ basic,ecn (flowmark observe)", cli_run)]
    try:
        import flowmark
        observe = getattr(flowmark, "observe", None)
        if callable(observe):
            def module_run():
                t = time.perf_counter()
                n = sum(1 for _ in observe(capture, chains=("basic", "ecn")))
                return None, n, time.perf_counter() - t
            rows.append(("C++ basic,ecn (flowmark.observe)", module_run))
    except Exception:  # noqa: BLE001 - the other part may not be built here
        pass

    print(f"capture: {capture} ({os.path.getsize(capture) / 1e6:.0f} MB); "
          f"{os.cpu_count()} CPUs; best of {args.repeat}")
    packets = None
    floor = None
    for name, fn in rows:
        best = None
        for _ in range(args.repeat):
            n, records, dt = fn()
            packets = n if n is not None else packets
            best = dt if best is None else min(best, dt)
        rate = packets / best
        floor = floor or rate
        print(f"  {name:36s} {rate / 1e6:7.3f} M packets/s  {best:7.2f} s  {records} records  "
              f"(x{rate / floor:.2f} of the floor)")


if __name__ == "__main__":
    main()
