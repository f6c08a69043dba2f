"""Health-checked tunnels: a hung or black-holed ssh is taken out of service within a
probe interval and two timeouts, new flows fail over to a backup host (and come back only
after 30 s of passing probes), a pool spreads flows, every host is bypassed.

srv2 and srv2-v6 are one sshd reached over IPv4 and IPv6: two ssh connections, so one can
be hung (SIGSTOP) or black-holed (an nft drop in srv2's namespace, IPv4 only) while the
other goes on."""
import json
import re
import os
import signal
import subprocess
import time
import unittest

from lab import LabError, LabTestCase, parse_who, wait_until

INTERVAL, TIMEOUT = 1.0, 0.5
BOUND = INTERVAL + 2 * TIMEOUT  # no new flow goes to a failed ssh after this
MARGIN = 1.5                    # a loaded machine's scheduling, and the poll step

CONFIG = """
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@"]
  net2:
    host: {hosts}
    pool: {pool}
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T2_NET4@"]
    health: {{interval: 1s, timeout: 500ms}}
"""


class Health(LabTestCase):
    def start(self, hosts="[srv2, srv2-v6]", pool=1):
        t = self.tprosshy(CONFIG.format(hosts=hosts, pool=pool))
        t.wait_ready()
        wait_until(lambda: all(x["state"] == "up" for x in self.net2(t)["tunnels"]), 20,
                   interval=0.1, what="every net2 tunnel up")
        return t

    def net2(self, t):
        r = t.ctl("status", "--json", timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        return next(p for p in json.loads(r.stdout)["profiles"] if p["name"] == "net2")

    def tunnel(self, t, host, member=1):
        return next(x for x in self.net2(t)["tunnels"] if x["host"] == host and x["member"] == member)

    def probe(self, ip, timeout=3):
        """'data', 'reset' or 'closed' for one request; 'hang' if nothing within timeout."""
        try:
            return self.lab.reset_probe("client", ip, "80", timeout=timeout)
        except LabError as e:
            return "hang" if "timed out" in str(e) else str(e)

    def http_ok(self, ip):
        try:
            return parse_who(self.lab.http_get("client", ip, timeout=3))["name"]
        except LabError:
            return None

    def test_a_hung_ssh_fails_over_to_the_backup_in_time(self):
        lab = self.lab
        t = self.start()
        self.assertEqual(self.net2(t)["serving_host"], "srv2")
        pid = self.tunnel(t, "srv2")["ssh_pid"]
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            wait_until(lambda: self.net2(t)["serving_host"] == "srv2-v6" or None,
                       BOUND + MARGIN, interval=0.05, what="failover")
            self.assertLess(time.monotonic() - stopped, BOUND + MARGIN)
            # From here every new flow goes through the backup, and works.
            for _ in range(5):
                self.assertEqual(self.http_ok(lab["T2_IP4"]), "t2")
            self.assertEqual(self.http_ok(lab["T1_IP4"]), "t1")  # net1 never noticed
            self.assertGreaterEqual(self.net2(t)["failovers"], 1)
            self.assertIn("probe", t.log())
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass  # killed and reaped already: it was taken out of service
        self.assertEqual(t.stop(), 0)

    def test_a_hung_ssh_without_a_backup_resets_then_recovers(self):
        lab = self.lab
        t = self.start(hosts="srv2")
        pid = self.tunnel(t, "srv2")["ssh_pid"]
        os.kill(pid, signal.SIGSTOP)
        time.sleep(BOUND + MARGIN)
        # Out of service: new flows are reset at once, they never hang.
        for _ in range(3):
            started = time.monotonic()
            self.assertIn(self.probe(lab["T2_IP4"]), ("reset", "data"))
            self.assertLess(time.monotonic() - started, 2)
        self.assertEqual(self.http_ok(lab["T1_IP4"]), "t1")
        with self.assertRaises(ProcessLookupError):  # killed already: taken out of service
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: self.http_ok(lab["T2_IP4"]) == "t2", 30, interval=0.2,
                   what="net2 back")
        self.assertNotEqual(self.tunnel(t, "srv2")["ssh_pid"], pid)
        self.assertEqual(t.stop(), 0)

    def drop_srv2_v4(self, on, share=None):
        """An nft drop on srv2's IPv4 port 22, in srv2's namespace (all, or a random share)."""
        if not on:
            self.lab.exec("srv2", ["nft", "delete", "table", "ip", "hole"])
            return
        # Not on lo: the probes' channels to the server's own 127.0.0.1:22 stay open.
        rule = 'iifname != "lo" tcp dport 22 drop' if share is None else \
            f'iifname != "lo" tcp dport 22 numgen random mod 100 < {share} drop'
        back = 'oifname != "lo" tcp sport 22 drop' if share is None else \
            f'oifname != "lo" tcp sport 22 numgen random mod 100 < {share} drop'

        text = (f"table ip hole {{\n chain in {{\n  type filter hook input priority -10\n"
                f"  {rule}\n }}\n chain out {{\n  type filter hook output priority -10\n"
                f"  {back}\n }}\n}}\n")
        r = self.lab.exec("srv2", ["nft", "-f", "-"], input=text)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.addCleanup(lambda: self.lab.exec("srv2", ["nft", "delete", "table", "ip", "hole"]))

    def test_a_black_holed_path_fails_over_and_fails_back_after_30s(self):
        lab = self.lab
        t = self.start()
        self.drop_srv2_v4(True)
        cut = time.monotonic()
        try:
            wait_until(lambda: self.net2(t)["serving_host"] == "srv2-v6" or None, BOUND + MARGIN,
                       interval=0.05, what="failover")
        except TimeoutError:
            self.fail(t.log())
        self.assertLess(time.monotonic() - cut, BOUND + MARGIN)
        self.assertEqual(self.http_ok(lab["T2_IP4"]), "t2")
        # The path comes back; srv2's ssh reconnects and passes its probes, but new flows
        # stay on srv2-v6 for 30 s of passing probes.
        self.drop_srv2_v4(False)
        wait_until(lambda: self.tunnel(t, "srv2")["state"] == "up" or None, 40, interval=0.2,
                   what="srv2 healthy again")
        healthy = time.monotonic()
        while time.monotonic() - healthy < 25:
            self.http_ok(lab["T2_IP4"])  # new flows pick the host: still the backup
            self.assertEqual(self.net2(t)["serving_host"], "srv2-v6", t.log())
            time.sleep(1)
        def back():
            self.http_ok(lab["T2_IP4"])
            return self.net2(t)["serving_host"] == "srv2" or None
        wait_until(back, 15, interval=0.5, what="failback")
        self.assertGreaterEqual(time.monotonic() - healthy, 29)
        self.assertEqual(self.net2(t)["failovers"], 2)
        self.assertEqual(t.stop(), 0)

    def test_random_loss_does_not_flap(self):
        # 10 % of the packets on srv2's ssh path dropped for a while: TCP retransmits within
        # the probe timeout, so no probe fails twice in a row and nothing switches.
        lab = self.lab
        seconds = float(os.environ.get("TPROSSHY_FLAP_SECONDS", "300"))
        t = self.tprosshy(CONFIG.format(hosts="[srv2, srv2-v6]", pool=1).replace(
            "interval: 1s, timeout: 500ms", "interval: 3s, timeout: 2s"))
        t.wait_ready()
        wait_until(lambda: all(x["state"] == "up" for x in self.net2(t)["tunnels"]), 20,
                   interval=0.1, what="every net2 tunnel up")
        self.drop_srv2_v4(True, share=10)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.assertEqual(self.net2(t)["serving_host"], "srv2")
            time.sleep(5)
        st = self.net2(t)
        self.assertEqual(st["failovers"], 0, t.log())
        self.assertEqual(st["restarts"], 0, t.log())
        self.assertEqual(t.stop(), 0)

    def test_a_pool_spreads_flows_and_a_dead_member_moves_none(self):
        lab = self.lab
        t = self.start(hosts="srv2", pool=3)
        flows = [lab.popen("client", ["python3", "-c", """
import socket, sys
s = socket.create_connection((sys.argv[1], 80), 10)
s.sendall(b"GET /sleep/8 HTTP/1.0\\r\\n\\r\\n")
data = b""
try:
    while True:
        d = s.recv(4096)
        if not d: break
        data += d
    print("ok" if b"slept" in data else "short")
except ConnectionResetError:
    print("reset")
""", lab["T2_IP4"]], stdout=subprocess.PIPE, text=True) for _ in range(30)]
        wait_until(lambda: self.net2(t)["flows_active"] == 30, 20, interval=0.1, what="30 flows")
        spread = [x["flows_active"] for x in self.net2(t)["tunnels"]]
        self.assertEqual(sum(spread), 30)
        for n in spread:
            self.assertLessEqual(abs(n - 10), 2, spread)
        victim = self.tunnel(t, "srv2", 2)
        os.kill(victim["ssh_pid"], signal.SIGKILL)
        wait_until(lambda: self.tunnel(t, "srv2", 2)["ssh_pid"] != victim["ssh_pid"], 10,
                   interval=0.05, what="member 2 restarting")
        # New flows avoid the dead member while it is down.
        if self.tunnel(t, "srv2", 2)["state"] != "up":
            self.assertEqual(self.http_ok(lab["T2_IP4"]), "t2")
        results = [p.communicate(timeout=60)[0].strip() for p in flows]
        self.assertEqual(results.count("reset"), victim["flows_active"], results)
        self.assertEqual(results.count("ok"), 30 - victim["flows_active"], results)
        self.assertEqual(t.stop(), 0)

    def test_every_host_is_bypassed_when_everything_is_routed(self):
        lab = self.lab
        t = self.tprosshy("""
profiles:
  everything:
    host: [srv1, srv2]
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: [0.0.0.0/0, "::/0"]
    health: {interval: 1s, timeout: 500ms}
""")
        t.wait_ready()
        table = lab.nft_table()
        self.assertIn(lab["SRV1_IP4"], table)
        self.assertIn(lab["SRV2_IP4"], table)
        # `check` prints the same bypass rules, the backup host's too.
        r = t.ctl("check")
        self.assertEqual(r.returncode, 0, r.stderr)
        for ip in (lab["SRV1_IP4"], lab["SRV2_IP4"]):
            self.assertRegex(r.stdout, rf"ip daddr {re.escape(ip)} tcp dport 22 return")
        def both_up():
            r = t.ctl("status", "--json")
            p = json.loads(r.stdout)["profiles"][0]
            return all(x["state"] == "up" for x in p["tunnels"]) or None
        wait_until(both_up, 20, interval=0.1, what="both ssh up")
        # Both ssh connections keep working through probes for a while.
        time.sleep(3)
        self.assertTrue(both_up())
        self.assertEqual(self.http_ok(lab["T1_IP4"]), "t1")
        self.assertEqual(t.stop(), 0)


if __name__ == "__main__":
    unittest.main()
