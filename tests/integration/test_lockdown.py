"""lockdown: a kill switch that outlives tprosshy. Killed outright, tprosshy leaves table inet
tprosshy_lock behind: its flows are reset, new TCP to a routed address is reset at once, UDP
and DNS for a profile's names are refused, and nothing reaches the next hop; the next start
(whose ssh server is a host name, looked up through the lock) routes again by itself; a
clean stop leaves no table; `tprosshy unlock` removes a crashed run's lock."""
import os
import re
import signal
import time
import unittest

from lab import LabTestCase, LocalUser, NextHop, parse_who, probe, tprosshy_bin, wait_until

# srv1 by a name only the client's resolver knows, which the lock refuses after a crash.
CONFIG = """
lockdown: {lockdown}
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@", "-o", "HostName=@SRV1_NAME@",
               "-o", "HostKeyAlias=@SRV1_IP4@"]
    subnets: ["@T1_NET4@", "@T1_NET6@"]
    dns: {{domains: ["@T1_DOMAIN@"]}}
"""


class Lockdown(LabTestCase):
    @classmethod
    def setUpClass(cls):
        # Answers live a minute: a learned address outlives a crash and a restart here.
        os.environ["LAB_DNS_TTL"] = "60"
        try:
            super().setUpClass()
        finally:
            del os.environ["LAB_DNS_TTL"]
        cls.next_hop = NextHop(cls.lab)

    def setUp(self):
        self.addCleanup(self.lab.exec, "client", ["nft", "delete", "table", "inet",
                                                  "tprosshy_lock"])

    def leaked(self):
        return self.next_hop.count()

    def probe(self, what, host, role="client"):
        return probe(self.lab, what, host, role)

    def config(self, lockdown=True):
        return CONFIG.format(lockdown="true" if lockdown else "false")

    def unlock(self):
        return self.lab.exec("client", [tprosshy_bin(), "unlock"])

    def kill(self, t):
        """SIGKILL, then wait for its helper to let the main table go (the lifeline)."""
        t.send_signal(signal.SIGKILL)
        wait_until(lambda: "inet tprosshy" not in self.lab.nft_tables()
                   and self.lab.count_procs("client", "ssh") == 0, 15,
                   what="the main table and every ssh gone")

    def assert_locked(self):
        """Everything to t1's network refused at once, and none of it sent on."""
        lab = self.lab
        before = self.leaked()
        for host in (lab["T1_IP4"], lab["T1_IP6"]):
            started = time.monotonic()
            self.assertIn("refused", lab.connect_error("client", host) or "connected", host)
            self.assertLess(time.monotonic() - started, 2.0, host)
            verdict, took = self.probe("udp", host)
            self.assertIn(verdict, ("refused", "eperm"), host)
            self.assertLess(took, 2000, host)
            verdict, _ = self.probe("icmp", host)
            self.assertIn(verdict, ("prohibited", "eperm"), host)
        # DNS for a profile's name: the query to the captured resolver is refused.
        started = time.monotonic()
        r = lab.exec("client", ["dig", "+short", "+time=2", "+tries=1", lab["T1_NAME"]])
        self.assertNotIn(lab["T1_IP4"], r.stdout.split())
        self.assertIn("refused", r.stdout + r.stderr)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(self.leaked(), before, "packets reached the next hop")
        # The ssh server and the rest of the network are not locked.
        self.assertEqual(self.probe("icmp", lab["SRV1_IP4"])[0], "answered")

    def assert_routed(self):
        lab = self.lab
        self.assertEqual(parse_who(lab.http_get("client", lab["T1_IP4"]))["peer"],
                         lab["SRV1_NET_IP4"])
        r = lab.exec("client", ["dig", "+short", "+time=2", "+tries=2", lab["T1_NAME"]])
        self.assertEqual(r.stdout.split(), [lab["T1_IP4"]])

    def test_a_killed_tprosshy_stays_locked_until_it_starts_again(self):
        """5 rounds: killed mid-download, locked, started again (by host name, through the
        lock), routing again; each round's start is the next round's run."""
        lab = self.lab
        t = self.tprosshy(self.config())
        t.wait_ready()
        times = []
        for i in range(5):
            self.assertEqual(sorted(lab.nft_tables()), ["inet tprosshy", "inet tprosshy_lock"])
            self.assertIn("lockdown        on", t.ctl("status").stdout)
            self.assert_routed()
            # While it runs, the lock holds only what the main table does not redirect.
            self.assertIn(self.probe("udp", lab["T1_IP4"])[0], ("refused", "eperm"))

            ends = lab.open_flows("client", lab["T1_IP4"], lab["T1_IP4"], self)
            asked = time.time()
            self.kill(t)
            got = ends()
            for name in ("download", "idle"):
                self.assertEqual(got.get(name, {}).get("end"), "reset",
                                 f"round {i}, {name}: {got}\n{t.log()}")
                times.append(got[name]["t"] - asked)
                self.assertLess(times[-1], 3.0, f"round {i}: {got[name]}")
            self.assertEqual(lab.nft_tables(), ["inet tprosshy_lock"])
            self.assert_locked()

            # The next start looks its server's name up through the lock and routes again.
            t = self.tprosshy(self.config())
            try:
                t.wait_ready()
            except Exception:
                self.fail(f"round {i}: {t.log()}")
            self.assertIn("1/1 profiles up", t.log())
            self.assert_routed()
            # The killed run's private directory went with this start; only this one's is left.
            self.assertEqual(len(list(lab.tmp.glob("tprosshy.*"))), 1, list(lab.tmp.iterdir()))
        print(f"\nlockdown SIGKILL: flows reset after {min(times):.3f} to {max(times):.3f} s")
        self.assertEqual(t.stop(), 0)
        self.assertEqual(lab.nft_tables(), [], "a clean stop leaves no table")

    def test_a_crashed_runs_learned_addresses_stay_locked_and_route_again(self):
        lab = self.lab
        ip = lab["T1_OUTSIDE_IP4"]  # not in a routed subnet: routed only once learned
        t = self.tprosshy(self.config())
        t.wait_ready()
        r = lab.exec("client", ["dig", "+short", "+time=2", "+tries=2", lab["T1_OUTSIDE_NAME"]])
        self.assertEqual(r.stdout.split(), [ip])
        self.assertEqual(parse_who(lab.http_get("client", ip))["name"], "t1")
        self.kill(t)
        # The client still holds the answer: the lock refuses it rather than send it direct.
        self.assertIn(ip, lab.exec("client", ["nft", "list", "set", "inet", "tprosshy_lock",
                                              "learn4_net1"]).stdout)
        self.assertIn("refused", lab.connect_error("client", ip) or "connected")
        # The next run routes it again through the tunnel, without a new answer.
        t2 = self.tprosshy(self.config())
        t2.wait_ready()
        self.assertIn("1 learned addresses of the crashed run's lock routed again", t2.log())
        self.assertIn(ip, lab.exec("client", ["nft", "list", "set", "inet", "tprosshy",
                                              "learn4_net1"]).stdout)
        self.assertEqual(parse_who(lab.http_get("client", ip))["name"], "t1")
        self.assertEqual(t2.stop(), 0)

    def test_unlock_removes_a_crashed_runs_lock(self):
        lab = self.lab
        t = self.tprosshy(self.config())
        t.wait_ready()
        r = self.unlock()
        self.assertEqual(r.returncode, 75, r.stdout + r.stderr)
        self.assertIn("a tprosshy is running", r.stderr)
        self.kill(t)
        self.assertEqual(lab.nft_tables(), ["inet tprosshy_lock"])
        self.assertIn("refused", lab.connect_error("client", lab["T1_IP4"]) or "connected")
        r = self.unlock()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("removed table inet tprosshy_lock", r.stdout)
        self.assertIn("net1: 1 routed range (IPv4)", r.stdout)
        self.assertIn("DNS to 1 resolver (IPv4)", r.stdout)
        self.assertRegex(r.stdout, r"net1: [1-9]\d* packets refused since it was put in")
        self.assertEqual(lab.nft_tables(), [])
        # Direct again, as without tprosshy: the datagram goes to the next hop.
        before = self.leaked()
        self.assertEqual(self.probe("udp", lab["T1_IP4"])[0], "silence")
        self.assertGreater(self.leaked(), before)
        r = self.unlock()
        self.assertEqual((r.returncode, r.stdout.strip()),
                         (0, "no table inet tprosshy_lock: nothing to remove"))

    def test_lockdown_off_fails_open_as_before_and_clears_a_stale_lock(self):
        lab = self.lab
        t = self.tprosshy(self.config())
        t.wait_ready()
        self.kill(t)
        self.assertEqual(lab.nft_tables(), ["inet tprosshy_lock"])
        # Started with lockdown off, tprosshy removes the lock a crash left.
        t = self.tprosshy(self.config(lockdown=False))
        t.wait_ready()
        self.assertEqual(lab.nft_tables(), ["inet tprosshy"])
        self.assertIn("lockdown        off", t.ctl("status").stdout)
        self.kill(t)
        self.assertEqual(lab.nft_tables(), [])
        self.assertEqual(self.probe("udp", lab["T1_IP4"])[0], "silence")

    def test_a_reload_turns_it_on_and_off(self):
        lab = self.lab
        t = self.tprosshy(self.config(lockdown=False))
        t.wait_ready()
        for i in range(10):  # ten reloads in a row, on and off, routing all along
            t.write_config(self.config())
            r = t.ctl("reload")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(sorted(lab.nft_tables()), ["inet tprosshy", "inet tprosshy_lock"])
            t.write_config(self.config(lockdown=False))
            r = t.ctl("reload")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(lab.nft_tables(), ["inet tprosshy"])
            self.assertEqual(parse_who(lab.http_get("client", lab["T1_IP4"]))["name"], "t1", i)
        self.assertEqual(t.stop(), 0)

    def test_a_lan_host_is_locked_out_too(self):
        lab = self.lab
        t = self.tprosshy(f"""
mode: gateway
gateway: {{interfaces: ["{lab['CLIENT_IF_LAN']}"]}}
""" + self.config())
        t.wait_ready()
        self.assertEqual(parse_who(lab.http_get("lan", lab["T1_IP4"]))["peer"],
                         lab["SRV1_NET_IP4"])
        self.kill(t)
        started = time.monotonic()
        self.assertIn("refused", lab.connect_error("lan", lab["T1_IP4"]) or "connected")
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(self.probe("udp", lab["T1_IP4"], role="lan")[0], "refused")

    def test_a_users_tprosshy_refuses_lockdown(self):
        user = LocalUser(self.lab, "lk")
        self.addCleanup(user.remove)
        path = user.write(".tprosshy.yaml", self.lab.subst(self.config()))
        r = self.lab.exec("client", user.argv([tprosshy_bin(), "-c", path]))
        self.assertEqual(r.returncode, 77, r.stdout + r.stderr)
        self.assertRegex(r.stderr, rf"{re.escape(str(path))}:2:\d+: lockdown: .*root tprosshy")
        self.assertEqual(self.lab.nft_tables(), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
