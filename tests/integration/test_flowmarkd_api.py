#!/usr/bin/env python3
"""Integration tests of flowmarkd's REST API source (`type = "api"`, flowd-go's api plugin) and
of `ongoing` fireflies in flowd-go's enrichment shapes, in network namespaces (the Site of
test_flowmarkd.py: hosts A, B, C on one bridge).

    /usr/bin/python3 tests/integration/test_flowmarkd_api.py BUILD_DIR [unittest options]

- start and end flows over HTTP (flowd-go's flow event, a firefly document, the dummy routes):
  fireflies at a collector in B; GET / lists the routes;
- refused requests (bad JSON, wrong method, unknown state, wrong content type, a body over
  max_body, unknown path, a missing field) get their 4xx with the reason in a JSON body, are
  counted by outcome (flowmark_api_requests_total), and a good request still works after them;
- a bearer token: required (a config error) for a listen address that is not loopback, and
  checked on every request;
- 100 HTTP connections held open at once (all of civetweb's threads busy, the rest queued)
  while a named-pipe source keeps delivering: every pipe line's firefly arrives meanwhile, then
  all 100 requests are answered 200 and their fireflies arrive;
- `ongoing_shape = "lean"`: a collector receives ongoing fireflies of a real TCP connection
  whose "netlink" object has flowd-go's lean members.
flowmarkd runs in A; HTTP clients run in A (python3 in the namespace, stdlib http.client and
sockets). Needs root. Python 3 stdlib only (Debian's /usr/bin/python3).
"""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

import test_flowmarkd as fmd  # takes BUILD_DIR from sys.argv
from test_flowmarkd import FLOWMARKD, Proc, ServiceTestCase, Site, write_pipe
from test_flowmarkd_e2e import SERVER, Client

# An HTTP client in a namespace, driven by JSON lines on stdin, answering one JSON line each:
#   {"op": "seq", "requests": [R, ...]}  → [{"status", "body", "headers"}, ...] (one at a time)
#   {"op": "hold", "requests": [R, ...]} → every request's connection opened, its headers and
#       the first byte of its body sent, then "held N"; on the next line ("go") the rest of each
#       body is sent at once and the answers come as in "seq".
# R: {"method", "path", "body" (text, or JSON when a dict), "size" (a body of N bytes),
#     "headers", "port"}
HTTP = r"""
import http.client, json, socket, sys, threading
def body_of(r):
    if r.get("size"):
        return b"x" * r["size"]
    b = r.get("body")
    if b is None:
        return None
    return (b if isinstance(b, str) else json.dumps(b)).encode()
def answer(status, data, headers):
    return {"status": status, "body": data.decode(errors="replace"),
            "headers": {k.lower(): v for k, v in headers}}
def one(r):
    c = http.client.HTTPConnection("127.0.0.1", r["port"], timeout=30)
    try:
        c.request(r["method"], r["path"], body=body_of(r), headers=r.get("headers", {}))
        resp = c.getresponse()
        return answer(resp.status, resp.read(), resp.getheaders())
    except OSError as ex:
        return {"status": 0, "error": repr(ex)}
    finally:
        c.close()
def held(r, ready, go, out, i):
    body = body_of(r) or b""
    head = (f"{r['method']} {r['path']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    try:
        s = socket.create_connection(("127.0.0.1", r["port"]), timeout=60)
        s.sendall(head + body[:1])
    except OSError as ex:
        out[i] = {"status": 0, "error": repr(ex)}
        ready.release()
        return
    ready.release()
    go.wait()
    try:
        s.sendall(body[1:])
        resp = http.client.HTTPResponse(s)
        resp.begin()
        out[i] = answer(resp.status, resp.read(), resp.getheaders())
    except OSError as ex:
        out[i] = {"status": 0, "error": repr(ex)}
    finally:
        s.close()
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "seq":
        print(json.dumps([one(r) for r in cmd["requests"]]), flush=True)
    elif cmd["op"] == "hold":
        rs = cmd["requests"]
        ready, go, out = threading.Semaphore(0), threading.Event(), [None] * len(rs)
        ts = [threading.Thread(target=held, args=(r, ready, go, out, i)) for i, r in enumerate(rs)]
        for t in ts:
            t.start()
        for _ in rs:
            ready.acquire()
        print(f"held {sum(1 for o in out if o is not None)}", flush=True)  # failed ones
        sys.stdin.readline()
        go.set()
        for t in ts:
            t.join()
        print(json.dumps(out), flush=True)
"""

