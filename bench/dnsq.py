#!/usr/bin/env python3
"""DNS load for the benchmark (run inside a lab namespace).

  dnsq.py udp  SERVER PORT (--same NAME | --prefix P --domain D) --count N [--inflight K]
  dnsq.py tcp1 SERVER PORT (--same NAME | --prefix P --domain D) --count N [--inflight K]

udp: N queries over one UDP socket, at most K in flight (K=1: sequential, for latency).
tcp1: one TCP connection per query (connect, send, read, close); K connections at once
(K=1: sequential).
Prints one line of key=value pairs; exit 0 only if every query got an answer.
"""
import argparse
import os
import select
import selectors
import socket
import struct
import time


def query(qid, name, qtype=1):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def names(a):
    if a.same:
        return [a.same] * a.count
    return [f"{a.prefix}{i}.{a.domain}" for i in range(a.count)]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1e3 if xs else 0.0


def report(a, lat, rcodes, secs):
    ok = len(lat)
    rc = ",".join(f"{k}:{v}" for k, v in sorted(rcodes.items()))
    print(f"ok={ok} count={a.count} secs={secs:.6f} qps={ok / secs if secs else 0:.1f} "
          f"p50_ms={pct(lat, 0.5):.3f} p99_ms={pct(lat, 0.99):.3f} rcodes={rc or '-'}")
    return 0 if ok == a.count else 1


def run_sequential(a, s):
    """One query at a time on a blocking socket: the least client overhead for latency."""
    lat, rcodes = [], {}
    s.settimeout(a.timeout)
    base = os.getpid() & 0x7FFF
    t0 = time.monotonic()
    deadline = t0 + a.deadline
    for i, name in enumerate(names(a)):
        if time.monotonic() >= deadline:
            break
        qid = (base + i) & 0xFFFF
        q = query(qid, name)
        t = time.monotonic()
        s.send(q)
        try:
            while True:
                m = s.recv(4096)
                if len(m) >= 12 and struct.unpack("!H", m[:2])[0] == qid:
                    break
        except socket.timeout:
            continue
        lat.append(time.monotonic() - t)
        rc = struct.unpack("!H", m[2:4])[0] & 0xF
        rcodes[rc] = rcodes.get(rc, 0) + 1
    return report(a, lat, rcodes, time.monotonic() - t0)


def run_udp(a):
    qs = names(a)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((a.server, a.port))
    if a.inflight == 1:
        return run_sequential(a, s)
    s.setblocking(False)
    pending = {}  # id -> (sent time, index)
    lat, rcodes = [], {}
    nxt = 0
    base = os.getpid() & 0x7FFF
    t0 = time.monotonic()
    deadline = t0 + a.deadline
    while (nxt < len(qs) or pending) and time.monotonic() < deadline:
        while nxt < len(qs) and len(pending) < a.inflight:
            qid = (base + nxt) & 0xFFFF
            pending[qid] = (time.monotonic(), nxt)
            s.send(query(qid, qs[nxt]))
            nxt += 1
        r, _, _ = select.select([s], [], [], 0.05)
        now = time.monotonic()
        if r:
            while True:
                try:
                    m = s.recv(4096)
                except BlockingIOError:
                    break
                if len(m) < 12:
                    continue
                qid, flags = struct.unpack("!HH", m[:4])
                if qid in pending:
                    t, _ = pending.pop(qid)
                    lat.append(now - t)
                    rcodes[flags & 0xF] = rcodes.get(flags & 0xF, 0) + 1
        for qid, (t, _) in list(pending.items()):
            if now - t > a.timeout:
                del pending[qid]  # lost: counted as not answered
    return report(a, lat, rcodes, time.monotonic() - t0)


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise ConnectionError("closed")
        b += c
    return b


def run_tcp1(a):
    if a.inflight > 1:
        return run_tcp1_parallel(a)
    lat, rcodes = [], {}
    t0 = time.monotonic()
    deadline = t0 + a.deadline
    for i, name in enumerate(names(a)):
        if time.monotonic() >= deadline:
            break
        t = time.monotonic()
        try:
            with socket.create_connection((a.server, a.port), timeout=a.timeout) as s:
                q = query(i & 0xFFFF, name)
                s.sendall(struct.pack("!H", len(q)) + q)
                m = recv_exact(s, struct.unpack("!H", recv_exact(s, 2))[0])
        except OSError:
            continue
        lat.append(time.monotonic() - t)
        rc = struct.unpack("!H", m[2:4])[0] & 0xF
        rcodes[rc] = rcodes.get(rc, 0) + 1
    return report(a, lat, rcodes, time.monotonic() - t0)


def run_tcp1_parallel(a):
    """K connections at once, each: connect, one query, read its answer, close."""
    qs = names(a)
    sel = selectors.DefaultSelector()
    lat, rcodes = [], {}
    nxt = 0
    t0 = time.monotonic()
    deadline = t0 + a.deadline
    while (nxt < len(qs) or sel.get_map()) and time.monotonic() < deadline:
        while nxt < len(qs) and len(sel.get_map()) < a.inflight:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((a.server, a.port))
            q = query(nxt & 0xFFFF, qs[nxt])
            wire = struct.pack("!H", len(q)) + q
            sel.register(s, selectors.EVENT_WRITE, [time.monotonic(), wire, b""])
            nxt += 1
        for key, ev in sel.select(0.05):
            s, st = key.fileobj, key.data
            try:
                if ev & selectors.EVENT_WRITE:
                    s.send(st[1])  # a few dozen bytes: one send
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                c = s.recv(4096)
            except OSError:
                c = b""
            st[2] += c
            done = len(st[2]) >= 2 and len(st[2]) >= 2 + struct.unpack("!H", st[2][:2])[0]
            if c and not done:
                continue
            sel.unregister(s)
            s.close()
            if done:
                lat.append(time.monotonic() - st[0])
                rc = struct.unpack("!H", st[2][4:6])[0] & 0xF
                rcodes[rc] = rcodes.get(rc, 0) + 1
        now = time.monotonic()
        for key in list(sel.get_map().values()):
            if now - key.data[0] > a.timeout:
                sel.unregister(key.fileobj)
                key.fileobj.close()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return report(a, lat, rcodes, time.monotonic() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["udp", "tcp1"])
    ap.add_argument("server")
    ap.add_argument("port", type=int)
    ap.add_argument("--same")
    ap.add_argument("--prefix", default="q")
    ap.add_argument("--domain", default="net1.test")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--inflight", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--deadline", type=float, default=60.0)
    a = ap.parse_args()
    return run_udp(a) if a.mode == "udp" else run_tcp1(a)


if __name__ == "__main__":
    raise SystemExit(main())
