"""Proves the namespace lab itself: isolation, real sshd with strict host keys, SOCKS
through ssh, the target servers, dnsmasq, and a teardown that leaves nothing behind."""

import hashlib
import os
import signal
import subprocess
import time
import unittest
from pathlib import Path

from lab import Lab, LabError, parse_who, stream_bytes, stream_sha256, _base36


class LabTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        try:
            cls.lab.up()
        except BaseException:
            cls.lab.down()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.lab.down()

    def test_targets_unreachable_without_tunnel(self):
        lab = self.lab
        for role in ("client", "lan"):
            for key in ("T1_IP4", "T2_IP4", "T1_IP6", "T2_IP6", "T1_OUTSIDE_IP4"):
                start = time.monotonic()
                err = lab.connect_error(role, lab[key], 80, timeout=1)
                self.assertIsNotNone(err, f"{role} reached {key} without a tunnel")
                self.assertLess(time.monotonic() - start, 10)

    def test_servers_reach_their_own_targets_only(self):
        lab = self.lab
        who = parse_who(lab.http_get("srv1", lab["T1_IP4"]))
        self.assertEqual(who["name"], "t1")
        self.assertEqual(who["peer"], lab["SRV1_NET_IP4"])
        self.assertEqual(who["local"], lab["T1_IP4"])
        who = parse_who(lab.http_get("srv2", lab["T2_IP6"]))
        self.assertEqual((who["name"], who["peer"]), ("t2", lab["SRV2_NET_IP6"]))
        who = parse_who(lab.http_get("srv1", lab["T1_OUTSIDE_IP4"]))
        self.assertEqual((who["name"], who["local"]), ("t1", lab["T1_OUTSIDE_IP4"]))
        self.assertIsNotNone(lab.connect_error("srv1", lab["T2_IP4"], 80, timeout=1))

    def test_socks_through_ssh_reaches_each_target(self):
        lab = self.lab
        p1 = lab.ssh_socks("srv1", 1080)
        p2 = lab.ssh_socks("srv2-v6", 1081)
        cases = [("127.0.0.1:1080", "T1_IP4", "t1", "SRV1_NET_IP4"),
                 ("127.0.0.1:1080", "T1_IP6", "t1", "SRV1_NET_IP6"),
                 ("127.0.0.1:1081", "T2_IP4", "t2", "SRV2_NET_IP4")]
        for socks, target, name, peer in cases:
            who = parse_who(lab.http_get("client", lab[target], socks=socks))
            self.assertEqual((who["name"], who["peer"]), (name, lab[peer]), target)
        # A client that is not ours agrees.
        r = lab.exec("client", ["curl", "-sS", "--max-time", "5", "--socks5", "127.0.0.1:1080",
                                f"http://{lab['T1_IP4']}/who"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(parse_who(r.stdout)["peer"], lab["SRV1_NET_IP4"])
        # Bulk both ways through the tunnel.
        n = 3 * (1 << 20) + 12345
        body = lab.http_get("client", lab["T1_IP4"], f"/bytes/{n}", socks="127.0.0.1:1080")
        self.assertEqual(len(body), n)
        self.assertEqual(body, stream_bytes(n))
        data = os.urandom(2 << 20)
        status, answer = lab.http("client", lab["T1_IP4"], "/sha256", method="POST", body=data,
                                  socks="127.0.0.1:1080")
        self.assertEqual(status, 200)
        self.assertEqual(answer.decode().split(), [hashlib.sha256(data).hexdigest(),
                                                   str(len(data))])
        for p in (p1, p2):
            p.terminate()
            p.wait(5)

    def test_stream_helpers_match_server(self):
        lab = self.lab
        n = (1 << 20) + 7
        status, body = lab.http("srv1", lab["T1_IP4"], f"/bytes/{n}")
        self.assertEqual(status, 200)
        self.assertEqual(hashlib.sha256(body).hexdigest(), stream_sha256(n))
        self.assertEqual(lab.http("srv1", lab["T1_IP4"], "/nothing")[0], 404)

    def test_strict_host_key_checking(self):
        lab = self.lab
        ok = lab.exec("client", ["ssh", "-F", lab.ssh_config, "srv1", "cat /etc/resolv.conf"],
                      timeout=20)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn(lab["T1_DNS"], ok.stdout)  # the remote resolv.conf names its dnsmasq
        ok6 = lab.exec("client", ["ssh", "-F", lab.ssh_config, "srv2-v6", "true"], timeout=20)
        self.assertEqual(ok6.returncode, 0, ok6.stderr)
        # srv2's key filed under srv1's addresses: a changed host key must be refused.
        srv2_key = " ".join(Path(lab["SRV2_HOST_PUB"]).read_text().split()[:2])
        wrong = lab.write_file("wrong_known_hosts",
                               f"{lab['SRV1_IP4']},{lab['SRV1_IP6']} {srv2_key}\n")
        empty = lab.write_file("empty_known_hosts", "")
        for kh in (wrong, empty):
            r = lab.exec("client", ["ssh", "-F", lab.ssh_config, "-o",
                                    f"UserKnownHostsFile={kh}", "-o", "LogLevel=ERROR",
                                    "srv1", "true"], timeout=20)
            self.assertEqual(r.returncode, 255, f"{kh}: {r.stderr}")
            self.assertIn("Host key verification failed", r.stderr)

    def test_unreachable_host_fails_fast(self):
        start = time.monotonic()
        r = self.lab.exec("client", ["ssh", "-F", self.lab.ssh_config, "unreachable", "true"],
                          timeout=20)
        self.assertEqual(r.returncode, 255)
        self.assertLess(time.monotonic() - start, 8)

    def test_dns(self):
        lab = self.lab
        # srv1's default resolver (/etc/netns) is t1's dnsmasq.
        self.assertEqual(lab.dig("srv1", lab["T1_NAME"]), ("NOERROR", [lab["T1_IP4"]]))
        self.assertEqual(lab.dig("srv1", lab["T1_NAME"], "AAAA"), ("NOERROR", [lab["T1_IP6"]]))
        self.assertEqual(lab.dig("srv1", lab["T1_NAME"], tcp=True), ("NOERROR", [lab["T1_IP4"]]))
        self.assertEqual(lab.dig("srv1", lab["T1_OUTSIDE_NAME"]),
                         ("NOERROR", [lab["T1_OUTSIDE_IP4"]]))
        self.assertEqual(lab.dig("srv1", lab["T1_NX_NAME"])[0], "NXDOMAIN")
        self.assertEqual(lab.dig("srv2", lab["T2_NAME"]), ("NOERROR", [lab["T2_IP4"]]))
        self.assertEqual(lab.dig("srv2", lab["T1_NAME"])[1], [])  # each its own network
        r = lab.exec("srv1", ["dig", "+noall", "+answer", lab["T1_NAME"]])
        self.assertEqual(int(r.stdout.split()[1]), int(lab["DNS_TTL"]))
        # The client's and the LAN host's resolver is the client's local dnsmasq.
        self.assertEqual(lab.dig("client", lab["LOCAL_NAME"]), ("NOERROR", [lab["LOCAL_NAME_IP4"]]))
        self.assertEqual(lab.dig("lan", lab["LOCAL_NAME"]), ("NOERROR", [lab["LOCAL_NAME_IP4"]]))
        # Target names are not resolvable from the client without a tunnel.
        self.assertNotEqual(lab.dig("client", lab["T1_NAME"])[1], [lab["T1_IP4"]])

    def test_lan_routes_via_client(self):
        lab = self.lab
        r = lab.exec("lan", ["ip", "route", "get", lab["T1_IP4"]], check=True)
        self.assertIn(f"via {lab['CLIENT_LAN_IP4']}", r.stdout)
        r = lab.exec("lan", ["ip", "-6", "route", "get", lab["T1_IP6"]], check=True)
        self.assertIn(f"via {lab['CLIENT_LAN_IP6']}", r.stdout)
        fwd = lab.exec("client", ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()
        self.assertEqual(fwd, "1")
        fwd = lab.exec("srv1", ["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()
        self.assertEqual(fwd, "0")

    def test_tprosshy_runner_with_stand_in(self):
        lab = self.lab
        fake = lab.write_file("fake-tprosshy", "#!/bin/sh\n"
                              "trap 'echo bye; exit 3' INT\n"
                              "echo \"config $2\"; echo 'tunnel x not ready'; sleep 0.3\n"
                              "echo 'ready'\n"
                              "while :; do sleep 0.05; done\n")
        fake.chmod(0o755)
        t = lab.tprosshy("profiles: {x: {host: srv1, ssh_args: ['-F', '@SSH_CONFIG@']}}\n",
                         binary=str(fake))
        self.assertIn(lab.ssh_config, t.config_path.read_text())
        start = time.monotonic()
        t.wait_ready(10)
        self.assertGreater(time.monotonic() - start, 0.25)  # "not ready" did not count
        net = os.readlink(f"/proc/{t.pid}/ns/net")
        self.assertEqual(net, os.readlink(f"/proc/{lab.procs('client', 'dnsmasq')[0][0]}/ns/net"))
        self.assertEqual(t.stop(signal.SIGINT), 3)
        self.assertIn("bye", t.log())
        self.assertIn(str(t.config_path), t.log())
        dead = lab.tprosshy("", binary="/bin/false")
        with self.assertRaises(LabError):
            dead.wait_ready(5)


class TeardownTest(unittest.TestCase):
    def test_down_leaves_nothing(self):
        lab = Lab(name="q" + _base36(os.getpid())[-5:])
        try:
            lab.up()
            spaces = [lab.ns(r) for r in ("client", "srv1", "srv2", "t1", "t2", "lan")]
            pids = [p for r in ("client", "srv1", "srv2", "t1", "t2") for p, _ in lab.procs(r)]
            self.assertGreaterEqual(len(pids), 7)  # 3 dnsmasq, 2 sshd, 2 target servers
            # Something neither the script nor Lab started lives in a namespace too.
            stray = subprocess.Popen(lab.argv("srv1", ["sleep", "300"]),
                                     start_new_session=True)
            state = lab.state
        finally:
            lab.down()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for ns in spaces:
            self.assertNotIn(ns, listed)
            self.assertFalse(Path("/etc/netns", ns).exists())
        self.assertEqual(stray.wait(5), -signal.SIGTERM)  # killed by lab down
        for pid in pids + [stray.pid]:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            self.assertEqual(stat, "Z", f"pid {pid} still running")
        self.assertFalse(state.exists())
        # A second down is harmless.
        r = subprocess.run(["bash", str(lab_script()), "down", lab.name], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)


def lab_script():
    from lab import LAB_SCRIPT
    return LAB_SCRIPT


if __name__ == "__main__":
    unittest.main(verbosity=2)
