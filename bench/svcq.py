#!/usr/bin/env python3
"""Clients for bench/service (run inside a lab namespace, or imported for control()).

  svcq.py hold HOST PORT COUNT [--secs S]     COUNT idle TCP flows open until stdin closes
  svcq.py ctl SOCKET COUNT                    COUNT `status json` requests, one at a time
  svcq.py metrics HOST PORT COUNT             COUNT GET /metrics on one keep-alive connection
  svcq.py flows HOST PORT --want NAME         a GET /who every --every s until NAME answers
  svcq.py bulk get|post HOST PORT FLOWS --skip S --secs T
                                              FLOWS parallel transfers; the rate over T
                                              seconds after the first S
  svcq.py slowdns ADDR PORT --delay MS        a DNS server (UDP and TCP) answering every
                                              query NXDOMAIN after MS, many at once

Each prints one line of key=value pairs (hold: once every flow is open, before waiting).
Times are time.monotonic(), which is the same clock in every namespace.
"""
import argparse
import asyncio
import errno
import selectors
import socket
import sys
import threading
import time


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1e3 if xs else 0.0


def control(path, line, timeout=5.0):
    """One request on tprosshy's control socket -> (exit code, text)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(line.encode() + b"\n")
        chunks = []
        while True:
            c = s.recv(1 << 16)
            if not c:
                break
            chunks.append(c)
    code, _, text = b"".join(chunks).partition(b"\n")
    return int(code), text.decode(errors="replace")


def latencies(lat, size):
    print(f"n={len(lat)} p50_ms={pct(lat, 0.5):.3f} p99_ms={pct(lat, 0.99):.3f} "
          f"max_ms={max(lat) * 1e3:.3f} bytes={size}")
    return 0


def run_ctl(a):
    lat, size = [], 0
    for _ in range(a.count):
        t = time.monotonic()
        code, text = control(a.socket, "status json")
        lat.append(time.monotonic() - t)
        if code != 0:
            print(f"error=status_answered_{code}")
            return 1
        size = len(text)
    return latencies(lat, size)


def http_get(s, buf, path):
    """One GET on a keep-alive connection -> (body, leftover bytes)."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    while b"\r\n\r\n" not in buf:
        c = s.recv(1 << 16)
        if not c:
            raise ConnectionError("closed before the header")
        buf += c
    head, _, buf = buf.partition(b"\r\n\r\n")
    length = next(int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n")
                  if ln.lower().startswith(b"content-length:"))
    while len(buf) < length:
        c = s.recv(1 << 16)
        if not c:
            raise ConnectionError("closed in the body")
        buf += c
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    return buf[:length], buf[length:]


