"""Nothing leaks: what no tunnel carries (UDP, QUIC, ICMP, ...) to a routed address is
refused at once, locally and from the LAN, and never reaches the next hop; what keeps the
machine on its network is never refused, even with everything routed."""
import json
import unittest

from lab import LabTestCase, NextHop, parse_who, probe

PROFILE = """
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: [{subnets}]
    dns: {{domains: ["@T1_DOMAIN@"]}}
{extra}"""


class OtherProtocols(LabTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.next_hop = NextHop(cls.lab)

    def leaked(self):
        return self.next_hop.count()

    def probe(self, what, host, role="client", port=None):
        return probe(self.lab, what, host, role, port)

    def refused(self, t):
        """net1's refused packets, as `status --json` says."""
        r = t.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return next(p["refused_packets"] for p in json.loads(r.stdout)["profiles"]
                    if p["name"] == "net1")

    def config(self, subnets=None, extra=""):
        lab = self.lab
        subnets = subnets or f'"{lab["T1_NET4"]}", "{lab["T1_NET6"]}"'
        return PROFILE.format(subnets=subnets, extra=extra)

    def assert_refused(self, role="client"):
        lab = self.lab
        before = self.leaked()
        for host in (lab["T1_IP4"], lab["T1_IP6"]):
            verdict, took = self.probe("udp", host, role)
            self.assertIn(verdict, ("refused", "eperm"), (role, host))
            self.assertLess(took, 2000, (role, host))
            verdict, took = self.probe("icmp", host, role)
            self.assertIn(verdict, ("prohibited", "eperm"), (role, host))
            self.assertLess(took, 2000, (role, host))
        self.assertEqual(self.leaked(), before, "packets reached the next hop")

    def test_udp_and_icmp_to_a_routed_address_are_refused_at_once(self):
        lab = self.lab
        t = self.tprosshy(self.config())
        t.wait_ready()
        self.assert_refused()
        # Counted, by profile, and still after a reload replaced the table.
        refused = self.refused(t)
        self.assertGreaterEqual(refused, 4)
        self.assertEqual(t.ctl("reload").returncode, 0)
        self.assertGreaterEqual(self.refused(t), refused)
        # TCP still goes through the tunnel, names still resolve through it, and the ssh
        # server itself answers everything.
        self.assertEqual(parse_who(lab.http_get("client", lab["T1_IP4"]))["peer"],
                         lab["SRV1_NET_IP4"])
        r = lab.exec("client", ["dig", "+short", "+time=2", "+tries=2", lab["T1_NAME"]])
        self.assertEqual(r.stdout.split(), [lab["T1_IP4"]])
        self.assertEqual(self.probe("icmp", lab["SRV1_IP4"])[0], "answered")
        self.assertIn("reject with icmpx admin-prohibited", lab.nft_table())
        self.assertEqual(t.stop(), 0)
        # Without tprosshy, as before it: the packets go to the next hop.
        before = self.leaked()
        self.assertEqual(self.probe("udp", lab["T1_IP4"])[0], "silence")
        self.assertGreater(self.leaked(), before)

    def test_pass_lets_them_out_as_before(self):
        lab = self.lab
        t = self.tprosshy(self.config(extra="    other_protocols: pass\n"))
        t.wait_ready()
        before = self.leaked()
        for host in (lab["T1_IP4"], lab["T1_IP6"]):
            self.assertEqual(self.probe("udp", host)[0], "silence", host)
        self.assertGreaterEqual(self.leaked(), before + 2)
        self.assertNotIn("chain refuse", lab.nft_table())
        self.assertEqual(t.stop(), 0)

    def test_everything_routed_keeps_the_machine_on_its_network(self):
        lab = self.lab
        t = self.tprosshy(self.config(subnets='"0.0.0.0/0", "::/0"'))
        t.wait_ready()
        self.assert_refused()
        # The local resolver and the ssh server answer; TCP goes through the tunnel.
        r = lab.exec("client", ["dig", "+short", "+time=2", "+tries=2", lab["LOCAL_NAME"]])
        self.assertEqual(r.stdout.split(), [lab["LOCAL_NAME_IP4"]])
        self.assertEqual(self.probe("icmp", lab["SRV1_IP4"])[0], "answered")
        self.assertEqual(parse_who(lab.http_get("client", lab["T1_IP4"]))["peer"],
                         lab["SRV1_NET_IP4"])
        # DHCP (a lease renewed by unicast to a server that the routed range covers) leaves.
        before = self.leaked()
        self.assertEqual(self.probe("udp", lab["T1_IP4"], port=67)[0], "silence")
        self.assertEqual(self.probe("udp", lab["T1_IP6"], port=547)[0], "silence")
        self.assertGreaterEqual(self.leaked(), before + 2)
        # Neighbour discovery: srv1, having forgotten the client, learns it again (the
        # client's advertisement goes out).
        lab.exec("srv1", ["ip", "-6", "neigh", "flush", "all"])
        self.probe("icmp", lab["CLIENT_SRV1_IP6"], role="srv1")
        r = lab.exec("srv1", ["ip", "-6", "neigh", "show", lab["CLIENT_SRV1_IP6"]])
        self.assertRegex(r.stdout, r"lladdr \S+ .*(REACHABLE|STALE|DELAY|PROBE)", r.stdout)
        self.assertEqual(t.stop(), 0)

    def test_a_lan_host_is_refused_by_the_gateway(self):
        lab = self.lab
        t = self.tprosshy(f"""
mode: gateway
gateway: {{interfaces: ["{lab['CLIENT_IF_LAN']}"]}}
""" + self.config())
        t.wait_ready()
        self.assert_refused(role="lan")
        self.assertEqual(parse_who(lab.http_get("lan", lab["T1_IP4"]))["peer"],
                         lab["SRV1_NET_IP4"])
        self.assertEqual(t.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
