#!/usr/bin/env python3
"""Tiny client run inside a lab namespace (ip netns exec NS python3 client.py ...).

  http HOST PORT METHOD PATH [--socks H:P] [--timeout S]   body from stdin for POST;
        prints the raw response; exit 2 on connect failure, 3 on any later failure
  connect HOST PORT [--timeout S]     exit 0 if a TCP connection opens, else 2 and the error
  socks HOST:PORT [--timeout S]       exit 0 if a SOCKS5 no-auth greeting is answered
"""
import argparse
import ipaddress
import socket
import struct
import sys


def strip(host):
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def split_hostport(s):
    host, _, port = s.rpartition(":")
    return strip(host), int(port)


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("SOCKS server closed the connection")
        data += chunk
    return data


def socks_connect(s, host, port):
    """SOCKS5 CONNECT without authentication, as OpenSSH's -D speaks it."""
    try:
        ip = ipaddress.ip_address(host)
        addr = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    except ValueError:
        addr = b"\x03" + bytes([len(host)]) + host.encode()
    s.sendall(b"\x05\x01\x00" + b"\x05\x01\x00" + addr + struct.pack("!H", port))
    if recv_exact(s, 2) != b"\x05\x00":
        raise ConnectionError("SOCKS greeting refused")
    head = recv_exact(s, 4)
    if head[1] != 0:
        raise ConnectionError(f"SOCKS CONNECT failed: reply {head[1]}")
    atyp = head[3]
    if atyp == 1:
        recv_exact(s, 4 + 2)
    elif atyp == 4:
        recv_exact(s, 16 + 2)
    else:
        recv_exact(s, recv_exact(s, 1)[0] + 2)


def cmd_http(a):
    host = strip(a.host)
    body = sys.stdin.buffer.read() if a.method == "POST" else b""
    try:
        if a.socks:
            s = socket.create_connection(split_hostport(a.socks), timeout=a.timeout)
            socks_connect(s, host, a.port)
        else:
            s = socket.create_connection((host, a.port), timeout=a.timeout)
    except OSError as e:
        print(f"connect: {e}", file=sys.stderr)
        return 2
    try:
        hosthdr = f"[{host}]" if ":" in host else host
        req = f"{a.method} {a.path} HTTP/1.0\r\nHost: {hosthdr}\r\n"
        if a.method == "POST":
            req += f"Content-Length: {len(body)}\r\n"
        s.sendall(req.encode() + b"\r\n" + body)
        out = sys.stdout.buffer
        while True:
            chunk = s.recv(1 << 18)
            if not chunk:
                break
            out.write(chunk)
        out.flush()
    except OSError as e:
        print(f"http: {e}", file=sys.stderr)
        return 3
    return 0


def cmd_connect(a):
    try:
        socket.create_connection((strip(a.host), a.port), timeout=a.timeout).close()
    except OSError as e:
        print(f"{type(e).__name__}: {e}")
        return 2
    return 0


def cmd_socks(a):
    try:
        s = socket.create_connection(split_hostport(a.address), timeout=a.timeout)
        s.sendall(b"\x05\x01\x00")
        ok = recv_exact(s, 2) == b"\x05\x00"
        s.close()
    except OSError as e:
        print(f"{type(e).__name__}: {e}")
        return 2
    return 0 if ok else 2


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("http")
    h.add_argument("host")
    h.add_argument("port", type=int)
    h.add_argument("method")
    h.add_argument("path")
    h.add_argument("--socks")
    h.add_argument("--timeout", type=float, default=5)
    c = sub.add_parser("connect")
    c.add_argument("host")
    c.add_argument("port", type=int)
    c.add_argument("--timeout", type=float, default=2)
    k = sub.add_parser("socks")
    k.add_argument("address")
    k.add_argument("--timeout", type=float, default=2)
    a = ap.parse_args()
    return {"http": cmd_http, "connect": cmd_connect, "socks": cmd_socks}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
