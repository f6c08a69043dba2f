"""Gateway mode and DNS: what the LAN is answered, and that the WAN side is answered nothing.

The lab's client is the gateway: `lan` routes through it, and `srv1` stands on its WAN
side. A test here gives srv1 a route to the LAN prefixes through the client, as any host
next to a router may have, and asks tprosshy's DNS port straight.
"""
import re
import unittest

from lab import Lab, LabError

DNS_PORT = "12353"
TCP_PORT = "12346"

CONFIG = f"""
mode: gateway
gateway: {{interfaces: ["@CLIENT_IF_LAN@"]}}
listen: {{tcp_port: {TCP_PORT}, dns_port: {DNS_PORT}}}
dns: {{capture: resolvers}}
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@", "@T1_NET6@"]
    dns: {{domains: ["@T1_DOMAIN@"]}}
"""


class GatewayDns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab().up()
        cls.t = cls.lab.tprosshy(CONFIG)
        cls.t.wait_ready()

    @classmethod
    def tearDownClass(cls):
        cls.t.kill()
        cls.lab.down()

    def ask(self, role, server, name, rtype="A", port=53, tcp=False):
        """dig from ROLE -> (rcode, [answers]), or None when nothing answered (refused or
        silence)."""
        argv = ["dig", "+noall", "+comments", "+answer", "+time=2", "+tries=1", "-p", port]
        if tcp:
            argv.append("+tcp")
        r = self.lab.exec(role, argv + [f"@{server}", name, rtype], timeout=30)
        m = re.search(r"status: ([A-Z]+)", r.stdout)
        if not m:
            return None
        return m.group(1), [ln.split()[4] for ln in r.stdout.splitlines()
                            if ln and not ln.startswith(";") and len(ln.split()) >= 5
                            and ln.split()[3] == rtype]

    def wan_route_to_the_lan(self):
        """srv1 (WAN side) routes the LAN prefixes via the client, for this test only."""
        lab = self.lab
        routes = [["ip", "route", "add", "198.18.3.0/24", "via", lab["CLIENT_SRV1_IP4"]],
                  ["ip", "-6", "route", "add", "fd00:3::/64", "via", lab["CLIENT_SRV1_IP6"]]]
        for r in routes:
            lab.exec("srv1", r, check=True)
            self.addCleanup(lab.exec, "srv1", [*r[:-4], "del", *r[-3:]])

    def test_lan_host_asking_the_gateway_itself_gets_split_dns(self):
        lab = self.lab
        for gw in (lab["CLIENT_LAN_IP4"], lab["CLIENT_LAN_IP6"]):
            with self.subTest(gateway=gw):
                # A tunnel-only name: only t1's nameserver, through the tunnel, knows it.
                self.assertEqual(self.ask("lan", gw, lab["T1_NAME"]), ("NOERROR", [lab["T1_IP4"]]))
                self.assertEqual(self.ask("lan", gw, lab["T1_NAME"], "AAAA", tcp=True),
                                 ("NOERROR", [lab["T1_IP6"]]))
                # Other names: the gateway's own resolver, as for captured queries.
                self.assertEqual(self.ask("lan", gw, lab["LOCAL_NAME"]),
                                 ("NOERROR", [lab["LOCAL_NAME_IP4"]]))
        # The answer's address is learned for the LAN too.
        self.assertEqual(self.ask("lan", lab["CLIENT_LAN_IP4"], lab["T1_OUTSIDE_NAME"]),
                         ("NOERROR", [lab["T1_OUTSIDE_IP4"]]))
        self.assertIn(b"name=t1", lab.http_get("lan", lab["T1_OUTSIDE_IP4"]))

    def test_lan_host_captured_queries_keep_working(self):
        lab = self.lab
        # The lab's LAN resolv.conf names the client's resolver, a captured one.
        self.assertEqual(self.ask("lan", lab["CLIENT_DNS"], lab["T1_NAME"]),
                         ("NOERROR", [lab["T1_IP4"]]))
        self.assertEqual(self.ask("lan", lab["CLIENT_DNS"], lab["T1_NAME"], tcp=True),
                         ("NOERROR", [lab["T1_IP4"]]))
        self.assertEqual(self.ask("lan", lab["CLIENT_DNS"], lab["LOCAL_NAME"]),
                         ("NOERROR", [lab["LOCAL_NAME_IP4"]]))

    def test_dns_port_answers_nothing_from_the_wan_side(self):
        lab = self.lab
        self.wan_route_to_the_lan()
        for gw in (lab["CLIENT_LAN_IP4"], lab["CLIENT_LAN_IP6"]):
            with self.subTest(gateway=gw):
                # The path works: the TCP listener answers (with a reset, not being an
                # open proxy), so silence below is the DNS port's own.
                self.assertEqual(lab.reset_probe("srv1", gw, TCP_PORT), "reset")
                for tcp in (False, True):
                    self.assertIsNone(self.ask("srv1", gw, lab["T1_NAME"], port=DNS_PORT, tcp=tcp),
                                      self.t.log()[-2000:])
                    # Port 53 of the gateway is redirected for the LAN interfaces only.
                    self.assertIsNone(self.ask("srv1", gw, lab["T1_NAME"], tcp=tcp))
        # Meanwhile the LAN's captured queries are answered as before.
        self.assertEqual(self.ask("lan", lab["CLIENT_DNS"], lab["T1_NAME"]),
                         ("NOERROR", [lab["T1_IP4"]]))
        self.assertTrue(self.t.running)


if __name__ == "__main__":
    unittest.main(verbosity=2)
