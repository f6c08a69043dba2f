#!/usr/bin/env python3
"""Opens two flows through a lab target, run inside a lab namespace: a download read slowly
(GET /bytes/1 GiB from DL_HOST) and an idle request (GET /sleep/60 from IDLE_HOST). Reports
as JSON lines: {"ready": true} once both are open (the download has started), then, per
flow, when and how it ended: "reset", "eof" or another error's text.

  flows.py DL_HOST IDLE_HOST
"""
import json, socket, sys, time, threading
host_dl, host_idle = sys.argv[1], sys.argv[2]
lock = threading.Lock()
def say(d):
    with lock:
        print(json.dumps(d), flush=True)
def watch(name, s, first):
    s.settimeout(60)
    got = len(first)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                say({"flow": name, "end": "eof", "bytes": got, "t": time.time()})
                return
            got += len(d)
            time.sleep(0.001)  # a slow reader: the download is still going when asked
    except ConnectionResetError:
        say({"flow": name, "end": "reset", "bytes": got, "t": time.time()})
    except OSError as e:
        say({"flow": name, "end": str(e), "bytes": got, "t": time.time()})
dl = socket.create_connection((host_dl, 80), 10)
dl.sendall(b"GET /bytes/1073741824 HTTP/1.0\r\n\r\n")
first = dl.recv(65536)
idle = socket.create_connection((host_idle, 80), 10)
idle.sendall(b"GET /sleep/60 HTTP/1.0\r\n\r\n")
time.sleep(0.3)
ts = [threading.Thread(target=watch, args=("download", dl, first)),
      threading.Thread(target=watch, args=("idle", idle, b""))]
for t in ts: t.start()
say({"ready": True})
for t in ts: t.join()
