"""A fresh Debian 12 (bookworm) root filesystem for the deployment tests, made with
`debootstrap --variant=minbase` from this machine's own apt sources, cached under the
build directory, and used without changing it: each test runs in an overlay on top of it
(deploy.deb), or imports it as debian:bookworm-slim (deploy.image).

Standard library only; root only. No host or mirror is named here: the mirror and the
apt sources are read from this machine's /etc/apt at run time and copied into the tree,
so apt inside it fetches from where this machine's apt does.

Every mount is made inside a private mount namespace (`unshare --mount`) that dies with
the command, so nothing stays mounted, whatever happens to the test.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

SOURCE_DIR = Path(os.environ.get("TPROSSHY_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BUILD_DIR = Path(os.environ.get("TPROSSHY_BUILD_DIR", SOURCE_DIR / "build"))
CACHE = BUILD_DIR / "deploy"
SUITE = "bookworm"
APT_ETC = Path("/etc/apt")


class SetupError(Exception):
    """A prerequisite is missing on this machine: the test fails, naming it."""


def need_root():
    """Exit 77 (ctest's SKIP_RETURN_CODE for these tests) unless root."""
    if os.geteuid() != 0:
        print(f"{sys.argv[0]}: needs root (debootstrap, chroot, mounts): skipped")
        sys.exit(77)


def need_tools(*tools):
    for t in tools:
        if not (shutil.which(t) or Path("/usr/sbin", t).exists()):
            raise SetupError(f"{t} is not installed (scripts/setup installs it)")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- apt sources


def source_files():
    """This machine's apt source files, in apt's order."""
    files = []
    if (APT_ETC / "sources.list").is_file():
        files.append(APT_ETC / "sources.list")
    d = APT_ETC / "sources.list.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir()
                        if p.is_file() and p.suffix in (".list", ".sources"))
    return files


def apt_sources():
    """[{types, uris, suites, components, signed_by}] from this machine's sources (the
    one-line and the deb822 formats), disabled entries left out."""
    out = []
    for f in source_files():
        text = f.read_text()
        if f.suffix == ".sources":
            for para in re.split(r"\n\s*\n", text):
                fields, key = {}, None
                for line in para.splitlines():
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    if line[0] in " \t" and key:
                        fields[key] += " " + line.strip()
                        continue
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
                if "uris" not in fields or fields.get("enabled", "yes").lower() == "no":
                    continue
                out.append({"types": fields.get("types", "").split(),
                            "uris": fields["uris"].split(),
                            "suites": fields.get("suites", "").split(),
                            "components": fields.get("components", "").split(),
                            "signed_by": fields.get("signed-by", "")})
        else:
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                m = re.match(r"(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)", line)
                if not m:
                    continue
                opts = dict(o.split("=", 1) for o in (m.group(2) or "").split() if "=" in o)
                out.append({"types": [m.group(1)], "uris": [m.group(3)],
                            "suites": [m.group(4)], "components": m.group(5).split(),
                            "signed_by": opts.get("signed-by", "")})
    return out


def mirror():
    """The URI of this machine's first `deb` source for bookworm itself."""
    for s in apt_sources():
        if "deb" in s["types"] and SUITE in s["suites"] and s["uris"]:
            return s["uris"][0]
    raise SetupError(f"no apt source of this machine serves '{SUITE}' "
                     f"(read {', '.join(map(str, source_files())) or 'nothing'})")


# ---------------------------------------------------------------------------- mounts


def mounts_under(path):
    """Mount points at or below path, as this process sees them."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == path or mp.startswith(path.rstrip("/") + "/"):
                found.append(mp)
    return found


def safe_rmtree(path):
    """rm -rf path, refusing if anything is mounted below it."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    m = mounts_under(path)
    if m:
        raise SetupError(f"refusing to remove {path}: mounted below it: {m}")
    shutil.rmtree(path)


