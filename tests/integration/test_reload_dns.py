"""DNS across reloads: every reload keeps the DNS capture rules and the DNS port, each
profile's names keep going to that profile's nameserver, and none reaches the machine's own
resolver (the lab's client dnsmasq logs every query it gets)."""
import json
import random
import re
import signal
import subprocess
import time
import unittest

from lab import LabError, LabTestCase, wait_until

PROFILE = {
    "a": """
  a:
    host: srv1
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T1_NET4@"]
    dns: {domains: ["@T1_DOMAIN@"]}
""",
    "b": """
  b:
    host: srv2
    ssh_args: ["-F", "@SSH_CONFIG@"]
    subnets: ["@T2_NET4@"]
    dns: {domains: ["@T2_DOMAIN@"]}
""",
}
DOMAIN = {"a": "T1_DOMAIN", "b": "T2_DOMAIN"}
NAMESERVER_LOG = {"a": "t1.dnsmasq.log", "b": "t2.dnsmasq.log"}
LOCAL_LOG = "client.dnsmasq.log"

# Queries every name of a list at once over one UDP socket, each with its own ID, and
# prints {name: rcode name or "timeout"} as JSON. The deadline is longer than tprosshy's
# SERVFAIL timeout, so every query should get an answer.
BURST = r"""
import json, socket, struct, sys, time
server, names = sys.argv[1], sys.argv[2].split(",")
RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}
def query(qid, name):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
for i, n in enumerate(names):
    s.sendto(query(i, n), (server, 53))
got = {}
deadline = time.monotonic() + 20
while len(got) < len(names) and time.monotonic() < deadline:
    s.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        data = s.recv(4096)
    except socket.timeout:
        break
    qid = struct.unpack("!H", data[:2])[0]
    if qid < len(names):
        got[names[qid]] = RCODES.get(data[3] & 0xF, str(data[3] & 0xF))
print(json.dumps({n: got.get(n, "timeout") for n in names}))
"""


