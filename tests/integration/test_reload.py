"""Reload (SIGHUP): profiles matched by name keep their ssh and every established flow;
changed connections drain; an invalid file changes nothing; keys that cannot change live
are refused by name."""
import json
import os
import re
import signal
import subprocess
import time
import unittest
from pathlib import Path

from lab import LabTestCase, parse_who, wait_until

BASE = """
drain_timeout: {drain}
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@"]
    dns: {{domains: ["@T1_DOMAIN@"], nameserver: "@T1_DNS@"}}
  net2:
    host: {host2}
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: [{subnets2}]
"""

# Long-lived flows to the echo port that check every byte: each sends a chunk, waits for
# it to come back, and again, until the stop file appears; then it half-closes and reads
# to EOF. Prints one JSON line with what went wrong, if anything.
ECHO = r"""
import asyncio, json, os, random, sys
host, n, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
errors, moved = [], [0]
async def one(i):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, 7), 20)
    except Exception as e:
        errors.append(f"{i}: connect {e!r}"); return
    rnd = random.Random(i)
    try:
        while not os.path.exists(stop):
            chunk = rnd.randbytes(rnd.randint(1, 4096))
            w.write(chunk); await w.drain()
            back = await asyncio.wait_for(r.readexactly(len(chunk)), 30)
            if back != chunk:
                errors.append(f"{i}: bytes differ"); return
            moved[0] += len(chunk)
            await asyncio.sleep(0.05)
        w.write_eof()
        rest = await asyncio.wait_for(r.read(), 30)
        if rest:
            errors.append(f"{i}: {len(rest)} bytes after EOF")
    except Exception as e:
        errors.append(f"{i}: {e!r}")
async def main():
    await asyncio.gather(*(one(i) for i in range(n)))
    print(json.dumps({"errors": errors, "moved": moved[0]}), flush=True)
asyncio.run(main())
"""

# New connections, one after another, to each address in turn, until the stop file appears.
NEW = r"""
import json, os, socket, sys, time
hosts, stop = sys.argv[1].split(","), sys.argv[2]
ok, failed = 0, []
while not os.path.exists(stop):
    for h in hosts:
        try:
            s = socket.create_connection((h, 80), 5)
            s.settimeout(5)
            s.sendall(b"GET /who HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                d = s.recv(4096)
                if not d: break
                data += d
            s.close()
            if b"name=" in data: ok += 1
            else: failed.append(f"{h}: {data[:60]!r}")
        except OSError as e:
            failed.append(f"{h}: {e!r}")
    time.sleep(0.01)
print(json.dumps({"ok": ok, "failed": failed}), flush=True)
"""


