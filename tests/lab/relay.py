"""A ProxyCommand for ssh that records who ran it: writes `uid=N` to FILE, then relays
stdin/stdout to HOST:PORT. Usage: relay.py FILE HOST PORT"""
import os
import selectors
import socket
import sys

record, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(record, "a") as f:
    f.write(f"uid={os.getuid()}\n")
s = socket.create_connection((host, port), 10)
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ)
sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select(60):
        if key.fileobj == 0:
            data = os.read(0, 65536)
            if not data:
                sel.unregister(0)
                s.shutdown(socket.SHUT_WR)
            else:
                s.sendall(data)
        else:
            data = s.recv(65536)
            if not data:
                sys.exit(0)
            os.write(1, data)
