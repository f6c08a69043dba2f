"""The namespace lab (tests/lab/lab) and a tprosshy runner for integration tests.

Standard library only. Typical use:

    with Lab() as lab:                       # skips (unittest.SkipTest) unless root
        t = lab.tprosshy('''
    profiles:
      net1: {host: srv1, ssh_args: ["-F", "@SSH_CONFIG@"], subnets: ["@T1_NET4@"]}
    ''')
        t.wait_ready()
        who = parse_who(lab.http_get("client", lab["T1_IP4"]))
        assert who["peer"] == lab["SRV1_NET_IP4"]
        assert t.stop() == 0

Every key of the lab's env file (see tests/lab/lab, write_env) is `lab[KEY]`, and
`@KEY@` in config text is replaced by its value. Roles: client srv1 srv2 t1 t2 lan.
"""

import atexit
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
import unittest
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("TPROSSHY_SOURCE_DIR", Path(__file__).resolve().parents[2]))
LAB_SCRIPT = SOURCE_DIR / "tests" / "lab" / "lab"
CLIENT_PY = SOURCE_DIR / "tests" / "lab" / "client.py"
FLOWS_PY = SOURCE_DIR / "tests" / "lab" / "flows.py"
PROBE_PY = SOURCE_DIR / "tests" / "lab" / "probe.py"
ROLES = ("client", "srv1", "srv2", "t1", "t2", "lan")


class LabError(Exception):
    pass