class Reload(LabTestCase):
    @classmethod
    def setUpClass(cls):
        os.environ["LAB_DNS_TTL"] = "600"  # learned routes must outlive the test
        super().setUpClass()

    def config(self, host2="srv2", subnets2='"@T2_NET4@"', drain="300s"):
        return BASE.format(host2=host2, subnets2=subnets2, drain=drain)

    def reload(self, t, text, expect="reload of"):
        """Writes the config and sends SIGHUP; waits for the outcome line; returns it."""
        before = len(re.findall(r"reload of \S+(: | refused)", t.log()))
        t.write_config(text)
        t.send_signal(signal.SIGHUP)
        wait_until(lambda: len(re.findall(r"reload of \S+(: | refused)", t.log())) > before, 20,
                   interval=0.01, what="reload outcome")
        line = [ln for ln in t.log().splitlines() if "reload of" in ln][-1]
        self.assertIn(expect, line)
        return line

    def ssh_pids(self):
        out = {}
        for pid, _ in self.lab.procs("client", "ssh"):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            m = next((re.search(r"/(net\d)(\.\d+)?$", a) for a in args if "ControlPath=" in a), None)
            if m:
                out.setdefault(m.group(1), set()).add(pid)
        return out

    def test_sighup_reloads_and_never_terminates(self):
        t = self.tprosshy(self.config())
        t.wait_ready()
        pids = self.ssh_pids()
        for _ in range(3):
            self.assertIn("2 profiles kept, 0 started, 0 draining", self.reload(t, self.config()))
        self.assertTrue(t.running)
        self.assertEqual(self.ssh_pids(), pids)
        self.assertEqual(t.stop(), 0)

    def test_reload_under_load_keeps_every_flow_of_an_unchanged_profile(self):
        lab = self.lab
        t = self.tprosshy(self.config())
        t.wait_ready()
        # A route learned from net1's nameserver, for an address outside its subnets.
        outside = lab["T1_OUTSIDE_IP4"]
        self.assertEqual(lab.dig("client", lab["T1_OUTSIDE_NAME"])[1], [outside])
        self.assertEqual(parse_who(lab.http_get("client", outside))["peer"], lab["SRV1_NET_IP4"])
        net1_pids = self.ssh_pids()["net1"]

        stop = lab.state / "stop-load"
        echo = lab.popen("client", ["python3", "-c", ECHO, lab["T1_IP4"], 200, stop],
                         stdout=subprocess.PIPE, text=True)
        new = lab.popen("client", ["python3", "-c", NEW, f"{lab['T1_IP4']},{lab['T2_IP4']}",
                                   stop], stdout=subprocess.PIPE, text=True)
        wait_until(lambda: lab.exec("client", ["ss", "-Htn", "state", "established",
                                               f"dport = :7"]).stdout.count("\n") >= 200,
                   30, interval=0.2, what="200 echo flows open")
        for i in range(50):
            if i % 10 == 9:  # net2's connection changes: a new ssh, the old one drains
                host = "srv2-v6" if i % 20 == 9 else "srv2"
                self.assertIn("1 profiles kept, 1 started, 1 draining",
                              self.reload(t, self.config(host2=host)))
            else:  # only net2's subnets change
                subnets = '"@T2_NET4@", "@T2_NET6@"' if i % 2 else '"@T2_NET4@"'
                host = "srv2-v6" if (i // 10) % 2 else "srv2"
                self.assertIn("2 profiles kept, 0 started",
                              self.reload(t, self.config(host2=host, subnets2=subnets)))
            time.sleep(0.1)
        time.sleep(1)
        stop.write_text("")
        echo_out, _ = echo.communicate(timeout=120)
        new_out, _ = new.communicate(timeout=60)
        echo_r, new_r = json.loads(echo_out), json.loads(new_out)
        self.assertEqual(echo_r["errors"], [])
        self.assertGreater(echo_r["moved"], 0)
        self.assertEqual(new_r["failed"], [], f"{new_r['ok']} connections worked")
        self.assertGreater(new_r["ok"], 100)
        # net1 never changed: the same ssh, and its learned route survived every ruleset.
        self.assertEqual(self.ssh_pids()["net1"], net1_pids)
        self.assertIn(outside, lab.exec("client", ["nft", "list", "set", "inet", "tprosshy",
                                                   "learn4_net1"]).stdout)
        self.assertEqual(parse_who(lab.http_get("client", outside))["peer"], lab["SRV1_NET_IP4"])
        self.assertTrue(t.running)
        self.assertEqual(t.stop(), 0)

    def test_a_changed_connection_drains_then_resets(self):
        lab = self.lab
        t = self.tprosshy(self.config(drain="3s"))
        t.wait_ready()
        old = self.ssh_pids()["net2"]
        short = lab.popen("client", ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                     f"http://{lab['T2_IP4']}/sleep/1.5"],
                          stdout=subprocess.PIPE, text=True)
        long = lab.popen("client", ["python3", "-c", """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), 5)
s.sendall(b"GET /sleep/60 HTTP/1.0\\r\\n\\r\\n")
t = time.time()
try:
    print("eof" if not s.recv(100) else "data", flush=True)
except ConnectionResetError:
    print(f"reset {time.time() - t:.1f}", flush=True)
""", lab["T2_IP4"]], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        self.reload(t, self.config(host2="srv2-v6", drain="3s"))
        # The old flows stay on the old ssh: the short one finishes there...
        self.assertEqual(short.communicate(timeout=20)[0], "200")
        # ... the long one is reset when the drain time is up, and the old ssh goes.
        out = long.communicate(timeout=20)[0].split()
        self.assertEqual(out[0], "reset")
        self.assertGreater(float(out[1]), 2.0)
        wait_until(lambda: not (old & self.ssh_pids().get("net2", set())), 10, what="old ssh gone")
        # New flows went, and go, to the new one.
        self.assertEqual(parse_who(lab.http_get("client", lab["T2_IP4"]))["name"], "t2")
        self.assertEqual(t.stop(), 0)

    def test_an_invalid_file_changes_nothing(self):
        lab = self.lab
        t = self.tprosshy(self.config())
        t.wait_ready()
        table = lab.nft_table()
        pids = self.ssh_pids()
        line = self.reload(t, self.config() + "  net3: {host: srv1, subnets: [not-a-prefix]}\n",
                           expect="refused")
        self.assertRegex(line, r"\.yaml:\d+:\d+: ")
        line = self.reload(t, "listen: {tcp_port: 12399}\n" + self.config(), expect="refused")
        self.assertIn("listen.tcp_port cannot change while tprosshy runs", line)
        self.assertEqual(lab.nft_table(), table)
        self.assertEqual(self.ssh_pids(), pids)
        self.assertEqual(parse_who(lab.http_get("client", lab["T2_IP4"]))["name"], "t2")
        self.assertTrue(t.running)
        self.assertEqual(t.stop(), 0)


if __name__ == "__main__":
    unittest.main()