@contextmanager
def locked(path):
    """An exclusive flock on path (the tree is shared by deploy.deb and deploy.image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_logged(argv, log_path, timeout, env=None, input=None):
    """Runs argv with stdout+stderr to log_path; raises with the log's tail on failure."""
    with open(log_path, "ab") as out:
        out.write(f"\n$ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        try:
            r = subprocess.run(list(map(str, argv)), stdin=subprocess.DEVNULL if input is None
                               else None, input=input, stdout=out, stderr=subprocess.STDOUT,
                               timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise SetupError(f"{argv[0]}: no end after {timeout}s; log {log_path}:\n"
                             f"{tail(log_path)}") from None
    if r.returncode != 0:
        raise SetupError(f"{' '.join(map(str, argv[:6]))}... exited {r.returncode}; "
                         f"log {log_path}:\n{tail(log_path)}")


def tail(path, n=60):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------- the tree


class Tree:
    """The cached debootstrap tree: CACHE/bookworm/tree, its downloaded .debs in
    CACHE/bookworm/debs, and a stamp naming what it was made from (mirror, this machine's
    apt sources, debootstrap's version). A tree whose stamp differs is made anew."""

    def __init__(self, base=CACHE / SUITE):
        self.base = base
        self.path = base / "tree"
        self.debs = base / "debs"
        self.stamp_path = base / "stamp.json"
        self.log_path = base / "debootstrap.log"

    def wanted_stamp(self):
        h = hashlib.sha256()
        for f in source_files():
            h.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"],
                           capture_output=True, text=True).stdout
        return {"suite": SUITE, "variant": "minbase", "mirror": mirror(),
                "sources_sha256": h.hexdigest(), "debootstrap": v, "layout": 1}

    def ensure(self):
        """The tree's path, made first if missing or stale (a few minutes)."""
        need_tools("debootstrap", "unshare", "chroot")
        with locked(self.base / ".lock"):
            want = self.wanted_stamp()
            try:
                have = json.loads(self.stamp_path.read_text())
            except (OSError, ValueError):
                have = None
            if have == want and (self.path / "usr/bin/apt-get").exists():
                log(f"debootstrap tree cached: {self.path}")
                return self.path
            self._make(want)
            return self.path

    def _make(self, stamp):
        new = self.base / "tree.new"
        safe_rmtree(new)
        safe_rmtree(self.path)
        self.stamp_path.unlink(missing_ok=True)
        self.debs.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        log(f"debootstrap --variant=minbase {SUITE} into {new} from {stamp['mirror']} "
            f"(log {self.log_path})")
        t0 = time.monotonic()
        # Its own mount namespace: the /proc and /sys it mounts in the target go with it.
        run_logged(["unshare", "--mount", "--propagation", "private", "debootstrap",
                    "--variant=minbase", f"--cache-dir={self.debs}", SUITE, new,
                    stamp["mirror"]], self.log_path, timeout=1200)
        # apt inside the tree uses this machine's sources (and their keyrings).
        (new / "etc/apt/sources.list").unlink(missing_ok=True)
        for f in source_files():
            dest = new / f.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
        for s in apt_sources():
            for key in s["signed_by"].split():
                if key.startswith("/") and Path(key).is_file() and not (new / key[1:]).exists():
                    (new / key[1:]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(key, new / key[1:])
        # What apt downloaded while bootstrapping is in debs/; lists come with each use.
        for p in (new / "var/lib/apt/lists").glob("*"):
            if p.is_file():
                p.unlink()
        if mounts_under(new):
            raise SetupError(f"debootstrap left mounts in {new}: {mounts_under(new)}")
        new.rename(self.path)
        self.stamp_path.write_text(json.dumps(stamp, indent=1) + "\n")
        log(f"debootstrap tree made in {time.monotonic() - t0:.0f}s: {self.path}")


# ---------------------------------------------------------------------------- a chroot


class Overlay:
    """A throw-away root: an overlay over the cached tree (never written), upper layer in
    workdir. run() mounts it, with /proc, /dev, this machine's resolv.conf and the binds
    given, in a private mount namespace and runs a command chrooted in it.

    binds: [(host_path, path_inside, read_only)]."""

    def __init__(self, tree, workdir, binds=()):
        self.tree = Path(tree)
        self.work = Path(workdir)
        self.root = self.work / "root"
        self.binds = list(binds)
        safe_rmtree(self.work)
        for d in ("upper", "work", "root"):
            (self.work / d).mkdir(parents=True)
        # Daemons of packages installed in here never start (there are none today).
        sbin = self.work / "upper/usr/sbin"
        sbin.mkdir(parents=True)
        (sbin / "policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (sbin / "policy-rc.d").chmod(0o755)

    def upper(self, inside):
        """Where a file put into the root before a run goes (the overlay's upper layer)."""
        p = self.work / "upper" / inside.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    SCRIPT = r"""
R=$TP_ROOT
mount -t overlay overlay -o "lowerdir=$TP_TREE,upperdir=$TP_WORK/upper,workdir=$TP_WORK/work" "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
[ -e "$R/etc/resolv.conf" ] || : >"$R/etc/resolv.conf"
mount --bind /etc/resolv.conf "$R/etc/resolv.conf"
mount -o remount,bind,ro "$R/etc/resolv.conf"
while IFS='|' read -r src dst ro; do
  [ -n "$src" ] || continue
  mkdir -p "$R$dst"
  mount --bind "$src" "$R$dst"
  [ "$ro" = ro ] && mount -o remount,bind,ro "$R$dst"
done <<EOF
$TP_BINDS
EOF
if [ "$TP_NET" = none ]; then
  exec unshare --net chroot "$R" "$@"
fi
exec chroot "$R" "$@"
"""

    def run(self, argv, timeout=600, net=True, input=None, env=None):
        """-> CompletedProcess (text, stdout and stderr captured). net=False runs the command
        in a network namespace of its own with nothing in it."""
        e = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
             "TP_ROOT": str(self.root), "TP_TREE": str(self.tree), "TP_WORK": str(self.work),
             "TP_NET": "host" if net else "none",
             "TP_BINDS": "\n".join(f"{s}|{d}|{'ro' if ro else 'rw'}"
                                   for s, d, ro in self.binds)}
        e.update(env or {})
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                               self.SCRIPT, "sh", *map(str, argv)],
                              input=input, stdin=None if input is not None else
                              subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=e)

    def remove(self):
        safe_rmtree(self.work)
