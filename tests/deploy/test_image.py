"""deploy.image: the Dockerfile, really built with podman, runs as the lab's gateway.

1. The cached debootstrap bookworm tree (tests/deploy/debroot.py; it carries this
   machine's apt sources) is imported as debian:bookworm-slim into a podman store under
   build/deploy/podman (its run state in a directory removed afterwards).
2. `podman build --isolation chroot --pull=never` builds the Dockerfile: both stages, the
   compile included; their `apt-get update` uses those sources.
3. The image's root filesystem is exported (`podman create` + `podman export`) and run in
   the lab's client namespace, the LAN's gateway, the way a container engine would with
   `--network host`: a PID namespace of its own where the ENTRYPOINT is PID 1, chroot
   into the rootfs, the config and ssh material bind-mounted read-only at the image's
   VOLUMEs (/etc/tprosshy, /root/.ssh), the image's Env, then ENTRYPOINT + CMD as the
   image says (tini -- tprosshy -c /etc/tprosshy/config.yaml).
4. The LAN host's flows to a target go through it (IPv4 and IPv6); then SIGTERM to the
   entrypoint (tini) ends it with status 0 and leaves no nft table and no ssh behind.

Root only (exit 77 otherwise); a missing tool, or a mirror that cannot be reached, fails.
usage: python3 tests/deploy/test_image.py   (TPROSSHY_BUILD_DIR: default build/)
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import debroot  # noqa: E402
from debroot import CACHE, SOURCE_DIR, SetupError, log, safe_rmtree  # noqa: E402

sys.path.insert(0, str(SOURCE_DIR / "tests/integration"))
from lab import Lab, parse_who, wait_until  # noqa: E402

STORE = CACHE / "podman"
BASE = "docker.io/library/debian:bookworm-slim"   # what FROM debian:bookworm-slim names
IMAGE = "localhost/tprosshy:deploy-test"
BUILD_STAGE = "localhost/tprosshy-build:deploy-test"
ROOTFS = CACHE / "image-rootfs"


class Podman:
    """podman with its store under build/, its run state in a temporary directory, every
    call in a private mount namespace (the overlay mounts of a build vanish with it)."""

    def __init__(self, runroot):
        self.runroot = Path(runroot)

    def argv(self, *args):
        return ["unshare", "--mount", "--propagation", "private",
                "podman", "--root", STORE, "--runroot", self.runroot / "run",
                "--tmpdir", self.runroot / "libpod", "--storage-driver", "overlay",
                "--cgroup-manager", "cgroupfs", "--events-backend", "none", *args]

    def run(self, *args, check=True, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        r = subprocess.run(list(map(str, self.argv(*args))), **kw)
        if check and r.returncode != 0:
            raise SetupError(f"podman {' '.join(map(str, args))} exited {r.returncode}:\n"
                             f"{r.stdout[-2000:] if r.stdout else ''}"
                             f"{r.stderr[-2000:] if r.stderr else ''}")
        return r


def base_image(podman, tree):
    """Imports the tree as debian:bookworm-slim unless the store already has this tree's
    import (so the build's cached layers stay valid)."""
    stamp = (tree.parent / "stamp.json").read_text()
    mark = CACHE / "podman-base.json"
    try:
        have = json.loads(mark.read_text())
    except (OSError, ValueError):
        have = {}
    if have.get("tree") == stamp and podman.run("image", "exists", have.get("id", "-"),
                                                 check=False).returncode == 0:
        podman.run("tag", have["id"], BASE)
        log(f"{BASE}: the tree's import is cached ({have['id'][:12]})")
        return
    log(f"importing {tree} as {BASE}")
    tar = subprocess.Popen(["tar", "-C", tree, "--exclude=./dev/*", "--exclude=./proc/*",
                            "--exclude=./sys/*", "--numeric-owner", "-c", "."],
                           stdout=subprocess.PIPE)
    r = podman.run("import", "-", BASE, stdin=tar.stdout, check=False)
    tar.stdout.close()
    if tar.wait() != 0 or r.returncode != 0:
        raise SetupError(f"podman import failed: {r.stderr}")
    image_id = r.stdout.strip().splitlines()[-1].removeprefix("sha256:")
    mark.write_text(json.dumps({"tree": stamp, "id": image_id}) + "\n")


def same_inode(a, b):
    """Whether a and b are the same file: (st_dev, st_ino), not path strings. A process's
    /proc/PID/root and /proc/PID/exe read as paths from its root's mount namespace and root,
    which differ from this process's paths when this machine itself runs in a chroot."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class ImageAsGateway(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        debroot.need_tools("podman", "tar", "unshare", "chroot", "nft", "ip")
        tree = debroot.Tree().ensure()
        STORE.mkdir(parents=True, exist_ok=True)
        # Run state: podman wants a short path (50 characters at most), the same each time
        # for one store (its database records it); made now, removed afterwards.
        h = hashlib.sha256(str(STORE.resolve()).encode()).hexdigest()[:10]
        cls.tmp = Path(f"/tmp/tprosshy-podman-{h}")
        with debroot.locked(CACHE / "podman.lock"):
            safe_rmtree(cls.tmp)
            cls.tmp.mkdir(mode=0o700)
            try:
                cls.build(tree, Podman(cls.tmp))
            finally:
                safe_rmtree(cls.tmp)

    @classmethod
    def build(cls, tree, podman):
        base_image(podman, tree)
        build_log = CACHE / "image-build.log"
        build_log.write_text("")
        log(f"podman build --isolation chroot (log {build_log})")
        t0 = time.monotonic()
        # The build stage is tagged too, so that pruning earlier builds' images keeps its
        # layers (apt, compile) as a cache for the next run; the full build reuses them.
        for target, tag in (("build", BUILD_STAGE), (None, IMAGE)):
            with open(build_log, "a") as out:
                r = subprocess.run(
                    list(map(str, ["nice", "-n", "10", *podman.argv(
                        "build", "--isolation", "chroot", "--pull=never", "--layers",
                        *(["--target", target] if target else []), "-t", tag,
                        "-f", SOURCE_DIR / "Dockerfile", SOURCE_DIR)])),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    timeout=2400)
            if r.returncode != 0:
                raise SetupError(f"podman build exited {r.returncode}; log {build_log}:\n"
                                 f"{debroot.tail(build_log, 80)}")
        cls.build_seconds = time.monotonic() - t0
        log(f"podman build: {cls.build_seconds:.0f}s")
        podman.run("image", "prune", "-f", check=False)   # earlier builds' images

        info = json.loads(podman.run("image", "inspect", IMAGE).stdout)[0]
        cls.config = info["Config"]
        log(f"image config: {json.dumps(cls.config)}")

        safe_rmtree(ROOTFS)
        ROOTFS.mkdir(parents=True)
        name = f"tprosshy-deploy-test-{os.getpid()}"
        podman.run("create", "--network", "none", "--name", name, IMAGE)
        try:
            exp = subprocess.Popen(list(map(str, podman.argv("export", name))),
                                   stdout=subprocess.PIPE)
            untar = subprocess.run(["tar", "-x", "--numeric-owner", "-C", ROOTFS],
                                   stdin=exp.stdout)
            exp.stdout.close()
            if exp.wait() != 0 or untar.returncode != 0:
                raise SetupError("podman export | tar -x failed")
        finally:
            podman.run("rm", "-f", name, check=False)

    @classmethod
    def tearDownClass(cls):
        safe_rmtree(ROOTFS)

    def test_runs_as_the_lab_gateway_and_stops_clean_on_sigterm(self):
        cfg = self.config
        entry, cmd = cfg.get("Entrypoint") or [], cfg.get("Cmd") or []
        volumes = set(cfg.get("Volumes") or {})
        self.assertEqual(entry, ["/usr/bin/tini", "--", "tprosshy"])
        self.assertEqual(volumes, {"/etc/tprosshy", "/root/.ssh"})
        conf_path = cmd[cmd.index("-c") + 1]
        self.assertEqual(os.path.dirname(conf_path), "/etc/tprosshy")

        with Lab() as lab:
            # The volumes' contents, as an operator would prepare them (root-owned).
            vol = lab.state / "volumes"
            conf, ssh = vol / "tprosshy", vol / "ssh"
            conf.mkdir(parents=True)
            ssh.mkdir(mode=0o700)
            (conf / os.path.basename(conf_path)).write_text(lab.subst("""
mode: gateway
gateway: {interfaces: ["@CLIENT_IF_LAN@"]}
profiles:
  net1:
    host: srv1
    subnets: ["@T1_NET4@", "@T1_NET6@"]
"""))
            (ssh / "config").write_text(lab.subst("""Host srv1
  HostName @SRV1_IP4@
Host *
  User root
  IdentityFile /root/.ssh/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile /root/.ssh/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  ConnectTimeout 3
"""))
            (ssh / "id_ed25519").write_bytes(Path(lab["SSH_KEY"]).read_bytes())
            (ssh / "known_hosts").write_bytes(Path(lab["KNOWN_HOSTS"]).read_bytes())
            for f in ssh.iterdir():
                f.chmod(0o600)

            env = [e for e in cfg.get("Env") or []]
            if not any(e.startswith("HOME=") for e in env):
                env.append("HOME=/root")   # what an engine sets for root
            script = r"""
R=$1; CONF=$2; SSH=$3; shift 3
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
[ -e "$R/etc/resolv.conf" ] || : >"$R/etc/resolv.conf"
mount --bind /etc/resolv.conf "$R/etc/resolv.conf"
mkdir -p "$R/etc/tprosshy" "$R/root/.ssh"
mount --bind "$CONF" "$R/etc/tprosshy" && mount -o remount,bind,ro "$R/etc/tprosshy"
mount --bind "$SSH" "$R/root/.ssh" && mount -o remount,bind,ro "$R/root/.ssh"
exec "$@"
"""
            argv = ["unshare", "--pid", "--fork", "--mount", "--propagation", "private",
                    "sh", "-ec", script, "sh", ROOTFS, conf, ssh,
                    "env", "-i", *env, "chroot", ROOTFS, *entry, *cmd]
            log_path = lab.state / "image-gateway.log"
            with open(log_path, "wb") as out:
                proc = lab.popen("client", argv, stdout=out, stderr=subprocess.STDOUT)

            def logtext():
                return log_path.read_text(errors="replace")

            def ready():
                if proc.poll() is not None:
                    self.fail(f"the image's entrypoint exited {proc.returncode}:\n{logtext()}")
                return "ready" in logtext()
            try:
                wait_until(ready, 30, what="tprosshy in the image: ready")
            except TimeoutError:
                self.fail(f"no 'ready' within 30 s:\n{logtext()}")

            # Who runs: tini as PID 1 of its namespace, tprosshy its child, both in the
            # image's root.
            unshare_kids = children(proc.pid)
            self.assertEqual(len(unshare_kids), 1, unshare_kids)
            tini = unshare_kids[0]
            status = Path(f"/proc/{tini}/status").read_text()
            self.assertRegex(status, r"NSpid:\s+\d+\s+1\n", "tini is not PID 1")
            self.assertEqual(Path(f"/proc/{tini}/comm").read_text().strip(), "tini")
            (tp,) = children(tini)
            self.assertTrue(same_inode(f"/proc/{tp}/root", ROOTFS),
                            f"tprosshy's root is not {ROOTFS}")
            self.assertTrue(same_inode(f"/proc/{tp}/exe", ROOTFS / "usr/local/bin/tprosshy"),
                            f"tprosshy does not run {ROOTFS}/usr/local/bin/tprosshy")

            self.assertIn("inet tprosshy", lab.nft_tables("client"))
            self.assertGreaterEqual(lab.count_procs("client", "ssh"), 1)
            for ip, peer in (("T1_IP4", "SRV1_NET_IP4"), ("T1_IP6", "SRV1_NET_IP6")):
                who = parse_who(lab.http_get("lan", lab[ip]))
                self.assertEqual((who["name"], who["peer"]), ("t1", lab[peer]), logtext())

            # docker stop: SIGTERM to the entrypoint.
            t0 = time.monotonic()
            os.kill(tini, signal.SIGTERM)
            try:
                rc = proc.wait(15)
            except subprocess.TimeoutExpired:
                self.fail(f"still running 15 s after SIGTERM:\n{logtext()}")
            log(f"SIGTERM to tini: exited {rc} after {time.monotonic() - t0:.2f}s")
            self.assertEqual(rc, 0, logtext())
            self.assertNotIn("inet tprosshy", lab.nft_tables("client"))
            self.assertEqual(lab.count_procs("client", "ssh"), 0)
            left = [p for p in lab.pids("client") if same_inode(f"/proc/{p}/root", ROOTFS)]
            self.assertEqual(left, [], "processes of the image are left")


if __name__ == "__main__":
    debroot.need_root()
    unittest.main(verbosity=2)
