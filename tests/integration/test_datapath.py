"""The data path: each flow is handed to the profile's ssh master over a private Unix
socket; no tunnel listens on any TCP port, so no other local user can use one, and no
profile can be served by another profile's ssh."""
import os
import re
import stat
import time
import unittest

from lab import LabTestCase, parse_who

ONE = """
profiles:
  net1:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@", "@T1_NET6@"]
"""

# As an unprivileged local user: SOCKS5 CONNECT through every TCP listener of the
# namespace, then a connect to the master's control socket.
AS_NOBODY = r"""
import socket, struct, sys
target, ports, control = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
for port in filter(None, ports):
    try:
        s = socket.create_connection(("127.0.0.1", int(port)), 2)
        s.settimeout(2)
        s.sendall(b"\x05\x01\x00\x05\x01\x00\x01" + socket.inet_aton(target) + struct.pack(">H", 80))
        r = s.recv(12)
        if len(r) >= 2 and r[0] == 5 and r[1] == 0:
            print(f"socks:{port}")
    except OSError:
        pass
try:
    u = socket.socket(socket.AF_UNIX)
    u.connect(control)
    print("control:open")
except PermissionError:
    print("control:denied")
except OSError as e:
    print(f"control:{e.errno}")
"""


class DataPath(LabTestCase):
    def master(self, profile):
        """(pid, control path) of the ssh master serving `profile`."""
        for pid, _ in self.lab.procs("client", "ssh"):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode().split("\0")
            for a in args:
                m = re.fullmatch(r"ControlPath=(.*/" + profile + ")", a)
                if m:
                    return pid, m.group(1)
        return None, None

    def test_no_local_user_can_use_a_tunnel(self):
        lab = self.lab
        t = self.tprosshy(ONE)
        t.wait_ready()
        pid, control = self.master("net1")
        self.assertIsNotNone(pid, "no ssh master with a ControlPath")
        # ssh listens on no TCP port at all.
        listening = lab.exec("client", ["ss", "-Hltnp"], check=True).stdout
        self.assertNotIn('"ssh"', listening)
        # Its control socket sits in a directory only tprosshy's user (root) can open.
        d = os.stat(os.path.dirname(control))
        self.assertEqual(stat.S_IMODE(d.st_mode), 0o700)
        self.assertEqual(d.st_uid, os.geteuid())
        ports = sorted({ln.split()[3].rpartition(":")[2] for ln in listening.splitlines()})
        r = lab.exec("client", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "python3", "-c", AS_NOBODY, lab["T1_IP4"], ",".join(ports),
                                control], check=True)
        self.assertNotIn("socks:", r.stdout, f"a listener proxies for uid 65534: {r.stdout}")
        self.assertIn("control:denied", r.stdout)
        # What the ruleset routes works for every local user alike (that is the router's
        # job); only the routed destinations, and only through tprosshy's own listener.
        r = lab.exec("client", ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "curl", "-sS", "--max-time", "5", f"http://{lab['T1_IP4']}/who"])
        self.assertEqual(parse_who(r.stdout)["peer"], lab["SRV1_NET_IP4"], r.stderr)
        self.assertEqual(t.stop(), 0)
        # The master and its socket go with tprosshy.
        self.assertFalse(os.path.exists(os.path.dirname(control)))
        self.assertEqual(lab.count_procs("client", "ssh"), 0)

    def test_a_down_profile_is_never_served_by_another_ssh(self):
        # The old SOCKS design picked each tunnel's port by binding port 0 and closing it,
        # so two tunnels starting together could share one, and the down profile's flows
        # went through the other host. 50 starts, one host refusing at once.
        lab = self.lab
        cfg = """
profiles:
  wide:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: [198.19.0.0/16]
  narrow:
    host: srv2
    ssh_args: ["-F", "@SSH_CONFIG@", "-p", "2222"]
    subnets: ["@T2_NET4@"]
"""
        t2 = lab["T2_IP4"].replace(".", r"\.")
        for i in range(50):
            t = self.tprosshy(cfg, args=("-v",))
            t.wait_ready()
            self.assertIn("1/2 profiles up", t.log(), f"start {i}")
            self.assertNotRegex(t.log(), r"\[narrow\] tunnel up", f"start {i}")
            # narrow's subnet is reset, never carried by wide's ssh to srv1's side.
            self.assertEqual(lab.reset_probe("client", lab["T2_IP4"], "80"), "reset", f"start {i}")
            t.wait_log(rf"-> {t2}:80: no route or tunnel down, reset", 5)
            self.assertNotRegex(t.log(), rf"wide: \S+ -> {t2}:", f"start {i}")
            self.assertEqual(parse_who(lab.http_get("client", lab["T1_IP4"]))["peer"],
                             lab["SRV1_NET_IP4"])
            self.assertEqual(t.stop(), 0)


if __name__ == "__main__":
    unittest.main()
