"""Several profiles: longest-prefix dispatch, supervision, gateway mode, scale."""
import os
import signal
import subprocess
import time
import unittest

from lab import CLIENT_PY, LabError, LabTestCase, parse_who, stream_sha256, wait_until

TWO = """
listen: {tcp_port: 12346}
profiles:
  wide:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: [198.19.0.0/16, "fd00:11::/64"]
  narrow:
    host: @NARROW_HOST@
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T2_NET4@", "@T2_NET6@"]
"""



class Router(LabTestCase):
    def two(self, narrow_host="srv2", extra=""):
        return extra + TWO.replace("@NARROW_HOST@", narrow_host)

    def who(self, ip, role="client"):
        return parse_who(self.lab.http_get(role, ip))

    def ssh_pid(self, host):
        for pid, _ in self.lab.procs("client", "ssh"):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[-2] == host.encode():
                    return pid
        return None

    def test_longest_prefix_picks_the_tunnel(self):
        lab = self.lab
        t = self.tprosshy(self.two())
        t.wait_ready()
        self.assertEqual(self.who(lab["T1_IP4"])["peer"], lab["SRV1_NET_IP4"])
        self.assertEqual(self.who(lab["T2_IP4"])["peer"], lab["SRV2_NET_IP4"])
        self.assertEqual(self.who(lab["T2_IP6"])["peer"], lab["SRV2_NET_IP6"])
        self.assertEqual(self.who(lab["T1_IP6"])["peer"], lab["SRV1_NET_IP6"])
        self.assertIn("2/2 profiles up", t.log())
        self.assertEqual(t.stop(), 0)

    def test_equal_prefixes_are_a_config_error(self):
        cfg = self.two().replace("@T2_NET4@", "198.19.0.0/16")
        t = self.tprosshy(cfg)
        self.assertEqual(t.wait_exit(10), 78)
        self.assertIn("wide", t.log())
        self.assertIn("narrow", t.log())

    def test_killed_tunnel_comes_back_and_others_keep_flowing(self):
        lab = self.lab
        t = self.tprosshy(self.two())
        t.wait_ready()
        n = 768 << 20
        transfer = lab.popen("client", ["sh", "-c",
                                        f"python3 {CLIENT_PY} http {lab['T2_IP4']} 80 GET "
                                        f"/bytes/{n} --timeout 120 | tail -c {n} | sha256sum"],
                             stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        victim = self.ssh_pid("srv1")
        self.assertIsNotNone(victim)
        os.kill(victim, signal.SIGKILL)
        t.wait_log(r"\[wide\] tunnel down", 10)
        # ... and come back after the restart.
        wait_until(lambda: self.try_who(lab["T1_IP4"]), 15, interval=0.2, what="wide back")
        out, _ = transfer.communicate(timeout=180)
        self.assertEqual(transfer.returncode, 0)
        self.assertEqual(out.split()[0], stream_sha256(n))
        self.assertRegex(t.log(), r"\[wide\] restarting ssh in")
        self.assertEqual(t.stop(), 0)

    def try_who(self, ip):
        try:
            return self.who(ip)["peer"] == self.lab["SRV1_NET_IP4"]
        except LabError:
            return False

    def test_unreachable_profile_does_not_stop_the_others(self):
        lab = self.lab
        t = self.tprosshy(self.two(narrow_host="unreachable"))
        t.wait_ready(30)
        self.assertIn("1/2 profiles up", t.log())
        self.assertRegex(t.log(), r"\[narrow\] tunnel down: .*(timed out|No route|refused)")
        self.assertEqual(self.who(lab["T1_IP4"])["peer"], lab["SRV1_NET_IP4"])
        # The down profile's prefix is reset at once, never sent to another tunnel.
        started = time.monotonic()
        probe = lab.reset_probe("client", lab["T2_IP4"], "80")
        self.assertEqual(probe, "reset")
        self.assertLess(time.monotonic() - started, 2)
        self.assertEqual(t.stop(), 0)

    def test_default_route_profile_bypasses_its_own_ssh_server(self):
        lab = self.lab
        t = self.tprosshy(f"""
profiles:
  everything:
    host: srv1
    ssh_args: ["-F", "{lab.ssh_config}"]
    subnets: [0.0.0.0/0, "::/0"]
""")
        t.wait_ready()
        self.assertEqual(self.who(lab["T1_IP4"])["peer"], lab["SRV1_NET_IP4"])
        self.assertEqual(self.who(lab["T1_IP6"])["peer"], lab["SRV1_NET_IP6"])
        # ssh's own reconnect must not be redirected into its own tunnel.
        os.kill(self.ssh_pid("srv1"), signal.SIGKILL)
        t.wait_log(r"\[everything\] tunnel down", 10)
        wait_until(lambda: self.try_who(lab["T1_IP4"]), 15, interval=0.2, what="back up")
        self.assertEqual(t.stop(), 0)

    def test_retry_keeps_waiting_for_a_host(self):
        t = self.tprosshy("on_start_failure: retry\n" + self.two().split("  narrow:")[0]
                          .replace("host: srv1", "host: unreachable"))
        t.wait_ready(30)
        self.assertIn("0/1 profiles up", t.log())
        t.wait_log(r"(?s)restarting ssh in.*restarting ssh in", 30)
        self.assertTrue(t.running)
        self.assertEqual(t.stop(), 0)

    def test_gateway_mode_serves_the_lan_and_is_no_open_proxy(self):
        lab = self.lab
        cfg = f"""
mode: gateway
gateway: {{interfaces: ["{lab['CLIENT_IF_LAN']}"]}}
""" + self.two()
        t = self.tprosshy(cfg)
        t.wait_ready()
        self.assertEqual(self.who(lab["T1_IP4"], role="lan")["peer"], lab["SRV1_NET_IP4"])
        self.assertEqual(self.who(lab["T2_IP6"], role="lan")["peer"], lab["SRV2_NET_IP6"])
        # A LAN host connecting straight to the listener is refused.
        probe = lab.reset_probe("lan", lab["CLIENT_LAN_IP4"], "12346")
        self.assertEqual(probe, "reset")
        self.assertEqual(t.stop(), 0)

    def test_gateway_listening_on_the_lan_address_routes_its_own_flows_too(self):
        """listen.address on the LAN side: the LAN's flows of that family and the gateway's
        own, IPv4 and IPv6, all go through the tunnels (the gateway's own are redirected to
        its loopback listeners)."""
        lab = self.lab
        for family, listen in (("4", lab["CLIENT_LAN_IP4"]), ("6", lab["CLIENT_LAN_IP6"])):
            cfg = f"""
mode: gateway
gateway: {{interfaces: ["{lab['CLIENT_IF_LAN']}"]}}
listen: {{address: "{listen}", tcp_port: 12346, dns_port: 12353}}
profiles:
  wide:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: [198.19.0.0/16, "fd00:11::/64"]
    dns: {{domains: ["@T1_DOMAIN@"]}}
  narrow:
    host: srv2
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T2_NET4@", "@T2_NET6@"]
"""
            t = self.tprosshy(cfg)
            t.wait_ready()
            # DNS: the gateway's own queries to its resolver, and the LAN's to the gateway.
            for role, server in (("client", lab["CLIENT_DNS"]), ("lan", listen)):
                r = lab.exec(role, ["dig", "+short", "+time=2", "+tries=2", f"@{server}",
                                    lab["T1_NAME"], "A"], timeout=30)
                self.assertEqual(r.stdout.split(), [lab["T1_IP4"]], (role, listen, r.stderr))
            lan = {"4": (lab["T1_IP4"], lab["SRV1_NET_IP4"]),
                   "6": (lab["T2_IP6"], lab["SRV2_NET_IP6"])}[family]
            self.assertEqual(self.who(lan[0], role="lan")["peer"], lan[1], listen)
            self.assertEqual(self.who(lab["T1_IP4"])["peer"], lab["SRV1_NET_IP4"], listen)
            self.assertEqual(self.who(lab["T2_IP6"])["peer"], lab["SRV2_NET_IP6"], listen)
            self.assertEqual(t.stop(), 0)

    def test_one_lan_host_cannot_starve_another(self):
        """Host A (the LAN) opens 3,000 flows to a routed address whose packets srv1 drops,
        so none ever opens: past 2,000 being opened its flows are reset, and host B (the
        gateway itself) still gets its GET through at once."""
        lab = self.lab
        hole = "198.19.1.200"
        lab.exec("srv1", ["nft", "-f", "-"], check=True, input=(
            "table inet hole {\n chain out {\n  type filter hook output priority 0;\n"
            f"  ip daddr {hole} drop\n }}\n}}\n"))
        self.addCleanup(lab.exec, "srv1", ["nft", "delete", "table", "inet", "hole"])
        t = self.tprosshy(f"""
mode: gateway
gateway: {{interfaces: ["{lab['CLIENT_IF_LAN']}"]}}
""" + self.two())
        t.wait_ready()
        flood = lab.popen("lan", ["sh", "-c", f"ulimit -n 8192; exec python3 -c '{HOLD}' {hole} 3000"],
                          stdout=subprocess.PIPE, text=True)
        self.addCleanup(flood.kill)
        self.assertEqual(flood.stdout.readline().split(), ["connected", "3000"])
        # Past 2,000 flows being opened for one source, A's next ones are reset at once.
        self.assertEqual(flood.stdout.readline().split(), ["reset", "1000", "ended", "1000"])
        started = time.monotonic()
        self.assertEqual(self.who(lab["T1_IP4"])["peer"], lab["SRV1_NET_IP4"])
        took = time.monotonic() - started
        self.assertLess(took, 5.0)
        print(f"\nB's GET beside A's 3000 pending flows: {took * 1000:.0f} ms")
        flood.kill()
        self.assertEqual(t.stop(), 0)

    def test_two_thousand_parallel_flows(self):
        lab = self.lab
        t = self.tprosshy(self.two())
        t.wait_ready()
        r = lab.exec("client", ["sh", "-c", f"ulimit -n 8192; python3 -c '{MANY2}' "
                                            f"{lab['T1_IP4']} 2000"], timeout=180)
        self.assertEqual(r.stdout.strip(), "2000 ok of 2000", r.stderr + t.log()[-3000:])
        self.assertEqual(t.stop(), 0)


# Opens N connections that never get an answer and holds them; says when all are open
# (accepted by tprosshy's listener, which accepts before ssh opens the channel).
HOLD = """
import asyncio, sys
host, n = sys.argv[1], int(sys.argv[2])
async def watch(r):
    try:
        await r.read(1)
        return "eof"
    except ConnectionResetError:
        return "reset"
async def main():
    rs = await asyncio.gather(*(asyncio.open_connection(host, 80) for _ in range(n)),
                              return_exceptions=True)
    ok = [r for r in rs if not isinstance(r, Exception)]
    early = sum(1 for r in rs if isinstance(r, ConnectionResetError))
    print("connected", len(ok) + early, flush=True)  # a reset may come before the connect ends
    done, _ = await asyncio.wait([asyncio.ensure_future(watch(r)) for r, w in ok], timeout=5)
    print("reset", early + sum(1 for d in done if d.result() == "reset"),
          "ended", early + len(done), flush=True)
    await asyncio.sleep(300)
asyncio.run(main())
"""

MANY2 = """
import asyncio, sys
host, n = sys.argv[1], int(sys.argv[2])
async def one(opened, gate):
    r, w = await asyncio.wait_for(asyncio.open_connection(host, 80), 60)
    opened.append(1)
    await gate.wait()
    w.write(b"GET /who HTTP/1.0\\r\\n\\r\\n")
    data = await asyncio.wait_for(r.read(), 60)
    w.close()
    return b"name=t1" in data
async def main():
    opened, gate = [], asyncio.Event()
    tasks = [asyncio.create_task(one(opened, gate)) for _ in range(n)]
    for _ in range(600):
        if len(opened) == n or any(t.done() for t in tasks): break
        await asyncio.sleep(0.1)
    gate.set()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    print(sum(1 for x in res if x is True), "ok of", n)
asyncio.run(main())
""".replace("'", '"')

if __name__ == "__main__":
    unittest.main(verbosity=2)
