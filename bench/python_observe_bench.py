#!/usr/bin/python3
"""bench/python_observe_bench.py BUILD_DIR [--capture F] [--repeat R] [--chains LIST]

How fast flowmark.observe(path).to_pandas() turns a capture into a DataFrame, against the
observer's own time, on the 5M-frame 1M-flow capture of bench/observe_bench.sh (the same
generator, bench/observe_gen, and the same cache: BUILD_DIR/observe_bench/
gen_5000000p_1000000f.pcap, made when missing or older than the generator).

Each round (R, default 5; the order of the runs alternates between rounds), the capture read
once beforehand so that it is in the page cache:
  cli       `flowmark observe -r F > /dev/null` (whole process: the records formatted as JSON)
  observer  flowmark.observe(F) read to the end keeping no record (Run.discard_all): the C++
            observer's own time, chains included, in this process
  arrays    flowmark.observe(F).to_arrays()
  pandas    flowmark.observe(F).to_pandas()
The figure of issue 16: flows / (pandas - observer) — the DataFrame's cost beyond the
observer's own work (records kept in C++ columns, numpy arrays, str objects for the addresses,
pandas' assembly) — against the target of 3,000,000 flows/s, per round, wall and CPU time.
On a shared machine the difference of two whole runs is noisy; so also printed: the same cost
timed inside the runs (Run.timing()): the sink filling the columns (finish() with the records
kept minus finish() without: every flow of this capture stays open to the end, so all come
out there), the C++ → numpy step and pandas' own part. Medians over the rounds, with their
spread (min-max).

Needs Debian's /usr/bin/python3 with numpy and pandas, and the module built
(PYTHONPATH is set from BUILD_DIR). A benchmark, not a test: it asserts nothing.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time


def median_spread(xs):
    return statistics.median(xs), min(xs), max(xs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("--capture", help="the capture (default: the 1M-flow one of observe_bench.sh)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chains", default="basic,tcp")
    ap.add_argument("--packets", type=int, default=5_000_000)
    ap.add_argument("--flows", type=int, default=1_000_000)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    sys.path.insert(0, os.path.join(build, "python"))
    import flowmark  # noqa: E402  (from the build tree)
    import pandas  # noqa: F401,E402

    cap = args.capture
    if cap is None:
        gen = os.path.join(build, "bench", "observe_gen")
        cap = os.path.join(build, "observe_bench",
                           f"gen_{args.packets}p_{args.flows}f.pcap")
        if not os.path.exists(cap) or (os.path.exists(gen) and
                                       os.path.getmtime(gen) > os.path.getmtime(cap)):
            if not os.path.exists(gen):
                sys.exit(f"{gen} is missing: configure with FLOWMARK_BENCH=ON and build "
                         "observe_gen (or pass --capture)")
            os.makedirs(os.path.dirname(cap), exist_ok=True)
            print(f"== generating {cap}", flush=True)
            subprocess.run([gen, "--packets", str(args.packets), "--flows", str(args.flows),
                            cap + ".tmp"], check=True)
            os.replace(cap + ".tmp", cap)
    flowmark_bin = os.path.join(build, "flowmark")

    def warm():
        with open(cap, "rb") as f:
            while f.read(1 << 24):
                pass

    # Each run: (wall seconds, CPU seconds, what it made). CPU time (user + system of this
    # process, or of the child for the CLI) is what other work on a shared machine disturbs
    # least: the figures are given both ways.
    def cli():
        t, c = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([flowmark_bin, "observe", "-r", cap, "--chains", args.chains],
                       stdout=subprocess.DEVNULL, check=True)
        c2 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (time.perf_counter() - t,
                c2.ru_utime + c2.ru_stime - c.ru_utime - c.ru_stime, None)

    def timed(fn):
        # The result is freed after the clock stops (freeing a million str objects is not
        # making them).
        t, c = time.perf_counter(), time.process_time()
        made, keep = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        del keep
        return wall, cpu, made

    def observer():
        def run():
            o = flowmark.observe(cap, chains=args.chains)
            o._run.discard_all()
            return (o.stats["emitted"], o._run.timing()["finish"]), o
        return timed(run)

    def arrays():
        def run():
            o = flowmark.observe(cap, chains=args.chains)
            a = o.to_arrays()
            return (len(a["sip"]), o._run.timing()), (o, a)
        return timed(run)

    def to_pandas():
        def run():
            o = flowmark.observe(cap, chains=args.chains)
            df = o.to_pandas()
            return (len(df), o._run.timing()), (o, df)
        return timed(run)

    runs = [("cli", cli), ("observer", observer), ("arrays", arrays), ("pandas", to_pandas)]
    busy = os.getloadavg()[0]
    print(f"== {cap}, chains {args.chains}; {os.cpu_count()} CPUs, load average {busy:.2f} "
          "before the runs (other work on the machine slows every figure)", flush=True)
    times = {name: [] for name, _ in runs}
    cpus = {name: [] for name, _ in runs}
    conversions, cpu_conversions, splits = [], [], []
    flows = None
    for r in range(args.repeat):
        order = runs if r % 2 == 0 else list(reversed(runs))
        got = {}
        for name, fn in order:
            warm()
            got[name] = fn()
            times[name].append(got[name][0])
            cpus[name].append(got[name][1])
        flows, discard_finish = got["observer"][2]
        n_pd, timing = got["pandas"][2]
        if n_pd != flows or got["arrays"][2][0] != flows:
            sys.exit(f"rows differ: observer {flows}, arrays {got['arrays'][2][0]}, "
                     f"pandas {n_pd}")
        conversions.append(got["pandas"][0] - got["observer"][0])
        cpu_conversions.append(got["pandas"][1] - got["observer"][1])
        splits.append((timing["observe"], timing["convert"],
                       got["pandas"][0] - timing["observe"] - timing["convert"],
                       timing["finish"] - discard_finish))
        print(f"round {r + 1}: " + ", ".join(f"{n} {got[n][0]:.2f} s ({got[n][1]:.2f} CPU)"
                                            for n, _ in runs), flush=True)
    print(f"\n{flows:,} flows; medians of {args.repeat} rounds (min-max), wall and CPU:")
    for name, _ in runs:
        m, lo, hi = median_spread(times[name])
        cm, clo, chi = median_spread(cpus[name])
        print(f"  {name:9} {m:6.2f} s  ({lo:.2f}-{hi:.2f})   CPU {cm:6.2f} s  ({clo:.2f}-{chi:.2f})")
    for what, xs in (("wall", conversions), ("CPU", cpu_conversions)):
        m, lo, hi = median_spread(xs)
        rate = flows / m if m > 0 else float("inf")
        print(f"  DataFrame beyond the observer ({what}, pandas - observer, per round): "
              f"{m:.3f} s ({lo:.3f}-{hi:.3f})")
        print(f"  => {rate / 1e6:.2f} M flows/s into the DataFrame after the observer's own "
              f"time ({what}; target 3.00: {'met' if rate >= 3e6 else 'NOT met'})")
    obs, conv, pd_part, sink = (statistics.median(x) for x in zip(*splits))
    print(f"  inside the pandas run: reading+observing with the records kept {obs:.3f} s, of "
          f"which the sink filling the C++ columns {sink:.3f} s (finish() with the records "
          f"kept minus without: the capture's flows all come out there); C++ columns -> numpy "
          f"{conv:.3f} s; pandas' assembly {pd_part:.3f} s")
    print(f"  => sink + numpy + pandas: {sink + conv + pd_part:.3f} s, "
          f"{flows / (sink + conv + pd_part) / 1e6:.2f} M flows/s (numpy + pandas alone: "
          f"{flows / (conv + pd_part) / 1e6:.2f} M flows/s)")


if __name__ == "__main__":
    main()