class ReloadDns(LabTestCase):
    def config(self, order, dns_port=None):
        head = f"listen: {{dns_port: {dns_port}}}\n" if dns_port else ""
        return head + "profiles:" + "".join(PROFILE[p] for p in order)

    def log_text(self, name):
        try:
            return (self.lab.state / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def fresh(self, profile, tag):
        return f"{tag}-{random.randrange(1 << 40):x}.{self.lab[DOMAIN[profile]]}"

    def status(self, t):
        r = t.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def capture(self, t):
        """The DNS capture rules in the kernel, and the DNS port status reports."""
        table = self.lab.nft_table() or ""
        rules = sorted(ln.strip() for ln in table.splitlines()
                       if re.search(r"dport 53 .*redirect", ln))
        st = self.status(t)["dns_capture"]
        return rules, st

    def reload(self, t, text, how="signal"):
        before = len(re.findall(r"reload of \S+: ", t.log()))
        t.write_config(text)
        if how == "signal":
            t.send_signal(signal.SIGHUP)
        else:
            r = t.ctl("reload")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_until(lambda: len(re.findall(r"reload of \S+(: | refused)", t.log())) > before, 30,
                   interval=0.01, what="reload outcome")
        self.assertEqual(len(re.findall(r"reload of \S+: ", t.log())), before + 1, t.log())

    def wait_up(self, t, names):
        def up():
            st = {p["name"]: p["state"] for p in self.status(t)["profiles"]}
            return all(st.get(n) == "up" for n in names)
        wait_until(up, 60, interval=0.1, what=f"profiles {names} up")

    def answered_by(self, profile, tag):
        """A fresh name under the profile's domain: its nameserver answers (NXDOMAIN: it is
        authoritative for the domain), and it is in that nameserver's log and no other. A
        SERVFAIL (the profile's nameserver is still being read) is asked again with another
        name; the local resolver's REFUSED fails at once."""
        deadline = time.monotonic() + 30
        while True:
            name = self.fresh(profile, tag)
            try:
                rcode, _ = self.lab.dig("client", name, server=self.lab["CLIENT_DNS"], timeout=8)
            except LabError:  # no answer in 8 s on a busy machine: a SERVFAIL's due by then
                rcode = "no answer"
            if rcode not in ("SERVFAIL", "no answer") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(rcode, "NXDOMAIN", f"{name}: {rcode}")
        wait_until(lambda: name in self.log_text(NAMESERVER_LOG[profile]), 5,
                   what=f"{name} in {profile}'s nameserver log")
        for other, log in NAMESERVER_LOG.items():
            if other != profile:
                self.assertNotIn(name, self.log_text(log))
        self.assertNotIn(name, self.log_text(LOCAL_LOG))
        return name

    def goes_local(self, profile, tag):
        """A name under a profile's domain that no running profile takes: the local
        resolver gets it."""
        name = self.fresh(profile, tag)
        rcode, _ = self.lab.dig("client", name, server=self.lab["CLIENT_DNS"], timeout=4)
        self.assertEqual(rcode, "REFUSED", name)  # the lab's local dnsmasq knows no such zone
        wait_until(lambda: name in self.log_text(LOCAL_LOG), 5, what=f"{name} in the local log")
        for log in NAMESERVER_LOG.values():
            self.assertNotIn(name, self.log_text(log))

    def unchanged_file(self, dns_port):
        lab = self.lab
        text = self.config("ab", dns_port)
        t = self.tprosshy(text)
        t.wait_ready()
        rules, st = self.capture(t)
        self.assertEqual(len(rules), 2, lab.nft_table())  # udp and tcp to the one resolver
        self.assertTrue(st["installed"], st)
        self.assertEqual(st["resolvers"], [lab["CLIENT_DNS"]])
        if dns_port:
            self.assertEqual(st["port"], dns_port)
        self.assertIn(f"redirect to :{st['port']}", rules[0])
        cached = lab.dig("client", lab["T1_NAME"], server=lab["CLIENT_DNS"])
        self.assertEqual(cached, ("NOERROR", [lab["T1_IP4"]]))
        for k in range(10):
            self.reload(t, text)
            self.assertEqual(self.capture(t), (rules, st), f"after reload {k + 1}")
            for p in "ab":
                self.answered_by(p, f"u{k}")
            self.assertEqual(lab.dig("client", lab["T1_NAME"], server=lab["CLIENT_DNS"]), cached)
        self.assertIn("DNS on port", t.log())
        self.assertEqual(t.stop(), 0)

    def test_unchanged_file_keeps_capture_with_any_port(self):
        self.unchanged_file(None)

    def test_unchanged_file_keeps_capture_with_a_fixed_port(self):
        self.unchanged_file(5354)

    def test_reorder_add_and_remove_profiles(self):
        lab = self.lab
        t = self.tprosshy(self.config("ab"))
        t.wait_ready()
        rules, st = self.capture(t)
        self.assertTrue(st["installed"], st)
        cached = {p: lab.dig("client", lab[f"T{n}_NAME"], server=lab["CLIENT_DNS"])
                  for p, n in (("a", 1), ("b", 2))}
        self.assertEqual(cached["a"], ("NOERROR", [lab["T1_IP4"]]))
        self.assertEqual(cached["b"], ("NOERROR", [lab["T2_IP4"]]))
        for k, order in enumerate(["ba", "a", "ab", "b", "ba", "ab", "a", "b", "ab", "ba"]):
            self.reload(t, self.config(order))
            self.wait_up(t, list(order))
            got_rules, got_st = self.capture(t)
            self.assertEqual((got_rules, got_st), (rules, st), f"after reload {k + 1} ({order})")
            for p in "ab":
                if p in order:
                    self.answered_by(p, f"r{k}")
                else:
                    self.goes_local(p, f"r{k}")
            # Cached answers: a kept profile's still answer; a removed one's name is the
            # local resolver's now.
            for p, n in (("a", 1), ("b", 2)):
                got = lab.dig("client", lab[f"T{n}_NAME"], server=lab["CLIENT_DNS"])
                self.assertEqual(got, cached[p] if p in order else ("REFUSED", []),
                                 f"after reload {k + 1} ({order}): {p}")
        self.assertEqual(t.stop(), 0)

    def test_reload_verb_during_a_burst_of_uncached_queries(self):
        lab = self.lab
        t = self.tprosshy(self.config("ab"))
        t.wait_ready()
        rules, st = self.capture(t)
        names = [self.fresh("ab"[i % 2], f"burst{i}") for i in range(1000)]
        burst = lab.popen("client", ["python3", "-c", BURST, lab["CLIENT_DNS"], ",".join(names)],
                          stdout=subprocess.PIPE, text=True)
        # The reload lands while the burst is being answered.
        wait_until(lambda: "burst" in self.log_text(NAMESERVER_LOG["a"]), 20, interval=0.005,
                   what="the burst under way")
        self.reload(t, self.config("ba"), how="verb")
        out, _ = burst.communicate(timeout=60)
        got = json.loads(out)
        by_rcode = {}
        for rc in got.values():
            by_rcode[rc] = by_rcode.get(rc, 0) + 1
        print(f"burst of 1000 across a reload: {sorted(by_rcode.items())}", flush=True)
        self.assertEqual(set(by_rcode) - {"NXDOMAIN", "SERVFAIL"}, set(), by_rcode)
        self.assertGreater(by_rcode.get("NXDOMAIN", 0), 900, by_rcode)
        local = self.log_text(LOCAL_LOG)
        logs = {p: self.log_text(f) for p, f in NAMESERVER_LOG.items()}
        for i, n in enumerate(names):
            own, other = ("a", "b") if i % 2 == 0 else ("b", "a")
            self.assertNotIn(n, local)
            self.assertNotIn(n, logs[other])
            if got[n] == "NXDOMAIN":
                self.assertIn(n, logs[own])
        self.assertEqual(self.capture(t), (rules, st))
        self.assertEqual(t.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