PORT = 7777


def setUpModule():
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (network namespaces)")
    for exe in (fmd.FLOWMARK, FLOWMARKD):
        if not os.access(exe, os.X_OK):
            raise RuntimeError(f"{exe} is missing: build first")
    # Addresses of its own: the other flowmarkd tests may run at the same time.
    fmd.SITE = Site(v4_prefix="10.77.0.", v6_prefix="fd77::")
    unittest.addModuleCleanup(fmd.SITE.destroy)
    fmd.SITE.create()


class Http(Proc):
    def __init__(self, site, host):
        super().__init__(site.argv(host, [sys.executable, "-c", HTTP]), stdin=subprocess.PIPE)

    def _send(self, obj):
        self.p.stdin.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
        self.p.stdin.flush()

    def _reply(self, n, prefix, timeout=60):
        self.wait_for(lambda: any(l.startswith(prefix) for l in self.out[n:]), timeout,
                      f"the HTTP client's {prefix!r}")
        return [l for l in self.out[n:] if l.startswith(prefix)][0]

    def seq(self, *requests):
        n = len(self.out)
        self._send({"op": "seq", "requests": [{"port": PORT, **r} for r in requests]})
        return json.loads(self._reply(n, "["))

    def hold(self, requests):
        n = len(self.out)
        self._send({"op": "hold", "requests": [{"port": PORT, **r} for r in requests]})
        return int(self._reply(n, "held").split()[1])

    def go(self):
        n = len(self.out)
        self._send("go")
        return json.loads(self._reply(n, "["))

    def kill(self):
        super().kill()
        if not self.p.stdin.closed:
            self.p.stdin.close()


def post(body, content_type="application/json", **kw):
    return {"method": "POST", "path": "/flow", "body": body,
            "headers": {"Content-Type": content_type}, **kw}


def flowd_go(state, src, dst, exp=2, act=1, **extra):
    fam = 10 if src.startswith("[") else 2
    return {"State": state, "Protocol": 0, "Family": fam, "Src": src, "Dst": dst,
            "Experiment": exp, "Activity": act, "StartTs": "0001-01-01T00:00:00Z",
            "EndTs": "0001-01-01T00:00:00Z", "CurrentTs": "0001-01-01T00:00:00Z",
            "Application": "test", **extra}


class ApiTestCase(ServiceTestCase):
    def http(self):
        h = Http(self.site, "A")
        self.addCleanup(h.kill)
        return h

    def api_daemon(self, api=None, sources=None, **backend):
        coll_backend = {"type": "firefly", "to_destination": False,
                        "collectors": [f"{self.B4}:20514"], **backend}
        return self.daemon({"source": {"api": {"type": "api", "listen": f"127.0.0.1:{PORT}",
                                               **(api or {})}, **(sources or {})},
                            "backend": {"ff": coll_backend}})

    def at(self, got, sport, state):
        return [g for g in got if g["firefly"]["flow-id"]["src-port"] == sport
                and g["firefly"]["flow-lifecycle"]["state"] == state]


