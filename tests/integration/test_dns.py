"""DNS through the tunnels: per-profile domains, pipelining, cache, learned routes."""
import json
import os
import re
import signal
import time
import unittest

from lab import Lab, LabError, LabTestCase, parse_who, wait_until

CONFIG = """
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@", "@T1_NET6@"]
    dns: {domains: ["@T1_DOMAIN@"]}
  net2:
    host: srv2
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T2_NET4@"]
    dns: {domains: ["@T2_DOMAIN@"], learn_routes: false}
"""

# Sends N distinct queries at once over UDP and counts the answers by rcode.
BURST = r"""
import random, socket, struct, sys, time
server, suffix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", 1, 1)
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(query(i, f"burst{i}-{random.randrange(1 << 30)}.{suffix}"), (server, 53))
    socks.append(s)
rcodes = {}
deadline = time.monotonic() + 20
for s in socks:
    s.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        data = s.recv(4096)
        rc = data[3] & 0xF
        rcodes[rc] = rcodes.get(rc, 0) + 1
    except socket.timeout:
        rcodes["timeout"] = rcodes.get("timeout", 0) + 1
print(sorted(rcodes.items(), key=str))
"""

GARBAGE = r"""
import socket, struct, sys
server = sys.argv[1]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
loop = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\1\0\1"
for p in [b"", b"\x01", b"\xff" * 11, b"\x00" * 12, loop, b"\x12\x34" + b"\xff" * 500,
          struct.pack("!HHHHHH", 9, 0x0100, 60000, 0, 0, 0) + b"\x03abc"]:
    u.sendto(p, (server, 53))
t = socket.create_connection((server, 53), 3)
t.sendall(struct.pack("!H", 65535) + b"\xab" * 65535)   # oversized junk over TCP
t.sendall(struct.pack("!H", 5) + b"\x01\x02")             # and a truncated one
t.close()
print("sent")
"""


class Dns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab().up()
        cls.t = cls.lab.tprosshy(CONFIG)
        cls.t.wait_ready()

    @classmethod
    def tearDownClass(cls):
        cls.t.kill()
        cls.lab.down()

    def dig(self, name, rtype="A", **kw):
        return self.lab.dig("client", name, rtype, server=self.lab["CLIENT_DNS"], **kw)

    def test_each_name_goes_to_its_profile(self):
        lab = self.lab
        # Only the tunnels reach the targets' nameservers: an answer proves the path.
        self.assertEqual(self.dig(lab["T1_NAME"]), ("NOERROR", [lab["T1_IP4"]]))
        self.assertEqual(self.dig(lab["T2_NAME"]), ("NOERROR", [lab["T2_IP4"]]))
        self.assertEqual(self.dig(lab["T1_NAME"], "AAAA"), ("NOERROR", [lab["T1_IP6"]]))
        self.assertEqual(self.dig(lab["T1_NAME"], tcp=True), ("NOERROR", [lab["T1_IP4"]]))
        # Other names: the machine's own resolver.
        self.assertEqual(self.dig(lab["LOCAL_NAME"]), ("NOERROR", [lab["LOCAL_NAME_IP4"]]))
        self.assertEqual(self.dig(lab["T1_NX_NAME"])[0], "NXDOMAIN")
        self.assertEqual(self.dig(lab["T2_NX_NAME"])[0], "NXDOMAIN")
        log = self.t.log()
        self.assertIn(", DNS on port", log)
        # "ready" means DNS works too: both remote nameservers were known before it.
        for p in ("net1", "net2"):
            self.assertLess(log.index(f"[{p}] dns: remote nameserver"), log.index("ready:"))

    def syns_to_nameserver(self):
        """TCP connections the remote nameserver has been offered (an nft counter in t1)."""
        out = self.lab.exec("t1", ["nft", "list", "table", "inet", "count"]).stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m.group(1))

    def test_concurrent_queries_are_pipelined(self):
        lab = self.lab
        lab.exec("t1", ["nft", "-f", "-"], check=True, input="""
table inet count {
  chain in { type filter hook input priority 0; tcp dport 53 tcp flags syn counter; }
}""")
        before = self.syns_to_nameserver()
        r = lab.exec("client", ["python3", "-c", BURST, lab["CLIENT_DNS"], lab["T1_DOMAIN"], "200"],
                     timeout=60)
        self.assertEqual(r.stdout.strip(), "[(3, 200)]", r.stderr)  # 200 NXDOMAIN answers
        # A burst spreads over at most 4 pipelined connections (dnsmasq closes each after
        # 100 queries, so a few more are opened as they retire), never one per query.
        self.assertLessEqual(self.syns_to_nameserver() - before, 10)

    def test_learned_route_lasts_its_ttl(self):
        lab = self.lab
        ip = lab["T1_OUTSIDE_IP4"]
        self.assertIsNotNone(lab.connect_error("client", ip, timeout=1))
        self.assertEqual(self.dig(lab["T1_OUTSIDE_NAME"]), ("NOERROR", [ip]))
        who = parse_who(lab.http_get("client", ip))
        self.assertEqual((who["name"], who["peer"]), ("t1", lab["SRV1_NET_IP4"]))
        self.assertIn(ip, lab.exec("client", ["nft", "list", "set", "inet", "tprosshy",
                                              "learn4_net1"]).stdout)
        ttl = int(lab["DNS_TTL"])
        wait_until(lambda: lab.connect_error("client", ip, timeout=1) is not None, ttl + 5,
                   interval=0.5, what="learned route expired")

    def test_learn_routes_false_learns_nothing(self):
        lab = self.lab
        ip = lab["T2_OUTSIDE_IP4"]
        self.assertEqual(self.dig(lab["T2_OUTSIDE_NAME"]), ("NOERROR", [ip]))
        self.assertIsNotNone(lab.connect_error("client", ip, timeout=1))

    def test_garbage_does_not_stop_the_server(self):
        lab = self.lab
        r = lab.exec("client", ["python3", "-c", GARBAGE, lab["CLIENT_DNS"]])
        self.assertEqual(r.stdout.strip(), "sent", r.stderr)
        self.assertTrue(self.t.running)
        self.assertEqual(self.dig(lab["T2_NAME"]), ("NOERROR", [lab["T2_IP4"]]))


