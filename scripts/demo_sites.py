#!/usr/bin/env python3
"""Simulated sites for `make demo-collector`: each site runs transfers to the others and
announces them as a flowd/flowmark host would — a start firefly, an ongoing one every few
seconds with the bytes so far (`usage`), an end one — sent to a collector over UDP.

    python3 scripts/demo_sites.py [--to 127.0.0.1:10514] [--duration SECONDS] [--rate FLOWS/S]

Any Python 3 (stdlib only). The sites' networks are those of scripts/demo-collector.sh's
[[site]] tables; experiments and activities are ids of the public registry (atlas, cms,
lhcb, dune). Ctrl-C ends the open transfers (their end fireflies are sent) and stops.
"""
import argparse
import datetime
import json
import random
import signal
import socket
import time

SITES = {
    "CERN-PROD": ("128.142.{}.{}", "2001:1458:201::{:x}"),
    "BNL-ATLAS": ("130.199.{}.{}", "2620:0:210::{:x}"),
    "FNAL": ("131.225.{}.{}", "2620:6a:0:8421::{:x}"),
    "DESY-HH": ("131.169.{}.{}", "2001:638:700::{:x}"),
}
# (experiment id, activity id, typical rate in bytes/s)
WORK = [(2, 15, 400e6), (2, 16, 250e6), (3, 1, 300e6), (4, 1, 120e6), (8, 1, 60e6)]


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
        timespec="microseconds")


class Transfer:
    def __init__(self, now, v6):
        src_site, dst_site = random.sample(sorted(SITES), 2)
        fmt = 1 if v6 else 0
        if v6:
            self.src = SITES[src_site][fmt].format(random.randrange(1, 65535))
            self.dst = SITES[dst_site][fmt].format(random.randrange(1, 65535))
        else:
            self.src = SITES[src_site][fmt].format(random.randrange(256), random.randrange(1, 255))
            self.dst = SITES[dst_site][fmt].format(random.randrange(256), random.randrange(1, 255))
        self.afi = "ipv6" if v6 else "ipv4"
        self.sport = random.randrange(20000, 60000)
        self.dport = random.choice([1094, 443, 2811])
        self.exp, self.act, rate = random.choice(WORK)
        self.rate = rate * random.uniform(0.3, 1.5)
        self.start = now
        self.duration = random.uniform(5, 60)
        self.sent = 0

    def firefly(self, state, now):
        life = {"state": state, "current-time": rfc3339(now), "start-time": rfc3339(self.start)}
        doc = {"version": 1, "flow-lifecycle": life,
               "flow-id": {"afi": self.afi, "src-ip": self.src, "dst-ip": self.dst,
                           "protocol": "tcp", "src-port": self.sport, "dst-port": self.dport},
               "context": {"experiment-id": self.exp, "activity-id": self.act,
                           "application": "demo-sites"}}
        if state != "start":
            self.sent = int(self.rate * (now - self.start))
            doc["usage"] = {"received": self.sent // 50, "sent": self.sent}
        if state == "end":
            life["end-time"] = rfc3339(now)
        return (f"<134>1 {rfc3339(now)} demo-site flowmark - firefly-json - "
                f"{json.dumps(doc)}").encode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--to", default="127.0.0.1:10514", help="collector HOST:PORT")
    ap.add_argument("--duration", type=float, default=0, help="seconds (0: until Ctrl-C)")
    ap.add_argument("--rate", type=float, default=2.0, help="new transfers a second")
    a = ap.parse_args()
    host, _, port = a.to.rpartition(":")
    addr = (host.strip("[]"), int(port))
    sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_DGRAM)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    live, t0, next_new, sent = [], time.time(), time.time(), 0
    while not stop and (a.duration <= 0 or time.time() - t0 < a.duration):
        now = time.time()
        while next_new <= now:
            t = Transfer(now, v6=random.random() < 0.4)
            sock.sendto(t.firefly("start", now), addr)
            t.next_update = now + 2
            live.append(t)
            next_new += random.expovariate(a.rate)
            sent += 1
        for t in list(live):
            if now - t.start >= t.duration:
                sock.sendto(t.firefly("end", now), addr)
                live.remove(t)
            elif now >= t.next_update:
                sock.sendto(t.firefly("ongoing", now), addr)
                t.next_update = now + 2
        time.sleep(0.05)
    for t in live:
        sock.sendto(t.firefly("end", time.time()), addr)
    print(f"demo_sites: {sent} transfers announced to {a.to}")


if __name__ == "__main__":
    main()
