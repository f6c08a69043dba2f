#!/usr/bin/env python3
"""What happens to a packet that is not TCP, run inside a lab namespace:

  udp HOST PORT [--timeout S]    a datagram on a connected socket, then a wait for an answer
  icmp HOST [--timeout S]        an echo request on a raw socket, then a wait for a reply

Prints one line: `refused MS` (ECONNREFUSED: ICMP port unreachable), `eperm MS` (the
send itself failed with EPERM), `prohibited MS` (ICMP administratively prohibited),
`unreachable TYPE/CODE MS` (another ICMP error), `answered MS` or `silence MS`; MS is the
time from the send, in milliseconds.
"""
import argparse
import ipaddress
import os
import socket
import struct
import sys
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ms(start):
    return f"{(time.monotonic() - start) * 1000:.0f}"


def udp(host, port, timeout):
    fam = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.connect((host, port))
    start = time.monotonic()
    try:
        s.send(b"secret\n")
        s.recv(100)
        return f"answered {ms(start)}"
    except PermissionError:
        return f"eperm {ms(start)}"
    except ConnectionRefusedError:
        return f"refused {ms(start)}"
    except socket.timeout:
        return f"silence {ms(start)}"


def icmp(host, timeout):
    v6 = ipaddress.ip_address(host).version == 6
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        echo, reply, errors = 128, 129, (1,)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        echo, reply, errors = 8, 0, (3,)
    ident = os.getpid() & 0xFFFF
    body = struct.pack("!BBHHH", echo, 0, 0, ident, 1) + b"tprosshy"
    if not v6:  # the kernel sums ICMPv6 itself
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    start = time.monotonic()
    try:
        s.sendto(body, (host, 0))
    except PermissionError:
        return f"eperm {ms(start)}"
    deadline = start + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data, _ = s.recvfrom(2048)
        except socket.timeout:
            break
        if not v6:
            data = data[(data[0] & 0x0F) * 4:]  # a raw IPv4 socket hands the IP header too
        t, code = data[0], data[1]
        if t == reply and struct.unpack("!H", data[4:6])[0] == ident:
            return f"answered {ms(start)}"
        if t in errors:
            admin = (v6 and code == 1) or (not v6 and code in (9, 10, 13))
            return f"prohibited {ms(start)}" if admin else f"unreachable {t}/{code} {ms(start)}"
    return f"silence {ms(start)}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["udp", "icmp"])
    ap.add_argument("host")
    ap.add_argument("port", nargs="?", type=int, default=443)
    ap.add_argument("--timeout", type=float, default=2)
    a = ap.parse_args()
    print(udp(a.host, a.port, a.timeout) if a.what == "udp" else icmp(a.host, a.timeout))


if __name__ == "__main__":
    sys.exit(main())
