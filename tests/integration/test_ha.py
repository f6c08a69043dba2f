"""Two gateways, one address: tprosshy on two gateways behind a VRRP address (keepalived).

The lab's srv1 (sshd, with the target network t1 behind it) is joined by three namespaces
of this test's own, deleted with the lab:

    hlan 198.18.20.100 ─ br0 ─┬─ gw1 lan 198.18.20.1 ── wan 198.18.21.1 ─ srv1 198.18.21.2
    default via the VIP       └─ gw2 lan 198.18.20.2 ── wan 198.18.22.1 ─ srv1 198.18.22.2
    198.18.20.254                                    (srv1's sshd: 198.18.1.2, routed)

Each gateway runs tprosshy (gateway mode, one config for both: t1's network through
srv1) and keepalived in the foreground (its own config and pid files in the lab's state
directory): VRRP on the LAN side, unicast peers, advert_int 1, gw1 priority 250, gw2 200,
and a track script that holds the address only while tprosshy's nft table exists. It is
README's "High availability" example, addresses aside.

Checked: the LAN host's flows go through gw1 (a counter on each gateway tells which),
and its DNS queries to the virtual address get the split DNS;
  - gw1 dies (its LAN link goes down, keepalived and tprosshy SIGKILLed): new flows go
    through gw2 within 3 × advert_int + 2 s = 5 s, DNS answers again, and a flow open
    through gw1 is lost;
  - gw1 comes back (tprosshy first, then keepalived): it takes the address back;
  - tprosshy alone dies on gw1: the track script fails and new flows go through gw2
    within the same bound; tprosshy started again, gw1 takes the address back;
  - keepalived and tprosshy on gw1 are stopped (SIGTERM): new flows go through gw2 within
    the same bound (here much sooner: keepalived says goodbye with priority 0).
"""
import os
import re
import shutil
import signal
import subprocess
import time
import unittest

from lab import LabTestCase, parse_who, wait_until

ADVERT = 1                      # advert_int, seconds
BOUND = 3 * ADVERT + 2          # takeover: 3 adverts missed + skew (< 1 s) + margin
VIP = "198.18.20.254"
LAN_HOST = "198.18.20.100"
GW_LAN = {"gw1": "198.18.20.1", "gw2": "198.18.20.2"}
GW_WAN = {"gw1": ("198.18.21.1", "198.18.21.2"), "gw2": ("198.18.22.1", "198.18.22.2")}
PRIORITY = {"gw1": 250, "gw2": 200}

KEEPALIVED_CONF = """\
global_defs {{
    router_id tprosshy-{gw}
    enable_script_security
    script_user root
}}

# The address is held only while tprosshy runs: its nft table lives exactly as long.
vrrp_script tprosshy {{
    script "{nft} list table inet tprosshy"
    interval 1
    fall 2
    rise 1
}}

vrrp_instance lan {{
    state BACKUP
    interface lan
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
    unicast_src_ip {src}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {vip}/24 dev lan
    }}
    track_script {{
        tprosshy
    }}
}}
"""

CONFIG = """
mode: gateway
gateway: {interfaces: [lan]}
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@"]
    dns: {domains: ["@T1_DOMAIN@"], nameserver: "@T1_DNS@"}
"""

# Tries GET /who on HOST:80 from the LAN host until one answers from t1; prints the
# monotonic time of that answer (the clock is the machine's, whatever the namespace).
PROBE = r"""
import socket, sys, time
host, limit = sys.argv[1], float(sys.argv[2])
end, tries = time.monotonic() + limit, 0
while time.monotonic() < end:
    tries += 1
    try:
        with socket.create_connection((host, 80), timeout=0.3) as s:
            s.settimeout(1.0)
            s.sendall(b"GET /who HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        if b"name=t1" in data:
            print(f"ok {time.monotonic():.3f} {tries}")
            sys.exit(0)
    except OSError:
        time.sleep(0.05)
print(f"timeout {time.monotonic():.3f} {tries}")
sys.exit(1)
"""

