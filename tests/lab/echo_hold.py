"""One echo flow held open across an event: connects to HOST:PORT, checks that a chunk
comes back, waits until the file GO exists (at most 60 s), checks another chunk, half-closes
and reads to the end. Prints "ok" or what went wrong; exit 0 only for ok.
Usage: echo_hold.py HOST PORT GO"""
import os
import socket
import sys
import time

host, port, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def echo(s, data):
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(len(data) - len(got))
        if not chunk:
            raise ConnectionError(f"closed after {len(got)} of {len(data)} bytes")
        got += chunk
    if got != data:
        raise ValueError("bytes differ")


try:
    s = socket.create_connection((host, port), 10)
    s.settimeout(20)
    echo(s, b"before " * 1000)
    print("open", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.05)
    echo(s, b"after " * 1000)
    s.shutdown(socket.SHUT_WR)
    rest = s.recv(100)
    print("ok" if rest == b"" else f"{len(rest)} bytes after EOF", flush=True)
    sys.exit(0 if rest == b"" else 1)
except Exception as e:  # noqa: BLE001 - the test reads what happened
    print(f"{type(e).__name__}: {e}", flush=True)
    sys.exit(1)