class TestApiFlows(ApiTestCase):
    def test_start_and_end_over_http_reach_a_collector_in_another_namespace(self):
        A4, B4, A6, B6 = self.A4, self.B4, self.A6, self.B6
        coll = self.collector("B", 20514)
        d = self.api_daemon()
        h = self.http()
        routes = h.seq({"method": "GET", "path": "/"})[0]
        self.assertEqual(routes["status"], 200, routes)
        self.assertEqual(routes["headers"]["content-type"], "application/json")
        self.assertEqual(sorted((r["method"], r["path"])
                                for r in json.loads(routes["body"])["ApiRoutes"]),
                         [("GET", "/"), ("GET", "/dummy/end"), ("GET", "/dummy/start"),
                          ("POST", "/flow")])
        # flowd-go's flow event (IPv4), a firefly document (IPv6), the dummy flow.
        ff6 = json.loads(fmd.firefly_doc(A6, B6, flow_id={"afi": "ipv6", "src-port": 40002,
                                                          "dst-port": 443}))
        starts = h.seq(post(flowd_go(2, f"{A4}:40001", f"{B4}:5777")), post(ff6),
                       {"method": "GET", "path": "/dummy/start"})
        for r in starts:
            self.assertEqual(r["status"], 200, r)
        echo = json.loads(starts[0]["body"])
        self.assertEqual((echo["State"], echo["Src"], echo["Dst"], echo["Family"],
                          echo["Experiment"], echo["Activity"], echo["Application"]),
                         (2, f"{A4}:40001", f"{B4}:5777", 2, 2, 1, "test"))
        self.assertEqual(json.loads(starts[2]["body"])["Src"], "[::1]:2345")
        got = coll.wait_count(3)
        self.assertFirefly(self.at(got, 40001, "start")[0], state="start", src=A4, sport=40001,
                           dst=B4, dport=5777, exp=2, act=1)
        self.assertEqual(self.at(got, 40002, "start")[0]["firefly"]["flow-lifecycle"]
                         ["start-time"], "2025-03-25T10:00:00.000000+00:00")
        self.assertEqual(self.at(got, 2345, "start")[0]["firefly"]["context"],
                         {"experiment-id": 1, "activity-id": 1, "application": "flowmark"})
        ff6["flow-lifecycle"].update({"state": "end", "end-time": "2025-03-25T10:05:00Z"})
        ends = h.seq(post(flowd_go(3, f"{A4}:40001", f"{B4}:5777")), post(ff6),
                     {"method": "GET", "path": "/dummy/end"})
        for r in ends:
            self.assertEqual(r["status"], 200, r)
        got = coll.wait_count(6)
        for sport in (40001, 40002, 2345):
            self.assertEqual(len(self.at(got, sport, "end")), 1, got)
        self.assertFirefly(self.at(got, 40001, "end")[0], state="end", src=A4, sport=40001,
                           dst=B4, dport=5777, exp=2, act=1,
                           start=self.at(got, 40001, "start")[0]["firefly"]["flow-lifecycle"]
                           ["start-time"])
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertEqual(d.c("flowmark_api_requests_total", source="api", outcome="ok"), 7)
        self.assertEqual(d.c("flowmark_source_events_total", source="api", state="start"), 3)
        self.assertEqual(d.c("flowmark_source_events_total", source="api", state="end"), 3)
        self.assertEqual(self.assertAccounted(d, ["ff"]), {"ff": 0})

    def test_refused_requests_get_4xx_with_reason_are_counted_and_service_goes_on(self):
        A4, B4 = self.A4, self.B4
        coll = self.collector("B", 20514)
        d = self.api_daemon()
        h = self.http()
        good = flowd_go(2, f"{A4}:40010", f"{B4}:5777")
        cases = [  # (request, status, outcome)
            (post('{"State": 2, "Src": '), 400, "bad_json"),
            (post(flowd_go(9, f"{A4}:40011", f"{B4}:5777")), 400, "unknown_state"),
            (post({"State": 2, "Dst": f"{B4}:5777"}), 400, "missing_field"),
            (post(flowd_go(2, f"{A4}", f"{B4}:5777")), 400, "bad_field"),
            (post(good, content_type="text/plain"), 415, "bad_content_type"),
            (post(None, size=1 << 20), 413, "too_large"),
            ({"method": "GET", "path": "/flow"}, 405, "bad_method"),
            ({"method": "DELETE", "path": "/dummy/start"}, 405, "bad_method"),
            ({"method": "GET", "path": "/nowhere"}, 404, "not_found"),
        ]
        answers = h.seq(*(c[0] for c in cases))
        for (req, status, outcome), a in zip(cases, answers):
            self.assertEqual(a["status"], status, (req["path"], a))
            body = json.loads(a["body"])
            self.assertEqual(body["outcome"], outcome, a)
            self.assertTrue(body["message"], a)
        self.assertEqual(answers[6]["headers"]["allow"], "POST")
        self.assertIn("State", json.loads(answers[1]["body"])["message"])
        self.assertIn("max_body", json.loads(answers[5]["body"])["message"])
        # The service is unaffected: a good request still works, its firefly arrives.
        ok = h.seq(post(good))[0]
        self.assertEqual(ok["status"], 200, ok)
        got = coll.wait_count(1)
        self.assertEqual(len(self.at(got, 40010, "start")), 1, got)
        self.assertTrue(d.running())
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        for outcome, n in (("ok", 1), ("bad_json", 1), ("unknown_state", 1),
                           ("missing_field", 1), ("bad_field", 1), ("bad_content_type", 1),
                           ("too_large", 1), ("bad_method", 2), ("not_found", 1)):
            self.assertEqual(d.c("flowmark_api_requests_total", source="api", outcome=outcome), n,
                             (outcome, d.counters))
        self.assertEqual(len(got), 1, got)  # nothing refused reached the pipeline

    def test_bearer_token(self):
        # Off loopback without a token: a config error naming the key.
        cfg = os.path.join(self.dir, "open.toml")
        with open(cfg, "w") as f:
            f.write(fmd.toml({"source": {"api": {"type": "api", "listen": f"0.0.0.0:{PORT}"}},
                              "backend": {"r": {"type": "records",
                                                "path": os.path.join(self.dir, "r.jsonl")}}}))
        r = subprocess.run([FLOWMARKD, "--check", "-c", cfg], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn("[source.api] token", r.stderr)
        self.assertIn("loopback", r.stderr)
        # With a token (here on loopback too): every request must carry it.
        coll = self.collector("B", 20514)
        d = self.api_daemon(api={"token": "s3cret-token"})
        h = self.http()
        good = post(flowd_go(2, f"{self.A4}:40020", f"{self.B4}:5777"))
        none, wrong, right = h.seq(
            good, {**good, "headers": {**good["headers"], "Authorization": "Bearer nope"}},
            {**good, "headers": {**good["headers"], "Authorization": "Bearer s3cret-token"}})
        self.assertEqual((none["status"], wrong["status"], right["status"]), (401, 401, 200),
                         (none, wrong, right))
        self.assertEqual(none["headers"]["www-authenticate"], 'Bearer realm="flowmark"')
        self.assertEqual(len(coll.wait_count(1)), 1)
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertEqual(d.c("flowmark_api_requests_total", source="api", outcome="unauthorized"),
                         2)


class TestApiConcurrency(ApiTestCase):
    def test_100_connections_held_while_the_pipe_source_delivers(self):
        A4, B4 = self.A4, self.B4
        coll = self.collector("B", 20514)
        d = self.api_daemon(sources={"pipe": self.pipe_source()})
        h = self.http()
        n_http, n_pipe = 100, 2000
        requests = [post(flowd_go(2, f"{A4}:{41000 + i}", f"{B4}:5777")) for i in range(n_http)]
        t0 = time.monotonic()
        self.assertEqual(h.hold(requests), 0, "some connections failed")
        # Every HTTP worker thread holds a half-sent request (the rest wait in civetweb's
        # queue): the pipe source is not held up.
        write_pipe(self.pipe, "".join(f"start tcp {A4} {30000 + i} {B4} 5777 2 1\n"
                                      for i in range(n_pipe)))
        coll.wait_count(n_pipe, timeout=20)
        pipe_secs = time.monotonic() - t0
        answers = h.go()
        self.assertEqual([a["status"] for a in answers], [200] * n_http,
                         [a for a in answers if a["status"] != 200][:3])
        got = coll.wait_count(n_pipe + n_http, timeout=20)
        sports = {g["firefly"]["flow-id"]["src-port"] for g in got}
        self.assertEqual(len(sports), n_pipe + n_http)
        print(f"  {n_pipe} pipe lines delivered in {pipe_secs:.2f} s with {n_http} HTTP "
              f"connections held; then {n_http} requests answered", file=sys.stderr)
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertEqual(d.c("flowmark_api_requests_total", source="api", outcome="ok"), n_http)
        self.assertEqual(self.assertAccounted(d, ["ff"]), {"ff": 0})


    def test_a_full_backend_slows_http_clients_and_drops_nothing(self):
        # The API is a lossless source: while a backend's queue is full (a records backend
        # writing to a FIFO whose reader is stopped) events wait in the source, the HTTP
        # clients with them, and nothing is dropped; when the reader goes on, all arrive.
        A4, B4 = self.A4, self.B4
        fifo = os.path.join(self.dir, "stalled.fifo")
        os.mkfifo(fifo)
        reader = Proc(["sh", "-c", f"exec cat {fifo} > {fifo}.out"])
        self.addCleanup(reader.kill)
        d = self.daemon({
            "service": {"queue_size": 64, "drain_timeout": 60},
            "source": {"api": {"type": "api", "listen": f"127.0.0.1:{PORT}"}},
            "backend": {"slow": {"type": "records", "path": fifo, "flush": "event"}}})
        os.kill(reader.pid, signal.SIGSTOP)
        h = self.http()
        n = 1500  # records of ~300 bytes: many times the FIFO's 64 KiB plus the queue's 64
        answers = h.seq(*[post(flowd_go(2, f"{A4}:{42000 + i}", f"{B4}:5777"))
                          for i in range(n)])
        self.assertEqual([a["status"] for a in answers], [200] * n,
                         [a for a in answers if a["status"] != 200][:3])
        os.kill(reader.pid, signal.SIGCONT)
        out = fifo + ".out"
        d.wait_for(lambda: os.path.exists(out) and sum(1 for _ in open(out)) == n, 30,
                   f"{n} records through the FIFO")
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertEqual(self.assertAccounted(d, ["slow"]), {"slow": 0})


LEAN_TCP = {"Retransmits", "advMss", "bytesSent", "deliveryRate", "minRtt", "pMtu", "rtt",
            "rttVar", "sndCwnd", "sndMss", "sndSsThresh"}


class TestOngoingShapes(ApiTestCase):
    def test_lean_ongoing_fireflies_of_a_real_connection(self):
        A4, B4 = self.A4, self.B4
        server = Proc(self.site.argv("B", [sys.executable, "-c", SERVER, "5203"]))
        self.addCleanup(server.kill)
        server.wait_for(lambda: "listening" in server.out, 10, "the listener in B")
        client = Client(self.site, "A")
        self.addCleanup(client.kill)
        sport = int(client.cmd(f"open c1 {B4} 5203", "open c1")[3])
        client.cmd("send c1 100000", "sent c1")
        client.cmd("drain c1", "drained c1")
        coll = self.collector("B", 20514)
        d = self.daemon({
            "source": {"pipe": self.pipe_source()},
            "backend": {"ff": {"type": "firefly", "to_destination": False,
                               "collectors": [f"{B4}:20514"], "ongoing_shape": "lean",
                               "ongoing_interval": 0.2}}})
        write_pipe(self.pipe, f"start tcp {A4} {sport} {B4} 5203 2 1\n")
        coll.wait_for(lambda: sum('"ongoing"' in l for l in coll.out) >= 2, 10,
                      "two ongoing fireflies")
        ongoing = [g for g in coll.fireflies()
                   if g["firefly"]["flow-lifecycle"]["state"] == "ongoing"]
        for g in ongoing:
            f = g["firefly"]
            self.assertEqual(f["flow-id"]["src-port"], sport, f)
            self.assertIn("current-time", f["flow-lifecycle"])
            nl = f["netlink"]
            self.assertLessEqual(set(nl), {"tcpInfo", "cong"}, nl)
            self.assertEqual(set(nl["tcpInfo"]), LEAN_TCP, nl)
            self.assertGreaterEqual(nl["tcpInfo"]["bytesSent"], 100000, nl)
            self.assertGreater(nl["tcpInfo"]["sndMss"], 0, nl)
            self.assertTrue(nl["cong"]["algorithm"], nl)
            self.assertGreaterEqual(f["usage"]["sent"], 100000, f)
        client.cmd("close c1", "closed c1")
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())

    def test_shape_without_interval_is_refused(self):
        cfg = os.path.join(self.dir, "shape.toml")
        with open(cfg, "w") as f:
            f.write(fmd.toml({"source": {"pipe": self.pipe_source()},
                              "backend": {"ff": {"type": "firefly", "collectors": ["192.0.2.1"],
                                                 "ongoing_shape": "compatible",
                                                 "ongoing_interval": 0}}}))
        r = subprocess.run([FLOWMARKD, "--check", "-c", cfg], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn("[backend.ff] ongoing_shape", r.stderr)


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