def tprosshy_bin():
    return os.environ.get("TPROSSHY_BIN", str(SOURCE_DIR / "build" / "tprosshy"))


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Polls pred() until it returns something truthy (returned) or timeout (TimeoutError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not met within {timeout}s")
        time.sleep(interval)


# The target server's deterministic stream (tests/lab/target.py: stream_block).
_SEED = b"tprosshy-lab"
_BLOCK_SIZE = 1 << 20
_block = None


def stream_bytes(n):
    """The first n bytes that GET /bytes/N answers with."""
    global _block
    if _block is None:
        _block = b"".join(hashlib.sha256(_SEED + i.to_bytes(8, "big")).digest()
                          for i in range(_BLOCK_SIZE // 32))
    whole, rest = divmod(n, _BLOCK_SIZE)
    return _block * whole + _block[:rest]


def stream_sha256(n):
    h = hashlib.sha256()
    stream_bytes(min(n, 1))  # builds the block
    whole, rest = divmod(n, _BLOCK_SIZE)
    for _ in range(whole):
        h.update(_block)
    h.update(_block[:rest])
    return h.hexdigest()


def _split_addr(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def parse_who(body):
    """b'name=t1 peer=198.19.1.1:40000 local=198.19.1.10:80\\n' -> dict with name, peer,
    peer_port, local, local_port (IPv6 addresses without brackets)."""
    if isinstance(body, bytes):
        body = body.decode()
    fields = dict(kv.split("=", 1) for kv in body.split())
    out = {"name": fields["name"]}
    for key in ("peer", "local"):
        if key in fields:
            out[key], out[key + "_port"] = _split_addr(fields[key])
    return out


def parse_http(raw):
    """Raw HTTP/1.0 response -> (status, body)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise LabError(f"malformed HTTP response: {raw[:200]!r}")
    return int(head.split(b" ", 2)[1]), body


_RESET_PROBE = r"""
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    s = socket.create_connection((host, port), timeout)
    s.sendall(b"GET /who HTTP/1.0\r\n\r\n")
    s.settimeout(timeout)
    print("data" if s.recv(100) else "closed")
except (ConnectionResetError, BrokenPipeError):
    print("reset")
"""


class Lab:
    """One lab: `with Lab() as lab:` or lab.up() ... lab.down(). Names must be unique among
    labs running at once; the default derives from the pid (parallel ctest runs)."""

    def __init__(self, name=None):
        self.name = name or "p" + _base36(os.getpid())
        self.env = {}
        self._procs = []
        self._runners = []
        self._files = 0
        self._is_up = False
        self._extra = {}

    # -- life cycle
    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("the lab needs root")
        if not LAB_SCRIPT.is_file():
            raise LabError(f"{LAB_SCRIPT} missing")
        atexit.register(self.down)
        self._is_up = True
        r = subprocess.run(["bash", str(LAB_SCRIPT), "up", self.name], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=90)
        if r.returncode != 0:
            raise LabError(f"lab up {self.name} failed ({r.returncode}):\n{r.stderr}")
        self.state = Path(r.stdout.strip().splitlines()[-1])
        self.tmp = self.state / "tmp"  # tprosshy's TMPDIR (its control sockets' directory)
        self.tmp.mkdir(mode=0o700, exist_ok=True)
        self.env = read_env(self.state / "env")
        return self

    def down(self):
        """Stops every runner and process this object started, then tears down the lab.
        Safe to call twice."""
        for t in self._runners:
            t.kill()
        for p in self._procs:
            _kill_popen(p)
        self._runners.clear()
        self._procs.clear()
        if not self._is_up:
            return
        self._is_up = False
        r = subprocess.run(["bash", str(LAB_SCRIPT), "down", self.name], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise LabError(f"lab down {self.name} failed: {r.stderr}")

    # -- addresses
    def __getitem__(self, key):
        return self.env[key]

    def ns(self, role):
        if role in self._extra:
            return self._extra[role]
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return self.env[f"NS_{role.upper()}"]

    def add_namespace(self, role):
        """A namespace of the test's own, tpl-NAME-ROLE (lo up), usable as a role like the
        lab's. `lab down` deletes it with the lab's own: every tpl-NAME-* namespace goes,
        and whatever runs in it is killed."""
        if role in ROLES or role in self._extra or not re.fullmatch(r"[a-z0-9]{1,8}", role):
            raise ValueError(f"bad or taken role name {role!r}")
        name = f"tpl-{self.name}-{role}"
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
        self._extra[role] = name
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        return name

    @property
    def ssh_config(self):
        return self.env["SSH_CONFIG"]

    def subst(self, text):
        """Replaces @KEY@ with the lab's value of KEY (unknown keys are an error)."""
        def one(m):
            if m.group(1) not in self.env:
                raise KeyError(f"unknown lab key @{m.group(1)}@")
            return self.env[m.group(1)]
        return re.sub(r"@([A-Z][A-Z0-9_]*)@", one, text)

    def write_file(self, name, text):
        path = self.state / name
        path.write_text(text)
        return path

    # -- running things in a namespace
    def argv(self, role, argv):
        return ["ip", "netns", "exec", self.ns(role), *map(str, argv)]

    def exec(self, role, argv, timeout=30, check=False, text=True, **kw):
        """subprocess.run in ROLE's namespace; output captured (text) unless told otherwise."""
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        return subprocess.run(self.argv(role, argv), timeout=timeout, check=check, text=text,
                              **kw)

    def popen(self, role, argv, **kw):
        """subprocess.Popen in ROLE's namespace, in its own session; killed by down()."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(self.argv(role, argv), **kw)
        self._procs.append(p)
        return p

    # -- probes
    def http(self, role, host, path="/who", port=80, method="GET", body=None, timeout=5,
             socks=None):
        """One HTTP/1.0 request from ROLE's namespace -> (status, body bytes). Raises LabError
        when the connection fails. socks="127.0.0.1:1080" goes through a SOCKS5 proxy."""
        argv = ["python3", CLIENT_PY, "http", host, port, method, path, "--timeout", timeout]
        if socks:
            argv += ["--socks", socks]
        r = self.exec(role, argv, timeout=timeout + 60, text=False,
                      input=body if body is not None else b"")
        if r.returncode != 0:
            raise LabError(f"http {method} {host}:{port}{path} from {role}: "
                           f"{r.stderr.decode(errors='replace').strip()}")
        return parse_http(r.stdout)

    def http_get(self, role, host, path="/who", port=80, timeout=5, socks=None):
        """Body of a 200 answer, else LabError."""
        status, body = self.http(role, host, path, port, timeout=timeout, socks=socks)
        if status != 200:
            raise LabError(f"GET {host}:{port}{path} from {role}: status {status}")
        return body

    def connect_error(self, role, host, port=80, timeout=2):
        """None when a TCP connection from ROLE opens, else the error text."""
        r = self.exec(role, ["python3", CLIENT_PY, "connect", host, port, "--timeout", timeout],
                      timeout=timeout + 30)
        return None if r.returncode == 0 else (r.stdout + r.stderr).strip()

    def open_flows(self, role, dl_ip, idle_ip, test=None):
        """Opens a slow download from DL_IP and an idle request to IDLE_IP (tests/lab/flows.py)
        and returns ends(timeout=10): {"download"|"idle": {"end": "reset"|"eof"|..., "t": unix
        time}} for those that ended in time. `test` (a TestCase) kills the program after it."""
        import json
        p = self.popen(role, ["python3", FLOWS_PY, dl_ip, idle_ip], stdout=subprocess.PIPE,
                       text=True)
        if test is not None:
            test.addCleanup(p.stdout.close)
            test.addCleanup(_kill_popen, p)
        line = p.stdout.readline()
        if "ready" not in line:
            raise LabError(f"flows from {role} to {dl_ip}, {idle_ip} did not open: {line!r}")

        def ends(timeout=10):
            out = {}
            deadline = time.monotonic() + timeout
            while len(out) < 2 and time.monotonic() < deadline:
                line = p.stdout.readline()
                if not line:
                    break
                r = json.loads(line)
                out[r["flow"]] = r
            return out
        return ends

    def reset_probe(self, role, host, port, timeout=3):
        """Connects from ROLE, sends a request and says what came back: 'reset' (also when
        the reset beats connect() on loopback), 'closed' or 'data'."""
        r = self.exec(role, ["python3", "-c", _RESET_PROBE, host, port, timeout],
                      timeout=timeout + 30)
        if r.returncode != 0:
            raise LabError(f"reset probe to {host}:{port} from {role}: {r.stderr.strip()}")
        return r.stdout.strip()

    def dig(self, role, name, rtype="A", server=None, tcp=False, timeout=2):
        """-> (rcode like 'NOERROR', [answer rdata of type rtype])."""
        argv = ["dig", "+noall", "+comments", "+answer", f"+time={timeout}", "+tries=1"]
        if tcp:
            argv.append("+tcp")
        if server:
            argv.append(f"@{server}")
        r = self.exec(role, argv + [name, rtype], timeout=timeout + 30)
        m = re.search(r"status: ([A-Z]+)", r.stdout)
        if not m:
            raise LabError(f"dig {name} from {role}: no answer\n{r.stdout}{r.stderr}")
        answers = [ln.split()[4] for ln in r.stdout.splitlines()
                   if ln and not ln.startswith(";") and len(ln.split()) >= 5
                   and ln.split()[3] == rtype]
        return m.group(1), answers

    def pids(self, role):
        """Every pid in ROLE's namespace."""
        r = subprocess.run(["ip", "netns", "pids", self.ns(role)], capture_output=True,
                           text=True, timeout=10)
        return [int(p) for p in r.stdout.split()]

    def procs(self, role, comm=None):
        """[(pid, comm)] of live processes in ROLE's namespace, optionally by command name."""
        out = []
        for pid in self.pids(role):
            try:
                c = Path(f"/proc/{pid}/comm").read_text().strip()
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if state != "Z" and (comm is None or c == comm):
                out.append((pid, c))
        return out

    def count_procs(self, role, comm):
        return len(self.procs(role, comm))

    def nft_tables(self, role="client"):
        """['inet tprosshy', ...] in ROLE's namespace."""
        r = self.exec(role, ["nft", "list", "tables"], check=True)
        return [ln.removeprefix("table ").strip() for ln in r.stdout.splitlines() if ln.strip()]

    def nft_table(self, role="client", family="inet", name="tprosshy"):
        """`nft list table` text, or None when the table does not exist."""
        r = self.exec(role, ["nft", "list", "table", family, name])
        return r.stdout if r.returncode == 0 else None

    def ssh_socks(self, host="srv1", port=1080, role="client", timeout=10, extra=()):
        """Starts `ssh -N -D 127.0.0.1:PORT HOST` in ROLE and waits until it answers SOCKS.
        Returns the Popen (killed by down())."""
        log = open(self.state / f"ssh-socks-{host}-{port}.log", "wb")
        p = self.popen(role, ["ssh", "-F", self.ssh_config, "-N", "-o",
                              "ExitOnForwardFailure=yes", "-D", f"127.0.0.1:{port}", *extra,
                              host], stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def ready():
            if p.poll() is not None:
                raise LabError(f"ssh -D to {host} exited {p.returncode}")
            return self.exec(role, ["python3", CLIENT_PY, "socks", f"127.0.0.1:{port}"],
                             timeout=10).returncode == 0
        wait_until(ready, timeout, what=f"SOCKS on {role} 127.0.0.1:{port}")
        return p

    # -- tprosshy
    def tprosshy(self, config, role="client", args=(), start=True, **kw):
        """A Tprosshy runner with this config (text, @KEY@ substituted), started unless told
        otherwise; stopped (SIGKILL) by down() if still running."""
        t = Tprosshy(self, config, role=role, args=args, **kw)
        self._runners.append(t)
        if start:
            t.start()
        return t

    def _next_file(self, stem):
        self._files += 1
        return self.state / f"{stem}-{self._files}"


class LabTestCase(unittest.TestCase):
    """One lab for the whole class; every tprosshy a test starts is killed after it."""

    @classmethod
    def setUpClass(cls):
        cls.lab = Lab().up()

    @classmethod
    def tearDownClass(cls):
        cls.lab.down()

    def tprosshy(self, config, **kw):
        t = self.lab.tprosshy(config, **kw)
        self.addCleanup(t.kill)
        return t


class Tprosshy:
    """tprosshy -c CONFIG in a lab namespace, stdout+stderr to a log file in the state dir."""

    READY = re.compile(r"(?<!not )\bready\b")

    def __init__(self, lab, config, role="client", args=(), binary=None, env=None):
        self.lab = lab
        self.role = role
        base = lab._next_file("tprosshy")
        self.config_path = Path(f"{base}.yaml")
        # Each run gets its own control socket, so that runs side by side never meet at the
        # default one (unless the config names one itself).
        self.control_socket = Path(f"{base}.ctl")
        self.write_config(config)
        self.log_path = Path(f"{base}.log")
        self.binary = binary or tprosshy_bin()
        # A test may put a wrapper (setpriv, say) in front; ctl() still runs the binary.
        self.argv = [self.binary, "-c", str(self.config_path), *map(str, args)]
        self.env = env
        self.proc = None

    def write_config(self, config):
        """Writes the config (text, @KEY@ substituted), with this run's control socket unless
        the config names one."""
        text = self.lab.subst(config)
        if not re.search(r"^control:", text, re.M):
            text = f"control: {{socket: {self.control_socket}}}\n" + text
        self.config_path.write_text(text)

    def ctl(self, *args, timeout=150):
        """`tprosshy reload|status ... -c CONFIG` in this run's namespace -> CompletedProcess."""
        return self.lab.exec(self.role, [self.binary, *args, "-c", self.config_path],
                             timeout=timeout)

    def start(self):
        if not shutil.which(self.argv[0]):
            raise LabError(f"tprosshy binary not found: {self.argv[0]} (set TPROSSHY_BIN)")
        # Its private directory in the lab's state, which goes with the lab: a run killed
        # outright cannot remove it, and must not leave it in the machine's /tmp.
        env = dict(self.env if self.env is not None else os.environ)
        env.setdefault("TMPDIR", str(self.lab.tmp))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.lab.argv(self.role, self.argv),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env=env)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=20):
        """Waits for a log line matching pattern (regex); returns the match. Raises LabError
        if tprosshy exits first, TimeoutError (with the log) on timeout."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern

        def seen():
            m = rx.search(self.log())
            if m:
                return m
            if not self.running:
                raise LabError(f"tprosshy exited ({self.returncode}) before /{rx.pattern}/:\n"
                               f"{self.log()}")
            return None
        try:
            return wait_until(seen, timeout, interval=0.02, what=f"tprosshy log /{rx.pattern}/")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n--- tprosshy log:\n{self.log()}") from None

    def wait_ready(self, timeout=30):
        return self.wait_log(self.READY, timeout)

    def wait_exit(self, timeout=10):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"tprosshy still running after {timeout}s:\n{self.log()}") from None

    def send_signal(self, sig):
        if self.running:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGINT, timeout=10):
        """Sends sig and waits for the exit; returns the exit code (negative: killed by a
        signal). If it does not exit in time it is killed and LabError raised."""
        if self.proc is None:
            return None
        self.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise LabError(f"tprosshy ignored {signal.Signals(sig).name} for {timeout}s:\n"
                           f"{self.log()}") from None

    def kill(self):
        if self.proc is not None:
            _kill_popen(self.proc)


# srv1, the client's next hop (and the gateway's), counts every packet that reaches it for
# t1's network but its own address there (where the tunnel's own traffic goes).
_NEXT_HOP_COUNTER = """table inet leak {
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    ip daddr @T1_NET4@ ip daddr != @SRV1_NET_IP4@ counter
    ip6 daddr @T1_NET6@ ip6 daddr != @SRV1_NET_IP6@ counter
  }
}
"""


class NextHop:
    """What reaches srv1 for t1's network: the client's IPv4 default route goes there
    already, the IPv6 route is added. count() is the packets so far."""

    def __init__(self, lab):
        self.lab = lab
        lab.exec("client", ["ip", "-6", "route", "add", lab["T1_NET6"], "via", lab["SRV1_IP6"]],
                 check=True)
        lab.exec("srv1", ["nft", "-f", "-"], input=lab.subst(_NEXT_HOP_COUNTER), check=True)

    def count(self):
        out = self.lab.exec("srv1", ["nft", "list", "table", "inet", "leak"], check=True).stdout
        return sum(int(n) for n in re.findall(r"packets (\d+)", out))


def probe(lab, what, host, role="client", port=None):
    """tests/lab/probe.py in ROLE: (verdict, milliseconds), as it prints them."""
    argv = ["python3", PROBE_PY, what, host] + ([str(port)] if port else []) + ["--timeout", "2"]
    r = lab.exec(role, argv, timeout=30)
    if r.returncode != 0:
        raise LabError(f"probe {what} {host} from {role}: {r.stderr.strip()}")
    return r.stdout.split()[0], float(r.stdout.split()[-1])


def _kill_popen(p):
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGKILL)  # its own session: the group holds its children
    except OSError:
        p.kill()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _base36(n):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    s = ""
    while True:
        n, d = divmod(n, 36)
        s = digits[d] + s
        if n == 0:
            return s


def read_env(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


class LocalUser:
    """A local account for a test (a laptop's owner, another local user): created with a home
    of its own, every process of it killed and the account removed by remove(). Runs
    commands as itself in a lab namespace with a clean environment (HOME, USER, PATH and
    what `env` adds)."""

    def __init__(self, lab, tag, groups=()):
        self.lab = lab
        self.name = f"tpu{tag}{lab.name}"[:32]
        self.home = Path(f"/tmp/{self.name}.home")
        subprocess.run(["useradd", "--home-dir", self.home, "--create-home", "--shell",
                        "/bin/sh", "--user-group", *(["--groups", ",".join(groups)] if groups
                                                     else []), self.name],
                       check=True, capture_output=True, timeout=30)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        # Its TMPDIR in its home, which goes with the account: a tprosshy of it killed
        # outright leaves its private directory there, not in the machine's /tmp.
        self.tmp = self.home / "tmp"
        self.tmp.mkdir(mode=0o700)
        os.chown(self.tmp, self.uid, self.gid)
        atexit.register(self.remove)

    def env(self, **extra):
        e = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name,
             "TMPDIR": str(self.tmp), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def argv(self, argv, **env):
        """argv run as this user, all its groups, nothing of ours in its environment."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                "env", "-i", *(f"{k}={v}" for k, v in self.env(**env).items()), *map(str, argv)]

    def write(self, rel, text, mode=0o600):
        path = self.home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chown(path.parent, self.uid, self.gid)
        path.write_text(text)
        os.chown(path, self.uid, self.gid)
        path.chmod(mode)
        return path

    def remove(self):
        if self.name is None:
            return
        def alive():
            """Its processes but zombies (one the test has not reaped yet is dead)."""
            out = []
            for d in Path("/proc").iterdir():
                try:
                    st = (d / "status").read_text()
                except (OSError, ValueError):
                    continue
                fields = dict(ln.split(":", 1) for ln in st.splitlines() if ":" in ln)
                if (fields.get("Uid", "").split()[:1] == [str(self.uid)]
                        and not fields.get("State", "").strip().startswith("Z")):
                    out.append(d.name)
            return out

        def gone():
            subprocess.run(["pkill", "-KILL", "-u", self.name], capture_output=True, timeout=10)
            return not alive()
        try:
            wait_until(gone, 10, interval=0.05, what=f"every process of {self.name} gone")
        finally:  # the account goes whatever is left of it
            subprocess.run(["userdel", "--remove", "--force", self.name], capture_output=True,
                           timeout=30)
            subprocess.run(["rm", "-rf", str(self.home)], capture_output=True, timeout=30)
            self.name = None
