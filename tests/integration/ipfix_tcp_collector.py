"""A TCP IPFIX collector for the tests (test_ipfix.py, test_flowmarkd_ipfix.py): it accepts
connections on 127.0.0.1 and keeps each one's bytes (a session: an IPFIX stream over TCP has
the byte format of an RFC 5655 file, so libfixbuf's ipfixDump and python3-ipfix read it) until
the peer closes it. For Debian's /usr/bin/python3."""

import socket
import threading
import time


class TcpCollector:
    def __init__(self, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.sessions, self.closed = [], []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.sessions.append(b"")
                self.closed.append(False)
                i = len(self.sessions) - 1
            threading.Thread(target=self._read, args=(conn, i), daemon=True).start()

    def _read(self, conn, i):
        with conn:
            while True:
                data = conn.recv(65536)
                with self.lock:
                    if not data:
                        self.closed[i] = True
                        return
                    self.sessions[i] += data

    def wait_closed(self, n=1, timeout=20):
        """True once the first n sessions were closed by the peer (polled, up to timeout s)."""
        deadline = time.monotonic() + timeout
        while not (len(self.closed) >= n and all(self.closed[:n])):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def close(self):
        self.sock.close()