def run_metrics(a):
    lat, size = [], 0
    with socket.create_connection((a.host, a.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for _ in range(a.count):
            t = time.monotonic()
            body, buf = http_get(s, buf, "/metrics")
            lat.append(time.monotonic() - t)
            size = len(body)
    return latencies(lat, size)


def run_hold(a):
    """Opens COUNT flows, at most 200 connects pending at once; sends nothing on them."""
    sel = selectors.DefaultSelector()
    open_, pending, failed = [], 0, 0
    t0 = time.monotonic()
    deadline = t0 + a.secs
    started = 0
    while (started < a.count or pending) and time.monotonic() < deadline:
        while started < a.count and pending < 200:
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex((a.host, a.port))
            started += 1
            if err not in (0, errno.EINPROGRESS):
                failed += 1
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE)
            pending += 1
        for key, _ in sel.select(0.1):
            s = key.fileobj
            sel.unregister(s)
            pending -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                failed += 1
                s.close()
            else:
                open_.append(s)
    print(f"open={len(open_)} failed={failed} secs={time.monotonic() - t0:.3f}", flush=True)
    sel.close()
    # hold them until told (stdin closes) or the time is up
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    sel.select(max(0.0, deadline - time.monotonic()))
    for s in open_:
        s.close()
    return 0 if len(open_) == a.count else 1


def run_flows(a):
    """Starts a flow every --every seconds (each with its own --timeout) and prints when the
    first one answered by --want started and answered."""
    sel = selectors.DefaultSelector()
    request = b"GET /who HTTP/1.0\r\n\r\n"
    t0 = time.monotonic()
    deadline = t0 + a.deadline
    nxt, sent = t0, 0
    print("started", flush=True)
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= nxt:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((a.host, a.port))
            sel.register(s, selectors.EVENT_WRITE, [now, b""])
            sent += 1
            nxt += a.every
        for key, ev in sel.select(max(0.0, min(nxt, deadline) - time.monotonic())):
            s, data = key.fileobj, key.data
            try:
                if ev & selectors.EVENT_WRITE:
                    s.send(request)
                    sel.modify(s, selectors.EVENT_READ, data)
                    continue
                c = s.recv(4096)
            except OSError:
                c = b""
            if c:
                data[1] += c
                continue
            sel.unregister(s)
            s.close()
            if f"name={a.want} ".encode() in data[1]:
                print(f"first_start={data[0]:.6f} first_ok={time.monotonic():.6f} sent={sent}")
                return 0
        for key in list(sel.get_map().values()):
            if time.monotonic() - key.data[0] > a.timeout:
                sel.unregister(key.fileobj)
                key.fileobj.close()
    print(f"error=no_answer_from_{a.want} sent={sent}")
    return 1


def run_bulk(a):
    """Each flow asks for (or sends) more than it can move in the time; the figure counts
    only what moves after the first --skip seconds, so whatever passes at first (a rate
    limit's initial credit, TCP's ramp) is left out. Then the flows are closed."""
    huge = 1 << 40
    moved = [0] * a.flows
    stop = threading.Event()
    errors = []

    def flow(i):
        try:
            with socket.create_connection((a.host, a.port), timeout=10) as s:
                if a.way == "get":
                    s.sendall(f"GET /bytes/{huge} HTTP/1.0\r\n\r\n".encode())
                    while not stop.is_set():
                        c = s.recv(1 << 18)
                        if not c:
                            raise ConnectionError("closed by the other end")
                        moved[i] += len(c)
                else:
                    # a fixed, small send buffer: bytes sent are then bytes on their way,
                    # not a buffer that autotuning keeps growing during the figure
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 17)
                    s.sendall(f"POST /upload HTTP/1.0\r\nContent-Length: {huge}\r\n\r\n"
                              .encode())
                    chunk = bytes(1 << 18)
                    while not stop.is_set():
                        moved[i] += s.send(chunk)
        except OSError as e:
            errors.append(f"flow {i}: {e}")

    threads = [threading.Thread(target=flow, args=(i,), daemon=True) for i in range(a.flows)]
    for t in threads:
        t.start()
    time.sleep(a.skip)
    b0, t0 = sum(moved), time.monotonic()
    time.sleep(a.secs)
    b1, t1 = sum(moved), time.monotonic()
    stop.set()
    for t in threads:
        t.join(10)
    ok = a.flows - len(errors)
    print(f"ok={ok} flows={a.flows} skipped={b0} bytes={b1 - b0} secs={t1 - t0:.6f} "
          f"mbps={(b1 - b0) / (t1 - t0) / 1e6:.2f}" + (f" error={errors[0]!r}" if errors else ""))
    return 0 if ok == a.flows else 1


def nxdomain(q):
    """The answer to query q: its id and first question, QR RD RA set, rcode NXDOMAIN (what
    follows the question, such as an EDNS record, is left out)."""
    i = 12
    while i < len(q) and q[i]:
        i += 1 + q[i]
    return q[:2] + bytes([0x80 | (q[2] & 0x01), 0x83, 0, 1, 0, 0, 0, 0, 0, 0]) + q[12:i + 5]


class SlowUdp(asyncio.DatagramProtocol):
    def __init__(self, delay):
        self.delay = delay

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, q, addr):
        if len(q) >= 12:
            asyncio.get_running_loop().call_later(self.delay, self.transport.sendto,
                                                  nxdomain(q), addr)


async def slow_tcp(delay, reader, writer):
    """Queries of one connection are answered concurrently, each after the delay."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            n = int.from_bytes(await reader.readexactly(2), "big")
            q = await reader.readexactly(n)
            if n >= 12:
                a = nxdomain(q)
                loop.call_later(delay, writer.write, len(a).to_bytes(2, "big") + a)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    await asyncio.sleep(delay)
    writer.close()


async def serve_slowdns(a):
    loop = asyncio.get_running_loop()
    delay = a.delay / 1e3
    await loop.create_datagram_endpoint(lambda: SlowUdp(delay), local_addr=(a.addr, a.port))
    server = await asyncio.start_server(lambda r, w: slow_tcp(delay, r, w), a.addr, a.port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def run_slowdns(a):
    asyncio.run(serve_slowdns(a))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("hold")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p.add_argument("--secs", type=float, default=120)
    p = sub.add_parser("ctl")
    p.add_argument("socket")
    p.add_argument("count", type=int)
    p = sub.add_parser("metrics")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    p = sub.add_parser("flows")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--want", required=True)
    p.add_argument("--every", type=float, default=0.05)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--deadline", type=float, default=20.0)
    p = sub.add_parser("bulk")
    p.add_argument("way", choices=["get", "post"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("flows", type=int)
    p.add_argument("--skip", type=float, default=1.0)
    p.add_argument("--secs", type=float, default=3.0)
    p = sub.add_parser("slowdns")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("--delay", type=float, required=True)
    a = ap.parse_args()
    return {"hold": run_hold, "ctl": run_ctl, "metrics": run_metrics, "flows": run_flows,
            "bulk": run_bulk, "slowdns": run_slowdns}[a.mode](a)


if __name__ == "__main__":
    raise SystemExit(main())
