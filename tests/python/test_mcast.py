"""flowmark.mcast and flowmark.multicast between two hosts: network namespaces A and B joined
by a veth pair (netns_helpers.VethHosts). Sockets are opened inside a namespace by a thread
that entered it (netns_helpers.in_netns); scripts in the `multicast` package's style run as
`ip netns exec NS /usr/bin/python3` processes. Needs root (skipped, saying so, without)."""

import os
import re
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import BUILD, need_root
from netns_helpers import VethHosts, _default_sigint, _sh, in_netns, wait_stdout, wait_until

import flowmark.mcast as mcast

A4, B4, A4_SECOND = "10.78.0.1", "10.78.0.2", "10.78.0.11"
A6, B6 = "fd78::1", "fd78::2"
IF_A, IF_B = "vethA", "vethB"
PY = "/usr/bin/python3"
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("MULTICAST_")},
       "PYTHONPATH": os.path.join(BUILD, "python")}


@pytest.fixture(scope="module")
def hosts():
    need_root()
    h = VethHosts("pymc", (IF_A, A4, A6), (IF_B, B4, B6))
    try:
        h.create()
        _sh(["ip", "-n", h.a, "addr", "add", f"{A4_SECOND}/24", "dev", IF_A])
        yield h
    finally:
        h.destroy()


def receiver(ns, *args, **kw):
    return in_netns(ns, lambda: mcast.Receiver(*args, **kw))


def send(ns, *args, **kw):
    return in_netns(ns, lambda: mcast.send(*args, **kw))


