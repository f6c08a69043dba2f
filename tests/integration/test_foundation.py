"""One profile end to end: transparent TCP through a real sshd, lifecycle, failures."""
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import unittest
from pathlib import Path

from lab import LabTestCase, LabError, parse_who, stream_bytes, stream_sha256, tprosshy_bin, wait_until

ONE = """
listen: {tcp_port: @PORT@}
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@", "@T1_NET6@"]
"""
PORT = "12345"


class Foundation(LabTestCase):
    def tprosshy(self, config=ONE, **kw):
        return super().tprosshy(config.replace("@PORT@", PORT), **kw)

    def start(self, config=ONE):
        t = self.tprosshy(config)
        t.wait_ready(30)
        return t

    def public_config(self, config=ONE):
        """The config and the lab's ssh config in a directory anyone may read, for runs
        without root."""
        d = Path(tempfile.mkdtemp(prefix="tprosshy-test-"))
        self.addCleanup(shutil.rmtree, d, True)
        d.chmod(0o755)
        ssh = d / "ssh_config"
        ssh.write_text(Path(self.lab.ssh_config).read_text())
        cfg = d / "tprosshy.yaml"
        cfg.write_text(self.lab.subst(config.replace("@PORT@", PORT)
                                      .replace("@SSH_CONFIG@", str(ssh))))
        for f in (ssh, cfg):
            f.chmod(0o644)
        return cfg

    def ssh_count(self):
        return self.lab.count_procs("client", "ssh")

    def assert_clean(self):
        wait_until(lambda: self.lab.nft_table() is None, 5, what="table removed")
        wait_until(lambda: self.ssh_count() == 0, 5, what="no ssh left")

    def test_routes_only_while_running(self):
        lab = self.lab
        self.assertIsNotNone(lab.connect_error("client", lab["T1_IP4"], timeout=1))
        t = self.start()
        who = parse_who(lab.http_get("client", lab["T1_IP4"]))
        self.assertEqual(who["name"], "t1")
        self.assertEqual(who["peer"], lab["SRV1_NET_IP4"])  # carried by srv1's sshd
        who6 = parse_who(lab.http_get("client", lab["T1_IP6"]))
        self.assertEqual(who6["peer"], lab["SRV1_NET_IP6"])
        # Not routed: srv2's network stays unreachable.
        self.assertIsNotNone(lab.connect_error("client", lab["T2_IP4"], timeout=1))
        table = lab.nft_table()
        self.assertIn("flags owner", table)
        self.assertIn(f'ip daddr {lab["SRV1_IP4"]} tcp dport 22 return', table)
        self.assertEqual(t.stop(signal.SIGINT), 0)
        self.assert_clean()
        self.assertIsNotNone(lab.connect_error("client", lab["T1_IP4"], timeout=1))

    def test_bulk_256mib_both_ways(self):
        lab = self.lab
        n = 256 << 20
        t = self.start()
        status, body = lab.http("client", lab["T1_IP4"], f"/bytes/{n}", timeout=120)
        self.assertEqual(status, 200)
        self.assertEqual(len(body), n)
        self.assertEqual(hashlib.sha256(body).hexdigest(), stream_sha256(n))
        del body
        status, body = lab.http("client", lab["T1_IP4"], "/sha256", method="POST",
                                body=stream_bytes(n), timeout=120)
        self.assertEqual(status, 200)
        digest, count = body.decode().split()
        self.assertEqual((digest, int(count)), (stream_sha256(n), n))
        self.assertEqual(t.stop(), 0)

    def test_each_signal_leaves_nothing(self):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            with self.subTest(sig=sig.name):
                t = self.start()
                self.assertIsNotNone(self.lab.nft_table())
                self.assertEqual(self.ssh_count(), 1)
                rc = t.stop(sig)
                self.assertEqual(rc, -signal.SIGKILL if sig == signal.SIGKILL else 0)
                self.assert_clean()

    def test_direct_connection_is_refused(self):
        lab = self.lab
        self.start()
        probe = lab.reset_probe("client", "127.0.0.1", PORT)
        self.assertEqual(probe, "reset")

    def test_unreachable_host_exits_69_and_installs_nothing(self):
        t = self.tprosshy(ONE.replace("host: srv1", "host: unreachable"))
        self.assertEqual(t.wait_exit(30), 69)
        log = t.log()
        self.assertIn("unreachable", log)
        self.assertRegex(log, r"ssh: .*(timed out|No route|refused|unreachable)")
        self.assertIsNone(self.lab.nft_table())
        self.assertEqual(self.ssh_count(), 0)

    def test_unresolvable_host_exits_69(self):
        t = self.tprosshy(ONE.replace("host: srv1", "host: nosuch.invalid"))
        self.assertEqual(t.wait_exit(30), 69)
        self.assertIn("nosuch.invalid", t.log())
        self.assertIsNone(self.lab.nft_table())

    def test_bad_config_exits_78_with_position(self):
        t = self.tprosshy(ONE.replace("subnets:", "subnet:"))
        self.assertEqual(t.wait_exit(10), 78)
        self.assertRegex(t.log(), r"tprosshy-\d+\.yaml:\d+:\d+: .*subnet")
        self.assertIsNone(self.lab.nft_table())
        self.assertEqual(self.ssh_count(), 0)

    def test_missing_config_exits_66(self):
        r = self.lab.exec("client", [tprosshy_bin(), "-c", "/nonexistent/tprosshy.yaml"])
        self.assertEqual(r.returncode, 66, r.stderr)
        self.assertIn("/nonexistent/tprosshy.yaml", r.stderr)

    def test_a_user_without_a_helper_exits_77_saying_both_ways(self):
        cfg = self.public_config("helper: /nonexistent/helper.sock\n" + ONE)
        r = self.lab.exec("client", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                     tprosshy_bin(), "-c", str(cfg)])
        self.assertEqual(r.returncode, 77, r.stderr)
        self.assertIn("/nonexistent/helper.sock", r.stderr)
        self.assertIn("tprosshy-helper.socket", r.stderr)
        self.assertIn("tprosshy helper --sudoers", r.stderr)
        self.assertIsNone(self.lab.nft_table())
        self.assertEqual(self.ssh_count(), 0)

    def test_check_prints_the_ruleset_without_root(self):
        cfg = self.public_config()
        r = self.lab.exec("client", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                     tprosshy_bin(), "check", "-c", str(cfg)])
        self.assertEqual(r.returncode, 0, r.stderr)
        expected = (Path(__file__).parent / "data" / "check_one_profile.nft").read_text()
        self.assertEqual(r.stdout, expected)
        self.assertIsNone(self.lab.nft_table())


if __name__ == "__main__":
    unittest.main(verbosity=2)