class DnsCache(unittest.TestCase):
    def test_cached_answer_outlives_the_nameserver_until_its_ttl(self):
        with Lab() as lab:
            t = lab.tprosshy(CONFIG, args=("-v",))
            t.wait_ready()
            dig = lambda: lab.dig("client", lab["T1_NAME"], server=lab["CLIENT_DNS"], timeout=8)
            self.assertEqual(dig(), ("NOERROR", [lab["T1_IP4"]]))
            fetched = time.monotonic()
            for pid, _ in lab.procs("t1", "dnsmasq"):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not lab.procs("t1", "dnsmasq"), 5, what="dnsmasq gone")
            self.assertEqual(dig(), ("NOERROR", [lab["T1_IP4"]]))
            self.assertLess(time.monotonic() - fetched, int(lab["DNS_TTL"]))
            time.sleep(max(0, int(lab["DNS_TTL"]) + 1 - (time.monotonic() - fetched)))
            self.assertEqual(dig()[0], "SERVFAIL")
            t.kill()



class LearnLimits(LabTestCase):
    """dns.learn_limit and dns.learn_ttl_max: a profile's learned addresses are bounded in
    number (the oldest go, in the dispatcher and the kernel alike, counted) and in time."""

    def test_the_oldest_go_and_no_ttl_outlasts_the_cap(self):
        lab = self.lab
        t = self.tprosshy("""
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["198.19.1.128/25"]
    dns: {domains: ["@T1_DOMAIN@"], learn_limit: 2, learn_ttl_max: 3s}
""")
        t.wait_ready()
        names = [(lab["T1_NAME"], lab["T1_IP4"]), (lab["T1_ALT_NAME"], lab["T1_IP4_ALT"]),
                 (lab["T1_OUTSIDE_NAME"], lab["T1_OUTSIDE_IP4"])]
        for name, ip in names:
            self.assertEqual(lab.dig("client", name, "A", server=lab["CLIENT_DNS"]),
                             ("NOERROR", [ip]))
        learned = lab.exec("client", ["nft", "list", "set", "inet", "tprosshy", "learn4_net1"],
                           check=True).stdout
        self.assertNotIn(lab["T1_IP4"] + " ", learned)  # the first one went
        for ip in (lab["T1_IP4_ALT"], lab["T1_OUTSIDE_IP4"]):
            self.assertRegex(learned, re.escape(ip) + r" timeout [123]s")  # lab TTL 5 s, cap 3 s
        # The dispatcher agrees: the first is no longer routed, the others are.
        self.assertIsNotNone(lab.connect_error("client", lab["T1_IP4"], timeout=1))
        self.assertEqual(parse_who(lab.http_get("client", lab["T1_OUTSIDE_IP4"]))["name"], "t1")
        r = t.ctl("status", "--json")
        prof = json.loads(r.stdout)["profiles"][0]
        self.assertEqual((prof["learned_routes"], prof["learned_evicted"]), (2, 1))
        self.assertIn("its dns.learn_limit: the oldest go first", t.log())
        self.assertEqual(t.stop(), 0)

if __name__ == "__main__":
    unittest.main(verbosity=2)
