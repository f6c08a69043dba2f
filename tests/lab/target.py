#!/usr/bin/env python3
"""The lab's target server: minimal HTTP/1.0 (one request per connection) plus a TCP echo.

  GET /who        -> "name=<name> peer=<ip>:<port> local=<ip>:<port>\\n"
                     (IPv6 addresses in brackets: peer=[fd00:11::1]:40000)
  GET /bytes/N    -> N bytes of the lab's deterministic stream (see stream_block)
  POST /sha256    -> "<hex sha256> <byte count>\\n" of the body (Content-Length, or until
                     the client half-closes when there is none)
  GET /sleep/S    -> waits S seconds (float, at most 3600), then "slept\\n"
  echo port       -> echoes bytes until EOF, then half-closes and closes

Listens on every address of its namespace (IPv4 and IPv6). Writes its pid to --ready-file
once every socket listens.
"""
import argparse
import asyncio
import hashlib
import os
import resource
import sys

BLOCK_SIZE = 1 << 20
SEED = b"tprosshy-lab"


def stream_block():
    """1 MiB block repeated forever: sha256(SEED || counter as 8 bytes big endian)..."""
    return b"".join(
        hashlib.sha256(SEED + i.to_bytes(8, "big")).digest() for i in range(BLOCK_SIZE // 32)
    )


BLOCK = memoryview(stream_block())


def fmt_addr(sockaddr):
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def response_head(status, length, reason="OK"):
    return (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


class Server:
    def __init__(self, name):
        self.name = name

    async def http(self, reader, writer):
        try:
            await self.serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError, ValueError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def reply(self, writer, status, body, reason="OK"):
        writer.write(response_head(status, len(body), reason) + body)
        await writer.drain()

    async def serve(self, reader, writer):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        sock = writer.get_extra_info("socket")
        if method == "GET" and target == "/who":
            body = (f"name={self.name} peer={fmt_addr(sock.getpeername())} "
                    f"local={fmt_addr(sock.getsockname())}\n")
            await self.reply(writer, 200, body.encode())
        elif method == "GET" and target.startswith("/bytes/"):
            n = int(target[len("/bytes/"):])
            if n < 0:
                raise ValueError(n)
            writer.transport.set_write_buffer_limits(high=4 * BLOCK_SIZE)
            writer.write(response_head(200, n))
            while n > 0:
                k = min(n, BLOCK_SIZE)
                writer.write(BLOCK[:k])
                n -= k
                await writer.drain()
        elif method == "POST" and target == "/sha256":
            h = hashlib.sha256()
            count = 0
            left = int(headers["content-length"]) if "content-length" in headers else None
            while left is None or left > 0:
                chunk = await reader.read(1 << 18 if left is None else min(left, 1 << 18))
                if not chunk:
                    if left is not None:
                        raise asyncio.IncompleteReadError(b"", left)
                    break
                h.update(chunk)
                count += len(chunk)
                if left is not None:
                    left -= len(chunk)
            await self.reply(writer, 200, f"{h.hexdigest()} {count}\n".encode())
        elif method == "GET" and target.startswith("/sleep/"):
            await asyncio.sleep(min(float(target[len("/sleep/"):]), 3600))
            await self.reply(writer, 200, b"slept\n")
        else:
            await self.reply(writer, 404, b"not found\n", "Not Found")

    async def echo(self, reader, writer):
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass
        finally:
            writer.close()


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--echo-port", type=int, default=7)
    ap.add_argument("--ready-file")
    args = ap.parse_args()
    raise_nofile()
    srv = Server(args.name)
    hosts = ["0.0.0.0", "::"]
    servers = [await asyncio.start_server(srv.http, hosts, args.port, backlog=4096,
                                          reuse_address=True)]
    if args.echo_port:
        servers.append(await asyncio.start_server(srv.echo, hosts, args.echo_port,
                                                  backlog=4096, reuse_address=True))
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, args.ready_file)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
