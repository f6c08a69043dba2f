"""A long-running service: the control socket (status, reload), /metrics, and the systemd
notify protocol, against a real run in the lab."""
import json
import os
import re
import signal
import socket
import subprocess
import time
import unittest

from lab import LabTestCase, parse_who, wait_until

CONFIG = """
metrics: {{listen: "{metrics}"}}
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@"]
    dns: {{domains: ["@T1_DOMAIN@"], nameserver: "@T1_DNS@"}}
  net2:
    host: srv2
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T2_NET4@"]
"""

# Exactly N bytes to the echo port and back: the flow's byte counts are known.
ECHO_EXACT = r"""
import socket, sys
host, n = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, 7), 10)
data = bytes(i % 251 for i in range(n))
s.sendall(data); s.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = s.recv(65536)
    if not d: break
    got += d
assert got == data, (len(got), n)
print("ok")
"""

# The Prometheus text format 0.0.4, strictly: HELP and TYPE before a family's samples,
# one TYPE per family, valid names, escaped label values, float values.
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$')


def parse_metrics(text):
    types, helps, samples = {}, set(), {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            helps.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert METRIC_NAME.fullmatch(name) and name not in types, line
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, f"not a sample: {line!r}"
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"no TYPE before {line!r}"
        assert (name in helps) or (family in helps), f"no HELP for {name}"
        float(m.group(4))
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        samples[(name, tuple(sorted(labels.items())))] = float(m.group(4))
    return samples


class Service(LabTestCase):
    def start(self, **kw):
        t = self.tprosshy(CONFIG.format(metrics=kw.pop("metrics", "127.0.0.1:19100")), **kw)
        t.wait_ready()
        return t

    def status(self, t):
        r = t.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return {p["name"]: p for p in json.loads(r.stdout)["profiles"]} | {"": json.loads(r.stdout)}

    def metrics(self, port=19100):
        r = self.lab.exec("client", ["curl", "-sS", "--max-time", "5", "-D", "-",
                                     f"http://127.0.0.1:{port}/metrics"])
        self.assertEqual(r.returncode, 0, r.stderr)
        head, _, body = r.stdout.partition("\n\n")  # text mode: CRLF read as LF
        self.assertIn("text/plain; version=0.0.4", head)
        return parse_metrics(body)

    def test_status_and_metrics_count_a_known_transfer_exactly(self):
        lab = self.lab
        t = self.start()
        for n in (1, 100000, 3 << 20):
            r = lab.exec("client", ["python3", "-c", ECHO_EXACT, lab["T1_IP4"], n], timeout=60)
            self.assertEqual(r.stdout.strip(), "ok", r.stderr)
        total = 1 + 100000 + (3 << 20)
        st = self.status(t)
        self.assertEqual((st["net1"]["bytes_up"], st["net1"]["bytes_down"]), (total, total))
        self.assertEqual(st["net1"]["flows_ok"], 3)
        self.assertEqual(st["net2"]["bytes_up"], 0)
        m = self.metrics()
        self.assertEqual(m[("tprosshy_bytes_total", (("direction", "up"), ("profile", "net1")))],
                         total)
        self.assertEqual(m[("tprosshy_bytes_total", (("direction", "down"), ("profile", "net1")))],
                         total)
        self.assertEqual(m[("tprosshy_flows_total", (("profile", "net1"), ("result", "ok")))], 3)
        self.assertEqual(m[("tprosshy_profile_up", (("profile", "net2"),))], 1)
        # DNS, through net1's nameserver, counted by rcode.
        self.assertEqual(lab.dig("client", lab["T1_NAME"])[0], "NOERROR")
        self.assertEqual(lab.dig("client", lab["T1_NX_NAME"])[0], "NXDOMAIN")
        st = self.status(t)
        self.assertEqual(st["net1"]["dns_queries"], {"NOERROR": 1, "NXDOMAIN": 1})
        self.assertEqual(st["net1"]["learned_routes"], 1)
        # The text form says the same, for people.
        text = t.ctl("status").stdout
        self.assertRegex(text, r"profile net1: up")
        self.assertIn(f"({total})", text)
        self.assertEqual(t.stop(), 0)

    def test_restarts_count_a_killed_ssh_and_counters_survive_reloads(self):
        lab = self.lab
        t = self.start()
        pid = self.status(t)["net1"]["ssh_pid"]
        r = lab.exec("client", ["python3", "-c", ECHO_EXACT, lab["T1_IP4"], 1000])
        self.assertEqual(r.stdout.strip(), "ok")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: self.status(t)["net1"]["state"] == "up" and
                   self.status(t)["net1"]["ssh_pid"] != pid, 20, interval=0.2, what="back up")
        st = self.status(t)["net1"]
        self.assertEqual(st["restarts"], 1)
        self.assertIn("ssh exited", st["last_error"] or "ssh exited")
        self.assertEqual(self.metrics()[("tprosshy_tunnel_restarts_total", (("profile", "net1"),))], 1)
        # A reload that replaces net1's ssh keeps its counters.
        r = t.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        # -4 changes net1's ssh arguments: a new ssh, the old one drains.
        t.write_config(CONFIG.format(metrics="127.0.0.1:19100").replace(
            '"-F", "@SSH_CONFIG@"]\n    subnets: ["@T1', '"-F", "@SSH_CONFIG@", "-4"]\n    subnets: ["@T1'))
        r = t.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("1 started", r.stdout)
        st = self.status(t)
        self.assertEqual(st["net1"]["restarts"], 1)
        self.assertEqual(st["net1"]["bytes_up"], 1000)
        self.assertEqual(st[""]["reloads_ok"], 2)
        self.assertEqual(t.stop(), 0)

    def test_reload_verb_waits_and_says_why(self):
        lab = self.lab
        t = self.start()
        good = t.config_path.read_text()
        r = t.ctl("reload")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "2 profiles kept, 0 started, 0 draining"))
        t.config_path.write_text(good + "  net3:\n    host: srv1\n    subnets: [300.1.2.3/8]\n")
        r = t.ctl("reload")
        self.assertEqual(r.returncode, 78)
        self.assertRegex(r.stderr, r"tprosshy-\d+\.yaml:\d+:\d+: profiles\.net3\.subnets")
        t.config_path.write_text(good.replace("metrics: {listen: \"127.0.0.1:19100\"}",
                                              "metrics: {listen: \"127.0.0.1:19101\"}"))
        r = t.ctl("reload")
        self.assertEqual(r.returncode, 78)
        self.assertIn("metrics.listen cannot change while tprosshy runs", r.stderr)
        st = self.status(t)
        self.assertEqual((st[""]["reloads_ok"], st[""]["reloads_failed"]), (1, 2))
        t.config_path.write_text(good)
        self.assertEqual(t.stop(), 0)
        r = t.ctl("reload")
        self.assertEqual(r.returncode, 69)
        self.assertIn("no tprosshy is running", r.stderr)
        r = t.ctl("status")
        self.assertEqual(r.returncode, 69)

    def test_systemd_hears_ready_reloading_ready_stopping(self):
        lab = self.lab
        path = lab.state / "notify.sock"
        listener = lab.popen("client", ["python3", "-c", r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); print("bound", flush=True)
s.settimeout(60)
while True:
    m = s.recv(4096).decode()
    print(m.replace("\n", "|"), flush=True)
    if "STOPPING=1" in m: break
""", path], stdout=subprocess.PIPE, text=True)
        self.assertEqual(listener.stdout.readline().strip(), "bound")
        t = self.tprosshy(CONFIG.format(metrics="127.0.0.1:19102"),
                          env=dict(os.environ, NOTIFY_SOCKET=str(path)))
        t.wait_ready()
        t.send_signal(signal.SIGHUP)
        t.wait_log(r"reload of \S+: ", 20)
        self.assertEqual(t.ctl("reload").returncode, 0)
        self.assertEqual(t.stop(signal.SIGTERM), 0)
        lines = listener.communicate(timeout=30)[0].splitlines()
        kinds = []
        for ln in lines:
            fields = dict(f.split("=", 1) for f in ln.split("|") if "=" in f)
            if "READY" in fields:
                kinds.append("READY")
            elif "RELOADING" in fields:
                self.assertGreater(int(fields["MONOTONIC_USEC"]), 0)
                kinds.append("RELOADING")
            elif "STOPPING" in fields:
                kinds.append("STOPPING")
        self.assertEqual(kinds, ["READY", "RELOADING", "READY", "RELOADING", "READY", "STOPPING"],
                         lines)
        self.assertTrue(any(ln.startswith("READY=1|STATUS=ready: 2/2 profiles up") for ln in lines),
                        lines)


if __name__ == "__main__":
    unittest.main()