# One flow kept open: connects to the echo port, checks one echo, says "open", then on
# a line from stdin sends again and says what came back: data, closed, reset or timeout.
HELD = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 7), timeout=5)
s.sendall(b"one\n")
assert s.recv(100) == b"one\n"
print("open", flush=True)
sys.stdin.readline()
s.settimeout(5)
try:
    s.sendall(b"two\n")
    print("data" if s.recv(100) else "closed")
except (ConnectionResetError, BrokenPipeError):
    print("reset")
except socket.timeout:
    print("timeout")
"""


class HighAvailability(LabTestCase):
    def setUp(self):
        self.keepalived_bin = shutil.which("keepalived") or "/usr/sbin/keepalived"
        if not os.access(self.keepalived_bin, os.X_OK):
            self.fail("keepalived is not installed (scripts/setup installs it)")
        self.nft_bin = shutil.which("nft") or "/usr/sbin/nft"
        self.keepalived = {}
        self.tprosshy_runs = {}

    # -- the topology

    def ip(self, role, *args):
        self.lab.exec(role, ["ip", *args], check=True)

    def build(self):
        lab, name = self.lab, self.lab.name
        for role in ("hlan", "gw1", "gw2"):
            lab.add_namespace(role)
        self.ip("hlan", "link", "add", "br0", "type", "bridge")
        self.ip("hlan", "link", "set", "br0", "up")
        self.ip("hlan", "addr", "add", f"{LAN_HOST}/24", "dev", "br0")
        self.ip("hlan", "route", "add", "default", "via", VIP)
        for n, gw in ((1, "gw1"), (2, "gw2")):
            # LAN side: a port of hlan's bridge.
            self.ip("hlan", "link", "add", f"p{n}", "type", "veth", "peer", "name", "lan",
                    "netns", lab.ns(gw))
            self.ip("hlan", "link", "set", f"p{n}", "master", "br0", "up")
            self.ip(gw, "link", "set", "lan", "up")
            self.ip(gw, "addr", "add", f"{GW_LAN[gw]}/24", "dev", "lan")
            # WAN side: a link to srv1, whose sshd listens on its lab address.
            mine, srv = GW_WAN[gw]
            self.ip(gw, "link", "add", "wan", "type", "veth", "peer", "name", f"{name}-g{n}",
                    "netns", lab.ns("srv1"))
            self.ip(gw, "link", "set", "wan", "up")
            self.ip("srv1", "link", "set", f"{name}-g{n}", "up")
            self.ip(gw, "addr", "add", f"{mine}/24", "dev", "wan")
            self.ip("srv1", "addr", "add", f"{srv}/24", "dev", f"{name}-g{n}")
            # Everything via srv1, which does not forward: t1 answers only through a tunnel.
            self.ip(gw, "route", "add", "default", "via", srv)
            lab.exec(gw, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"], check=True)
            # Which gateway a LAN flow took: a counter of SYNs to port 80 from the LAN.
            lab.exec(gw, ["nft", "-f", "-"], check=True, input=(
                "table ip hatest {\n chain pre {\n  type filter hook prerouting priority -300\n"
                f'  iifname "lan" ip saddr {LAN_HOST} tcp dport 80 tcp flags syn counter\n'
                " }\n}\n"))

    def syns(self, gw):
        out = self.lab.exec(gw, ["nft", "list", "chain", "ip", "hatest", "pre"], check=True)
        return int(re.search(r"counter packets (\d+)", out.stdout).group(1))

    def vip_on(self, gw):
        out = self.lab.exec(gw, ["ip", "-4", "-o", "addr", "show", "dev", "lan"]).stdout
        return f" {VIP}/" in out

    # -- the daemons

    def start_tprosshy(self, gw):
        t = self.tprosshy(CONFIG, role=gw)
        t.wait_ready()
        self.tprosshy_runs[gw] = t
        return t

    def start_keepalived(self, gw):
        d = self.lab.state / f"keepalived-{gw}"
        d.mkdir(exist_ok=True)
        other = "gw2" if gw == "gw1" else "gw1"
        conf = d / "keepalived.conf"
        conf.write_text(KEEPALIVED_CONF.format(
            gw=gw, nft=self.nft_bin, priority=PRIORITY[gw], advert=ADVERT, src=GW_LAN[gw],
            peer=GW_LAN[other], vip=VIP))
        log = open(d / "keepalived.log", "ab")
        p = self.lab.popen(gw, [self.keepalived_bin, "--dont-fork", "--log-console",
                                "--log-detail", "--no-syslog", "--vrrp", "-f", conf,
                                "-p", d / "keepalived.pid", "-r", d / "vrrp.pid"],
                           stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.keepalived[gw] = (p, d / "keepalived.log")
        return p

    def keepalived_log(self, gw):
        return self.keepalived[gw][1].read_text(errors="replace")

    def logs(self):
        parts = []
        for gw in self.keepalived:
            parts.append(f"--- keepalived {gw}:\n{self.keepalived_log(gw)[-3000:]}")
        for gw, t in self.tprosshy_runs.items():
            parts.append(f"--- tprosshy {gw}:\n{t.log()[-3000:]}")
        return "\n".join(parts)

    def wait_vip(self, gw, timeout):
        try:
            wait_until(lambda: self.vip_on(gw), timeout, what=f"{VIP} on {gw}")
        except TimeoutError as e:
            self.fail(f"{e}\n{self.logs()}")

    def get_who(self):
        return parse_who(self.lab.http_get("hlan", self.lab["T1_IP4"]))

    def resolve(self):
        """The LAN host asks the virtual address, its resolver too, for t1's name."""
        return self.lab.dig("hlan", self.lab["T1_NAME"], server=VIP)

    def takeover(self, stop, what):
        """Runs stop(), then probes from the LAN until a new flow gets through; returns
        the seconds from stop() to that flow's answer."""
        t0 = time.monotonic()
        stop()
        r = self.lab.exec("hlan", ["python3", "-c", PROBE, self.lab["T1_IP4"], 3 * BOUND],
                          timeout=3 * BOUND + 30)
        m = re.match(r"ok ([\d.]+) (\d+)", r.stdout)
        if not m:
            self.fail(f"{what}: no new flow through the other gateway within {3 * BOUND} s "
                      f"({r.stdout.strip()} {r.stderr.strip()})\n{self.logs()}")
        took = float(m.group(1)) - t0
        print(f"{what}: a new flow got through {took:.2f} s later ({m.group(2)} tries)",
              flush=True)
        return took

    def back_on_gw1(self):
        """gw1 takes the address back from gw2, and new LAN flows go through it again."""
        self.wait_vip("gw1", 3 * BOUND)
        wait_until(lambda: not self.vip_on("gw2"), BOUND, what=f"gw2 gives {VIP} up")
        before = self.syns("gw1")
        wait_until(lambda: self.get_who()["peer"] == self.lab["SRV1_NET_IP4"]
                   and self.syns("gw1") > before, BOUND, interval=0.2,
                   what="a new flow through gw1 again")

    def hold_flow(self):
        p = self.lab.popen("hlan", ["python3", "-c", HELD, self.lab["T1_IP4"]],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline().strip()
        self.assertEqual(line, "open", f"a flow through the active gateway did not open")
        return p

    def fate(self, held):
        out, _ = held.communicate("go\n", timeout=20)
        return out.strip()

    # -- the test

    def test_new_flows_move_to_the_other_gateway(self):
        lab = self.lab
        self.build()
        for gw in ("gw1", "gw2"):
            self.start_tprosshy(gw)
        for gw in ("gw1", "gw2"):
            self.start_keepalived(gw)
        # gw1 has the higher priority: it is elected after 3 adverts' silence and skew.
        self.wait_vip("gw1", 3 * BOUND)
        self.assertFalse(self.vip_on("gw2"))
        self.assertEqual(self.get_who()["peer"], lab["SRV1_NET_IP4"])
        self.assertGreater(self.syns("gw1"), 0)
        self.assertEqual(self.syns("gw2"), 0)
        self.assertEqual(self.resolve(), ("NOERROR", [lab["T1_IP4"]]))

        # 1. gw1 dies: its LAN link goes dead, its keepalived and tprosshy are killed.
        held = self.hold_flow()
        before2 = self.syns("gw2")

        def crash():
            self.ip("gw1", "link", "set", "lan", "down")
            os.killpg(self.keepalived["gw1"][0].pid, signal.SIGKILL)
            self.tprosshy_runs["gw1"].kill()
        took = self.takeover(crash, "gw1 crashed")
        self.assertLessEqual(took, BOUND, self.logs())
        self.assertTrue(self.vip_on("gw2"))
        self.assertGreater(self.syns("gw2"), before2)
        self.assertEqual(self.get_who()["peer"], lab["SRV1_NET_IP4"])
        self.assertEqual(self.resolve(), ("NOERROR", [lab["T1_IP4"]]))
        fate = self.fate(held)
        print(f"a flow open through gw1 when it died: {fate}", flush=True)
        self.assertNotEqual(fate, "data", "a flow of the dead gateway went on")

        # 2. gw1 comes back as after a reboot (no address left over): tprosshy, then
        #    keepalived; with the higher priority it takes the address back.
        self.keepalived["gw1"][0].wait(5)
        lab.exec("gw1", ["ip", "addr", "del", f"{VIP}/24", "dev", "lan"])
        self.ip("gw1", "link", "set", "lan", "up")
        self.start_tprosshy("gw1")
        self.start_keepalived("gw1")
        self.back_on_gw1()

        # 3. tprosshy alone dies on gw1: the track script fails (interval 1 s, fall 2) and
        #    keepalived gives the address up. Then tprosshy is back, and so is gw1.
        held = self.hold_flow()
        before2 = self.syns("gw2")
        took = self.takeover(lambda: self.tprosshy_runs["gw1"].kill(), "gw1's tprosshy died")
        self.assertLessEqual(took, BOUND, self.logs())
        self.assertGreater(self.syns("gw2"), before2)
        self.assertIsNone(self.keepalived["gw1"][0].poll(), "gw1's keepalived exited")
        self.assertFalse(self.vip_on("gw1"))
        fate = self.fate(held)
        print(f"a flow open through gw1 when its tprosshy died: {fate}", flush=True)
        self.assertNotEqual(fate, "data", "a flow of the dead tprosshy went on")
        self.start_tprosshy("gw1")
        self.back_on_gw1()

        # 4. keepalived and tprosshy on gw1 are stopped.
        held = self.hold_flow()
        before2 = self.syns("gw2")

        def stop():
            self.keepalived["gw1"][0].send_signal(signal.SIGTERM)
            self.tprosshy_runs["gw1"].send_signal(signal.SIGTERM)
        took = self.takeover(stop, "gw1 stopped")
        self.assertLessEqual(took, BOUND, self.logs())
        self.assertGreater(self.syns("gw2"), before2)
        self.assertEqual(self.keepalived["gw1"][0].wait(10), 0, self.logs())
        self.assertEqual(self.tprosshy_runs["gw1"].wait_exit(10), 0)
        self.assertFalse(self.vip_on("gw1"))
        self.assertNotIn("inet tprosshy", lab.nft_tables("gw1"))
        fate = self.fate(held)
        print(f"a flow open through gw1 when it stopped: {fate}", flush=True)
        self.assertIn(fate, ("reset", "closed"))

        self.keepalived["gw2"][0].send_signal(signal.SIGTERM)
        self.assertEqual(self.keepalived["gw2"][0].wait(10), 0, self.logs())
        self.assertFalse(self.vip_on("gw2"))
        self.assertEqual(self.tprosshy_runs["gw2"].stop(signal.SIGTERM), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