def recv_n(rx, n, timeout=5):
    """n datagrams from rx, read with recv_many before a deadline."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(got)} of {n} datagrams within {timeout} s"
        got += rx.recv_many(n - len(got), timeout=left)
    return got


# ---- flowmark.mcast ------------------------------------------------------------------------

def test_ipv4_send_and_receive(hosts):
    with receiver(hosts.b, "239.78.1.1", 42001, iface=IF_B) as rx:
        assert rx.family == 4 and rx.port == 42001
        assert send(hosts.a, "239.78.1.1", 42001, b"hello", iface=IF_A) == 1
        payload, sender, group = rx.recv(timeout=5)
        assert (payload, sender[0], group) == (b"hello", A4, "239.78.1.1")
        assert isinstance(sender[1], int) and sender[1] > 0
        assert rx.recv(timeout=0) is None  # exactly one arrived
        # str payloads go out as UTF-8; a list is one datagram per item.
        send(hosts.a, "239.78.1.1", 42001, ["één", b"two", bytearray(b"three")], iface=IF_A)
        assert [d[0] for d in recv_n(rx, 3)] == ["één".encode(), b"two", b"three"]


def test_ipv6_link_local_with_interface(hosts):
    group = "ff02::1:78"
    with receiver(hosts.b, group, 42002, iface=IF_B) as rx:
        assert rx.family == 6
        send(hosts.a, group, 42002, b"six", iface=IF_A)
        payload, sender, got_group = rx.recv(timeout=5)
        assert (payload, got_group) == (b"six", group)
        # A link-local sender keeps its scope, so a reply can be sent to it.
        assert sender[0] == f"{hosts.link_local[hosts.a]}%{IF_B}"
        # The interface given as the group's scope works too.
        send(hosts.a, f"{group}%{IF_A}", 42002, b"scoped")
        assert rx.recv(timeout=5)[0] == b"scoped"
        # Reply from the receiving socket to the sender (source port = the group port).
        with in_netns(hosts.a, lambda: mcast.Sender(group, 42002, IF_A)) as tx:
            tx.send(b"ask")
            _, asker, _ = rx.recv(timeout=5)
            assert asker[1] == tx.local[1]
            rx.send_to(asker[0], asker[1], b"answer")
            # The sender's socket is not joined: read the unicast reply with a plain socket
            # on its descriptor.
            import socket
            s = socket.socket(fileno=os.dup(tx.fileno()))
            try:
                s.settimeout(5)
                data, frm = s.recvfrom(100)
            finally:
                s.close()
            assert data == b"answer" and frm[1] == 42002


def test_ipv6_needs_an_interface_for_link_scope(hosts):
    with pytest.raises(ValueError, match="ff02::1:79"):
        receiver(hosts.b, "ff02::1:79", 42003)
    with pytest.raises(OSError) as e:
        receiver(hosts.b, "239.78.1.9", 42003, iface="nosuch0")
    assert "nosuch0" in str(e.value)
    with pytest.raises(ValueError, match="not a multicast group"):
        receiver(hosts.b, B4, 42003)


def test_ssm_only_the_chosen_source_arrives(hosts):
    group = "232.78.1.1"
    with receiver(hosts.b, group, 42004, iface=IF_B, source=A4) as rx:
        # Sent first from A's other address (not joined), then from A4: the first datagram to
        # arrive is A4's, and nothing else is waiting.
        send(hosts.a, group, 42004, b"from the other", iface=IF_A, bind=A4_SECOND)
        send(hosts.a, group, 42004, b"from the source", iface=IF_A, bind=A4)
        payload, sender, _ = rx.recv(timeout=5)
        assert (payload, sender[0]) == (b"from the source", A4)
        assert rx.recv(timeout=0) is None


def test_recv_many_with_selectors_and_iteration(hosts):
    group, port = "239.78.2.1", 42005
    with receiver(hosts.b, [group, "239.78.2.2"], port, iface=IF_B, batch=32) as rx:
        sel = selectors.DefaultSelector()
        sel.register(rx, selectors.EVENT_READ)  # by fileno()
        assert sel.select(timeout=0) == []
        payloads = [b"%04d" % i for i in range(200)]
        assert send(hosts.a, group, port, payloads, iface=IF_A) == 200
        send(hosts.a, "239.78.2.2", port, b"other group", iface=IF_A)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 201 and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=deadline - time.monotonic()):
                batch = key.fileobj.recv_many()
                assert 1 <= len(batch) <= 32  # one recvmmsg of at most `batch`
                got += batch
        assert [d[0] for d in got[:200]] == payloads  # in order, none lost
        assert got[200][0] == b"other group" and got[200][2] == "239.78.2.2"
        assert rx.received == 201
        sel.close()
        # Iteration blocks for the next datagram.
        send(hosts.a, group, port, b"iterated", iface=IF_A)
        assert next(iter(rx))[0] == b"iterated"
    assert rx.closed
    with pytest.raises(ValueError, match="closed"):
        rx.recv(timeout=0)


def test_timeout_and_close_from_another_thread(hosts):
    rx = receiver(hosts.b, "239.78.3.1", 42006, iface=IF_B)
    t0 = time.monotonic()
    assert rx.recv(timeout=0.2) is None
    assert rx.recv_many(10, timeout=0.2) == []
    assert 0.35 <= time.monotonic() - t0 < 2
    # A recv() blocked for ever returns None once another thread closes the receiver; the
    # iteration of a closed receiver ends.
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("got", rx.recv()))
    t.start()
    wait_until(lambda: t.is_alive(), 5, "recv() started")
    rx.close()
    t.join(5)
    assert not t.is_alive() and out["got"] is None
    assert rx.closed


def test_ctrl_c_interrupts_a_blocking_recv(hosts):
    code = ("import flowmark.mcast as m\n"
            "r = m.Receiver('239.78.4.1', 42007, iface='vethB')\n"
            "print('ready', flush=True)\n"
            "r.recv()\n")
    p = subprocess.Popen(["ip", "netns", "exec", hosts.b, PY, "-c", code], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=_default_sigint)
    try:
        wait_stdout(p, lambda out: "ready" in out, what="receiver ready")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=5)
        assert time.monotonic() - t0 < 2
        # An uncaught KeyboardInterrupt ends Python by SIGINT.
        assert p.returncode == -signal.SIGINT and b"KeyboardInterrupt" in err, err
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_sequenced_stream_statistics(hosts):
    group, port = "239.78.5.1", 42008
    with receiver(hosts.b, group, port, iface=IF_B, stats=True) as rx:
        with in_netns(hosts.a, lambda: mcast.Sender(group, port, IF_A)) as tx:
            assert tx.send_stream(b"payload", count=1000, size=64) == 1000
            sport, stream = tx.local[1], tx.stream_id
        got = recv_n(rx, 1000)
        assert all(len(d[0]) == 64 for d in got)
        header, message = mcast.strip_stream_header(got[7][0])
        assert header["sequence"] == 7 and header["stream"] == stream
        assert message.startswith(b"payload.")
        stats = rx.stats()
        assert stats["plain"] == 0 and stats["received"] == 1000
        (s,) = stats["streams"]
        assert (s["source"], s["sport"], s["group"], s["stream"]) == (A4, sport, group, stream)
        assert (s["received"], s["unique"], s["expected"], s["lost"]) == (1000, 1000, 1000, 0)
        assert (s["first_seq"], s["last_seq"], s["duplicates"]) == (0, 999, 0)
        assert s["delay_us"]["min"] <= s["delay_us"]["avg"] <= s["delay_us"]["max"]

    # Gaps, duplicates and reordering, crafted: sequences 0 1 2 5 5 3 of one stream.
    with receiver(hosts.b, group, port, iface=IF_B, stats=True) as rx:
        seqs = [0, 1, 2, 5, 5, 3]
        payloads = [mcast.encode_stream_header(77, q) + b"x" for q in seqs] + [b"plain"]
        send(hosts.a, group, port, payloads, iface=IF_A)
        recv_n(rx, len(payloads))
        stats = rx.stats()
        (s,) = stats["streams"]
        assert (s["stream"], s["received"], s["unique"], s["expected"]) == (77, 6, 5, 6)
        assert (s["lost"], s["duplicates"], s["reordered"]) == (1, 1, 1)
        assert s["loss_pct"] == pytest.approx(100 / 6, abs=1e-3)
        assert stats["plain"] == 1


# ---- flowmark.multicast: scripts of the `multicast` package, the import changed --------------

SCRIPT = textwrap.dedent('''\
    import sys
    import flowmark.multicast as multicast   # was: import multicast
    from flowmark.multicast import send, recv, hear, skt

    role, group, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    iface = None if sys.argv[4] == "-" else sys.argv[4]
    if role == "hear":
        args = ["--daemon", "HEAR", "--port", port, "--group", group]
        if iface:
            args += ["--iface", iface]
        code, detail = multicast.__main__.McastDispatch().doStep(args)
        print("HEAR ended", code, detail, flush=True)
        sys.exit(code)
    elif role == "recv":
        for _ in range(10):   # RECV waits _MCAST_DEFAULT_TTL (1) second each time
            ok, text = recv.McastRECV().doStep(groups=[group], port=port, group=group,
                                               iface=iface)
            if ok:
                print("RECV", text, flush=True)
                sys.exit(0)
        sys.exit(1)
    elif role == "say":
        message = sys.argv[5:]
        ok, _ = send.McastSAY().doStep(group=group, port=port, data=message, iface=iface)
        sys.exit(0 if ok else 1)
    elif role == "ask":   # send with a socket of skt.genSocket and wait for HEAR's answer
        import socket
        family = socket.AF_INET6 if ":" in group else socket.AF_INET
        sock = skt.genSocket(family)
        sock.settimeout(5)
        dest = (group, port, 0, socket.if_nametoindex(iface)) if family == socket.AF_INET6 \\
            else (group, port)
        sock.sendto(" ".join(sys.argv[5:]).encode(), dest)
        data, _ = sock.recvfrom(65535)
        skt.endSocket(sock)
        print(data.decode(), flush=True)
''')


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    path = tmp_path_factory.mktemp("seed") / "seed_style.py"
    path.write_text(SCRIPT)
    return str(path)


def run_in(ns, args, timeout=15):
    return subprocess.run(["ip", "netns", "exec", ns, PY, *args], env=ENV, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=_default_sigint)


def spawn_in(ns, args):
    return subprocess.Popen(["ip", "netns", "exec", ns, PY, *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_default_sigint)


def wait_joined(ns, dev, group, port, p):
    """Until `group` is joined on `dev` in `ns` and UDP `port` is bound there."""
    def ready():
        assert p.poll() is None, p.communicate()
        maddr = _sh(["ip", "-n", ns, "maddr", "show", "dev", dev]).stdout
        bound = _sh(["ip", "netns", "exec", ns, "ss", "-Hulpn"]).stdout
        return (re.search(rf"\s{re.escape(group)}(\s|$)", maddr) is not None
                and re.search(rf":{port}\s.*pid={p.pid},", bound) is not None)
    wait_until(ready, 10, f"{group} joined and port {port} bound in {ns}")


def finish(p, timeout=10):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"{p.args} still running after {timeout} s: {out!r} {err!r}")
    return p.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("group,port,iface_b,iface_a,sender", [
    ("239.78.6.1", 42010, None, None, A4),
    ("ff02::1:7a", 42011, IF_B, IF_A, "link-local"),
])
def test_package_style_script_say_recv_hear_stop(hosts, script, group, port, iface_b, iface_a,
                                                  sender):
    sender = hosts.link_local[hosts.a] if sender == "link-local" else sender
    b_if = iface_b or "-"
    a_if = iface_a or "-"
    # McastRECV in B, McastSAY in A.
    r = spawn_in(hosts.b, [script, "recv", group, str(port), b_if])
    wait_joined(hosts.b, IF_B, group, port, r)
    say = run_in(hosts.a, [script, "say", group, str(port), a_if, "Hello", "World!"])
    assert say.returncode == 0, say.stderr
    rc, out, err = finish(r)
    assert (rc, out) == (0, "RECV Hello World!\n"), err

    # McastHEAR (McastDispatch().doStep(["--daemon", "HEAR", ...])) in B answers A.
    h = spawn_in(hosts.b, [script, "hear", group, str(port), b_if])
    wait_joined(hosts.b, IF_B, group, port, h)
    ask = run_in(hosts.a, [script, "ask", group, str(port), a_if, "Hello", "there"])
    assert ask.returncode == 0, ask.stderr
    assert re.fullmatch(rf"HEAR \[ HELLO THERE SAID \('{re.escape(sender)}', \d+\) \] from "
                        rf"{re.escape(group)}\n", ask.stdout), ask.stdout
    assert h.poll() is None  # still serving
    # A datagram containing STOP is answered, then HEAR returns (0, (True, None)): exit 0.
    ask = run_in(hosts.a, [script, "ask", group, str(port), a_if, "please", "STOP"])
    assert ask.stdout.startswith("HEAR [ PLEASE STOP SAID"), ask.stdout + ask.stderr
    rc, out, err = finish(h)
    assert (rc, out) == (0, "HEAR ended 0 (True, None)\n"), err


def test_python_m_multicast_hear_stops_on_stop(hosts):
    group, port = "239.78.7.1", 42012
    h = spawn_in(hosts.b, ["-m", "flowmark.multicast", "--daemon", "HEAR", "--port", str(port),
                           "--group", group])
    wait_joined(hosts.b, IF_B, group, port, h)
    say = run_in(hosts.a, ["-m", "flowmark.multicast", "SAY", "--mcast-group", group, "--port",
                           str(port), "--message", "STOP"])
    assert say.returncode == 0, say.stderr
    rc, out, err = finish(h)
    assert rc == 0, err
    assert "found in sys.modules" not in err  # runpy's warning about a double import


def test_multicast_api_surface():
    import flowmark.multicast as multicast
    from flowmark.multicast import hear, recv, send, skt
    assert (hear, recv, send, skt) == (multicast.hear, multicast.recv, multicast.send,
                                       multicast.skt)
    assert multicast.genSocket is skt.genSocket and multicast.endSocket is skt.endSocket
    assert multicast._MCAST_DEFAULT_PORT == 59559
    assert multicast._MCAST_DEFAULT_GROUP == "224.0.0.1"
    assert multicast._MCAST_DEFAULT_TTL == 1
    assert multicast._MCAST_DEFAULT_BUFFER_SIZE == 1316
    assert multicast.EXIT_CODES[130] == (KeyboardInterrupt, "Interrupt (SIGINT)")
    assert multicast.get_exit_code_from_exception(PermissionError()) == 77
    assert multicast.exceptions.ShutdownCommandReceived().exit_code == 143
    assert multicast.__main__.McastDispatch().doStep(["NOOP"]) == (0, (True, None))
    assert multicast.__main__.McastDispatch().doStep("NOOP", []) == (0, (True, None))
    assert issubclass(multicast.send.McastSAY, multicast.mtool)
    assert multicast.env.validate_multicast_address("ff02::1%lo")
    assert not multicast.env.validate_multicast_address("10.0.0.1")
    sock = multicast.genSocket()
    assert sock.gettimeout() == 1
    assert multicast.endSocket(sock) is None
    with pytest.raises(SystemExit):
        multicast.__main__.McastDispatch().doStep(["SAY", "--port", "test"])
    # HearUDPHandler ignores an empty request, as the package's does.
    h = multicast.hear.HearUDPHandler(request=(None, None), client_address=("224.0.0.1", 1),
                                      server=None)
    assert h.handle() is None


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
