"""Pinned host keys (a profile's host_keys) and `tprosshy keyscan`, against the lab's sshd:
the pinned keys alone decide, whatever the user's known_hosts say."""
import json
import re
import subprocess
import unittest
from pathlib import Path

import yaml

from lab import LabTestCase, parse_who, wait_until


def pub(path):
    """'type base64' of a .pub file."""
    return " ".join(Path(path).read_text().split()[:2])


def fingerprint(path):
    out = subprocess.run(["ssh-keygen", "-lf", path], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[1]


class HostKeys(LabTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        lab = cls.lab
        text = Path(lab.ssh_config).read_text()
        # A user who has never connected: no known_hosts at all, strict checking.
        cls.untrusting = lab.write_file(
            "ssh_config.untrusting",
            text.replace(f"UserKnownHostsFile {lab['KNOWN_HOSTS']}", "UserKnownHostsFile /dev/null"))
        assert "UserKnownHostsFile /dev/null" in cls.untrusting.read_text()
        # srv1 again, but only through srv2: ssh-keyscan cannot get there.
        cls.jump = lab.write_file(
            "ssh_config.jump", "Host behind\n  HostName 198.18.1.2\n  ProxyJump srv2\n\n" + text)
        cls.srv1 = pub(lab["SRV1_HOST_PUB"])
        cls.srv2 = pub(lab["SRV2_HOST_PUB"])

    def profile_status(self, t, name):
        r = t.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return next(p for p in json.loads(r.stdout)["profiles"] if p["name"] == name)

    def who(self, ip):
        return parse_who(self.lab.http_get("client", ip))

    def test_keyscan_prints_each_profiles_keys_and_names_a_host_it_cannot_reach(self):
        lab = self.lab
        config = lab.write_file("keyscan.yaml", f"""
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "{lab.ssh_config}"]
    subnets: ["{lab['T1_NET4']}"]
  net2:
    host: [srv2, srv1]
    ssh_args: ["-F", "{lab.ssh_config}"]
    subnets: ["{lab['T2_NET4']}"]
  hidden:
    host: behind
    ssh_args: ["-F", "{self.jump}"]
    subnets: ["198.18.200.0/24"]
""")
        r = lab.exec("client", [lab_bin(), "keyscan", "-c", config], timeout=60)
        self.assertEqual(r.returncode, 69, r.stdout + r.stderr)  # EX_UNAVAILABLE: one missing
        out = yaml.safe_load(r.stdout)["profiles"]
        self.assertEqual(out["net1"]["host_keys"], [self.srv1])
        self.assertEqual(out["net2"]["host_keys"], [self.srv2, self.srv1])
        self.assertIsNone(out["hidden"]["host_keys"])  # nothing but a comment
        self.assertRegex(r.stdout, r"# behind is reached through ProxyJump srv2, which "
                                   r"ssh-keyscan cannot go through")
        self.assertIn("# srv1 (198.18.1.2:22)", r.stdout)

        # Only the profiles named; all of them reachable, so success.
        r = lab.exec("client", [lab_bin(), "keyscan", "-c", config, "net1"], timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(yaml.safe_load(r.stdout), {"profiles": {"net1": {"host_keys": [self.srv1]}}})

        r = lab.exec("client", [lab_bin(), "keyscan", "-c", config, "nope"], timeout=60)
        self.assertEqual(r.returncode, 64, r.stdout + r.stderr)
        self.assertIn("no profile named 'nope'", r.stderr)

    def test_pinned_keys_verify_a_server_the_user_has_never_seen(self):
        lab = self.lab
        t = self.tprosshy(f"""
profiles:
  net1:
    host: srv1
    host_keys: ["{self.srv1}", "srv-other,198.18.9.9 {self.srv2}"]
    ssh_args: ["-F", "{self.untrusting}"]
    subnets: ["@T1_NET4@"]
  net2:
    host: srv2
    ssh_args: ["-F", "{self.untrusting}"]
    subnets: ["@T2_NET4@"]
""")
        t.wait_ready()
        wait_until(lambda: self.profile_status(t, "net1")["state"] == "up", 20, interval=0.2,
                   what="net1 up")
        self.assertEqual(self.who(lab["T1_IP4"])["peer"], lab["SRV1_NET_IP4"])
        # The same user files without pinned keys: strict checking refuses the server.
        wait_until(lambda: "Host key verification failed" in
                   (self.profile_status(t, "net2")["last_error"] or ""), 20, interval=0.2,
                   what="net2 refused")
        self.assertNotEqual(self.profile_status(t, "net2")["state"], "up")
        # The private known_hosts is tprosshy's alone.
        files = lab.exec("client", ["sh", "-c", f"stat -c '%a %n' {lab.tmp}/tprosshy.*/*.known_hosts"])
        self.assertRegex(files.stdout, rf"^600 {re.escape(str(lab.tmp))}/tprosshy\.\w+/net1\.known_hosts$")
        self.assertEqual(t.stop(), 0)

    def test_a_wrong_pinned_key_fails_the_profile_with_the_servers_fingerprint(self):
        lab = self.lab
        config = """
profiles:
  net1:
    host: srv1
    host_keys: ["{key}"]
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@"]
  net2:
    host: srv2
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T2_NET4@"]
"""
        # The user's known_hosts (the lab's) has srv1's real key; the pinned one is srv2's.
        t = self.tprosshy(config.format(key=self.srv2))
        t.wait_ready()
        want = f"(the server's key is {fingerprint(lab['SRV1_HOST_PUB'])})"
        wait_until(lambda: want in (self.profile_status(t, "net1")["last_error"] or ""), 20,
                   interval=0.2, what="net1 failed with the fingerprint")
        st = self.profile_status(t, "net1")
        self.assertIn("Host key verification failed", st["last_error"])
        self.assertNotEqual(st["state"], "up")
        self.assertIn(want, t.log())
        # Its flows are refused, not carried; the other profile is untouched.
        self.assertEqual(lab.reset_probe("client", lab["T1_IP4"], "80"), "reset")
        wait_until(lambda: self.profile_status(t, "net2")["state"] == "up", 20, interval=0.2,
                   what="net2 up")
        self.assertEqual(self.who(lab["T2_IP4"])["peer"], lab["SRV2_NET_IP4"])

        # The right key, by reload: the profile's ssh is restarted with it.
        t.write_config(config.format(key=self.srv1))
        r = t.ctl("reload")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_until(lambda: self.profile_status(t, "net1")["state"] == "up", 20, interval=0.2,
                   what="net1 up after reload")
        self.assertEqual(self.who(lab["T1_IP4"])["peer"], lab["SRV1_NET_IP4"])
        self.assertEqual(t.stop(), 0)

    def test_a_bad_entry_is_named_at_its_line_and_column(self):
        lab = self.lab
        config = lab.write_file("bad-keys.yaml", f"""profiles:
  net1:
    host: srv1
    host_keys:
      - "{self.srv1}"
      - "ssh-ed25519 not*base64"
    subnets: ["198.18.100.0/24"]
""")
        r = lab.exec("client", [lab_bin(), "check", "-c", config])
        self.assertEqual(r.returncode, 78, r.stdout + r.stderr)  # EX_CONFIG
        self.assertRegex(r.stderr, rf"{re.escape(str(config))}:6:9: .*host_keys\[1\].*not base64")


    def test_host_keys_are_always_checked(self):
        """Checking turned off, in ssh_args or in the ssh config, fails check and the profile;
        pinned keys make the ssh config's setting moot; accept-new passes with a warning."""
        lab = self.lab
        text = Path(lab.ssh_config).read_text()
        self.assertIn("StrictHostKeyChecking yes", text)
        careless = lab.write_file("ssh_config.careless",
                                  text.replace("StrictHostKeyChecking yes", "StrictHostKeyChecking no"))
        trusting = lab.write_file("ssh_config.accept-new", text.replace(
            "StrictHostKeyChecking yes", "StrictHostKeyChecking accept-new"))

        def config(name, ssh_config, extra="", args=""):
            return lab.write_file(name, f"""profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "{ssh_config}"{args}]
    subnets: ["{lab['T1_NET4']}"]
{extra}""")
        # In ssh_args: refused where it is written.
        bad = config("strict-args.yaml", lab.ssh_config,
                     args=', "-o", "StrictHostKeyChecking=no"')
        r = lab.exec("client", [lab_bin(), "check", "-c", bad])
        self.assertEqual(r.returncode, 78, r.stdout + r.stderr)
        self.assertRegex(r.stderr, rf"{re.escape(str(bad))}:4:\d+: .*StrictHostKeyChecking=no' "
                                   r"turns host-key checking off.*host_keys")
        # In the ssh config, as `ssh -G` reports it.
        r = lab.exec("client", [lab_bin(), "check", "-c", config("strict-g.yaml", careless)],
                     timeout=60)
        self.assertEqual(r.returncode, 78, r.stdout + r.stderr)
        self.assertIn("profile net1: ssh's settings for srv1 turn host-key checking off", r.stderr)
        # ... and a run never brings that profile up.
        t = self.tprosshy(config("strict-run.yaml", careless).read_text())
        self.assertEqual(t.wait_exit(60), 69, t.log())
        self.assertIn("turn host-key checking off", t.log())
        self.assertEqual(lab.count_procs("client", "ssh"), 0)
        # Pinned keys: tprosshy checks them itself, strictly.
        pinned = config("strict-pinned.yaml", careless,
                        extra=f'    host_keys: ["{self.srv1}"]\n')
        r = lab.exec("client", [lab_bin(), "check", "-c", pinned], timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # accept-new: allowed, with a warning.
        r = lab.exec("client", [lab_bin(), "check", "-c", config("accept-new.yaml", trusting)],
                     timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("warning: profile net1: ssh's settings for srv1 accept a server's key "
                      "unseen", r.stderr)

def lab_bin():
    from lab import tprosshy_bin
    return tprosshy_bin()


if __name__ == "__main__":
    unittest.main()
