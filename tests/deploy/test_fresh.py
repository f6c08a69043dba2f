"""deploy.fresh: the README's setup on a fresh Debian 12 installs all the suite needs.

In a throw-away overlay over the cached `debootstrap --variant=minbase bookworm` tree
(tests/deploy/debroot.py; apt's archive and list caches under build/deploy/apt are bound
in, so a second run downloads nothing new), with the checkout's files copied in (`git
ls-files`: tracked and untracked-not-ignored, so no build/):

1. `bash scripts/setup` as root, as a user would run it, inside a PID namespace of its
   own: afterwards no process but the shell is left there (no package started a daemon;
   debroot's policy-rc.d is in place too, and anything started would die with the
   namespace). The tree had none of the packages before.
2. Every command and Python module the rest of the suite, bench/ and scripts/ use is
   there: commands from COMMANDS below plus those found in the sources (argv lists of
   subprocess-like calls and `need_tools`/`shutil.which` in Python, embedded Python
   programs included; command positions in the shell scripts and in `sh -c` strings);
   modules from every `import` of every Python file and of string constants that parse
   as Python programs, less the standard library and the tree's own modules. A scanned
   command that COMMANDS does not list fails too, so the list stays the record.
3. The build (cmake, Ninja, RelWithDebInfo, -j2, with no network) and `ctest -L unit`:
   every unit test passes.
4. `bash scripts/demo` (its setup and build steps find nothing to do) in a network
   namespace of its own with /sys mounted, its lab's namespaces inside the chroot's /run:
   the demo passes.

Not covered: the netns, integration, bench, fuzz, systemd and deploy tests are not run in
the tree (too heavy; step 2 only checks that what they run is installed), and options or
behaviour of those commands (a version too old would pass here). Root only (exit 77).

usage: python3 tests/deploy/test_fresh.py   (TPROSSHY_BUILD_DIR: default build/)
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import debroot  # noqa: E402
from debroot import CACHE, SOURCE_DIR, log  # noqa: E402

INSIDE = "/src/tprosshy"   # where the checkout goes in the tree

# Commands the suite, bench/ and scripts/ run, by who runs them. The scan below finds
# most of them; these are the record (and cover what no scan sees: tools other tools
# run, commands behind wrappers such as `ip netns exec NS CMD`).
COMMANDS = {
    # build and packaging
    "cmake": "build", "ninja": "build", "c++": "build", "gcc": "bench: tpbench.c",
    "pkg-config": "build", "ctest": "scripts/test", "cpack": "deploy.deb",
    "dpkg-deb": "deploy.deb", "dpkg-shlibdeps": "deploy.deb (cpack too)",
    "readelf": "deploy.deb", "file": "cpack -G DEB runs it (deploy.deb)",
    "clang++": "scripts/fuzz", "clang-format": "scripts/format-check", "git": "bench, style",
    # the lab and the integration tests
    "ip": "lab", "ss": "lab, tests", "sshd": "lab", "ssh": "tprosshy, lab",
    "ssh-keygen": "lab", "ssh-keyscan": "tprosshy keyscan", "dnsmasq": "lab",
    "dig": "lab, tests", "python3": "lab, tests", "setsid": "lab, demo", "flock": "lab",
    "curl": "demo, tests", "nft": "tests, demo", "setpriv": "tests",
    "timeout": "lab", "keepalived": "integration.test_ha",
    "systemd-analyze": "tests/systemd/check-unit",
    # bench
    "redsocks": "bench/run", "sshuttle": "bench/run",
    # deploy
    "debootstrap": "debroot", "unshare": "debroot", "chroot": "debroot", "tar": "deploy.image",
    "podman": "deploy.image", "dpkg-query": "bench, scripts/setup",
    # coreutils and friends the scan finds
    "sh": "many", "bash": "many", "env": "many", "nice": "many", "cat": "many", "rm": "many",
    "sleep": "many", "stat": "many", "echo": "many", "printf": "many", "mkdir": "many",
    "cp": "lab", "cut": "lab", "grep": "many", "sed": "many", "seq": "demo", "kill": "many",
    "mktemp": "check-unit", "tail": "demo", "true": "tests", "false": "lab",
    "test": "many", "wc": "lab", "awk": "lab", "touch": "lab", "rmdir": "lab",
    "chmod": "lab", "mv": "lab", "basename": "lab", "dirname": "lab", "id": "scripts",
    "head": "tests", "mount": "demo here", "find": "scripts/format-check",
    "xargs": "netns tests", "pwd": "lab", "ldd": "scripts/container-check",
    "clang++-14": "scripts/fuzz", "dpkg": "deploy.deb", "apt-get": "scripts/setup",
    "apt-cache": "container-check", "systemctl": "scripts/setup",
    # local users and their ssh (integration.test_privileges, lab.LocalUser), the .deb's group
    "useradd": "lab", "userdel": "lab", "groupadd": "tests, postinst", "groupdel": "tests",
    "chpasswd": "tests", "getent": "postinst", "pkill": "lab", "ls": "netns tests",
    "ssh-agent": "tests", "ssh-add": "tests", "sudo": "tests", "tmux": "tests",
}
# Shell builtins, words the scan takes for a command where they are not one (C++ message
# text; "route" from a regex in helper_server_test.cpp), and tprosshy itself (built, not
# installed); not looked up.
NOT_COMMANDS = {"host", "install", "route", "tprosshy", "ulimit", "cd", "read", "set", "shift", "trap", "wait", "local", "source",
                "mapfile", "return", "exit", "break", "continue", "eval", "type", "umask"}
SHELL_WORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "case",
               "esac", "in", "function", "select", "!", "time", "exec", "command", "builtin",
               "export", "readonly", "declare", "local", "{", "}", "[[", "]]"}
WRAPPERS = {"nice", "setsid", "timeout", "env", "exec", "sudo", "nohup"}
CALLS = {"run", "Popen", "popen", "exec", "check_output", "check_call", "call", "argv", "sh",
         "run_logged"}
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def tracked_files():
    r = subprocess.run(["git", "-C", SOURCE_DIR, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], capture_output=True, check=True)
    return [p for p in r.stdout.decode().split("\0") if p and (SOURCE_DIR / p).exists()]


def kind(rel):
    p = SOURCE_DIR / rel
    if rel.endswith(".py"):
        return "python"
    if rel.endswith((".cpp", ".hpp")):
        return "c++"
    try:
        first = p.read_bytes()[:100].split(b"\n")[0]
    except OSError:
        return None
    if first.startswith(b"#!") and b"python" in first:
        return "python"
    if first.startswith(b"#!") and (b"bash" in first or first.endswith(b"/sh")):
        return "shell"
    return None


def on_host(name):
    return shutil.which(name, path=SBIN_PATH) is not None


# ---------------------------------------------------------------------------- shell scan


def shell_commands(text, functions=()):
    """Words in command position of shell text (heredoc bodies and comments left out) that
    name a program of this machine."""
    lines, out, skip_until = [], set(), None
    for line in text.splitlines():
        if skip_until is not None:
            if line.strip() == skip_until:
                skip_until = None
            continue
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if m:
            skip_until = m.group(1)
        line = re.sub(r"(^|\s)#.*$", "", line)
        lines.append(line)
    text = "\n".join(lines)
    defined = set(functions) | set(re.findall(r"^\s*(\w[\w-]*)\s*\(\)", text, re.M))
    # `for t in a b c; do command -v "$t"`: a list of commands.
    for m in re.finditer(r"for (\w+) in ([^;\n]+);\s*do\s+command -v \"?\$\1", text):
        out.update(m.group(2).split())
    for m in re.finditer(r"command -v ([\w.+-]+)", text):
        out.add(m.group(1))
    for seg in re.split(r"\$\(|[;&|(){}`\n]", text):
        words = seg.split()
        while words and (words[0] in SHELL_WORDS or re.match(r"^\w+=", words[0])):
            words.pop(0)
        if not words or words[0] == "for":
            continue
        while words:
            w = words.pop(0).strip("'\"")
            if w in WRAPPERS and words:
                out.add(w)
                while words and (words[0].startswith("-") or re.match(r"^\d+[sm]?$", words[0])
                                 or re.match(r"^\w+=", words[0])):
                    words.pop(0)
                continue
            if (re.fullmatch(r"[a-z][a-z0-9._+-]*", w) and w not in defined
                    and w not in NOT_COMMANDS and on_host(w)):
                out.add(w)
            break
    return out


# ---------------------------------------------------------------------------- python scan


def python_programs(source):
    """The module's AST and those of string constants in it that are Python programs."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    trees = [tree]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and re.search(r"^\s*(import|from)\s+\w", node.value, re.M):
            trees += python_programs(node.value)
    return trees


def func_name(call):
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def python_scan(source):
    """-> (commands, shell texts, modules) of one Python file."""
    commands, shells, modules = set(), [], set()
    for tree in python_programs(source):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
            elif isinstance(node, ast.Call):
                name = func_name(node)
                consts = [a.value for a in node.args
                          if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                if name in ("need_tools", "which"):
                    commands.update(consts)
                if name not in CALLS:
                    continue
                for a in node.args:
                    if not isinstance(a, (ast.List, ast.Tuple)) or not a.elts:
                        continue
                    elts = [e.value if isinstance(e, ast.Constant) and isinstance(e.value, str)
                            else None for e in a.elts]
                    if not elts[0] or " " in elts[0] or elts[0].startswith("-"):
                        continue
                    cmd = os.path.basename(elts[0])
                    commands.add(cmd)
                    i = 1
                    while cmd in ("nice", "unshare") and i < len(elts) and elts[i]:
                        if not elts[i].startswith("-") and elts[i] not in ("private",):
                            commands.add(os.path.basename(elts[i]))
                            break
                        i += 1
                    if cmd in ("sh", "bash") or "bash" in elts:
                        for j, e in enumerate(elts[:-1]):
                            if e in ("-c", "-ec") and elts[j + 1]:
                                shells.append(elts[j + 1])
    return commands, shells, modules


def scan():
    """-> ({command: [files]}, {module: [files]}) found in the sources."""
    commands, modules, local = {}, {}, {"__future__"}
    files = tracked_files()
    for rel in files:
        if kind(rel) == "python":
            local.add(Path(rel).name.removesuffix(".py"))
    for rel in files:
        k = kind(rel) if rel != "scripts/setup" else None   # its words are package names
        text = (SOURCE_DIR / rel).read_text(errors="replace") if k else ""
        found, mods = set(), set()
        if k == "python":
            found, shells, mods = python_scan(text)
            for s in shells:
                found |= shell_commands(s)
        elif k == "shell":
            found = shell_commands(text)
        elif k == "c++" and re.search(r"\b(system|popen)\s*\(", text):
            for lit in re.findall(r'"((?:[^"\\\n]|\\.)*)"', text):
                found |= shell_commands(lit)
        for c in found:
            commands.setdefault(c, []).append(rel)
        for m in mods:
            if m not in sys.stdlib_module_names and m not in local:
                modules.setdefault(m, []).append(rel)
    return commands, modules


def host_package(cmd):
    p = shutil.which(cmd, path=SBIN_PATH)
    if not p:
        return "not on this machine either"
    r = subprocess.run(["dpkg", "-S", os.path.realpath(p)], capture_output=True, text=True)
    return f"here {p}, from {r.stdout.split(':')[0] or 'no package'}"


# ---------------------------------------------------------------------------- the test


class FreshMachine(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        debroot.need_tools("unshare", "chroot", "git")
        cls.times = {}
        t0 = time.monotonic()
        tree = debroot.Tree().ensure()
        for d in ("archives/partial", "lists/partial"):
            (CACHE / "apt" / d).mkdir(parents=True, exist_ok=True)
        cls.root = debroot.Overlay(tree, CACHE / "fresh-root", binds=[
            (CACHE / "apt/archives", "/var/cache/apt/archives", False),
            (CACHE / "apt/lists", "/var/lib/apt/lists", False)])
        cls.built = False
        try:
            files = tracked_files()
            for rel in files:
                src = SOURCE_DIR / rel
                dst = cls.root.upper(f"{INSIDE}/{rel}")
                if src.is_symlink():
                    os.symlink(os.readlink(src), dst)
                else:
                    shutil.copy2(src, dst)
            log(f"copied {len(files)} files of {SOURCE_DIR} to {INSIDE}")
            cls.before = cls.run_in(["sh", "-c", "dpkg-query -W -f='${Package} ${db:Status-Status}\\n' "
                                     "cmake python3 openssh-server || true"]).stdout
            # scripts/setup as a user runs it, in a PID namespace of its own; then what is
            # left running there.
            t1 = time.monotonic()
            cls.setup = cls.run_in(
                ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                 f"cd {INSIDE} && bash scripts/setup; rc=$?; echo; echo \"setup-rc=$rc\"; "
                 "for d in /proc/[0-9]*; do echo \"proc ${d#/proc/} $(cat $d/comm)\"; done"],
                timeout=2400)
            cls.times["setup"] = time.monotonic() - t1
            log(f"scripts/setup: {cls.times['setup']:.0f}s")
            if "setup-rc=0" not in cls.setup.stdout:
                raise debroot.SetupError(f"bash scripts/setup failed:\n"
                                         f"{cls.setup.stdout[-4000:]}{cls.setup.stderr[-3000:]}")
        except BaseException:
            cls.root.remove()
            raise
        cls.times["start"] = time.monotonic() - t0

    @classmethod
    def tearDownClass(cls):
        cls.root.remove()
        log("times: " + ", ".join(f"{k} {v:.0f}s" for k, v in cls.times.items()))

    @classmethod
    def run_in(cls, argv, timeout=600, net=True):
        t0 = time.monotonic()
        r = cls.root.run(argv, timeout=timeout, net=net)
        log(f"chroot: {' '.join(map(str, argv))[:100]} -> {r.returncode} "
            f"({time.monotonic() - t0:.1f}s)")
        return r

    def test_1_tree_was_fresh_and_setup_started_nothing(self):
        self.assertNotRegex(self.before, r"(?m) installed$", "the tree already had them")
        procs = re.findall(r"^proc (\d+) (.*)$", self.setup.stdout, re.M)
        self.assertEqual([c for p, c in procs if p != "1"], [],
                         f"left running after scripts/setup: {procs}")
        self.assertEqual(self.setup.stdout.count("scripts/setup: installing"), 1)
        again = self.run_in(["sh", "-c", f"cd {INSIDE} && bash scripts/setup"])
        self.assertEqual((again.returncode, again.stdout), (0, ""),
                         "a second scripts/setup is not a no-op")

    def test_2_every_command_and_module_is_there(self):
        commands, modules = scan()
        log(f"scan: {len(commands)} commands, modules {sorted(modules)}")
        for must in ("ip", "nft", "ssh", "dnsmasq", "curl", "keepalived", "podman", "file"):
            self.assertIn(must, set(commands) | set(COMMANDS))
        for must in ("ip", "nft", "ssh", "sshd", "dig", "curl"):   # the scan works
            self.assertIn(must, commands, f"the scan no longer finds {must}")
        self.assertIn("yaml", modules, "the scan no longer finds test_host_keys' yaml")
        wanted = sorted((set(COMMANDS) | set(commands)) - NOT_COMMANDS)
        r = self.run_in(["sh", "-c", 'for c; do command -v "$c" >/dev/null || echo "$c"; done',
                         "sh", *wanted])
        missing = r.stdout.split()
        mods = sorted(modules)
        r2 = self.run_in(["python3", "-c", "import importlib, json, sys\n"
                          "bad = []\nfor m in sys.argv[1:]:\n"
                          "    try: importlib.import_module(m)\n"
                          "    except Exception as e: bad.append(f'{m} ({e})')\n"
                          "print(json.dumps(bad))", *mods])
        bad_mods = json.loads(r2.stdout or "[]") if r2.returncode == 0 else \
            [f"python3 failed: {r2.stderr}"]
        problems = [f"command {c} (used by {', '.join(commands.get(c, [COMMANDS.get(c, '?')])[:3])}"
                    f"; {host_package(c)})" for c in missing]
        problems += [f"Python module {m}, imported by {', '.join(modules[m.split()[0]][:3])}"
                     if m.split()[0] in modules else m for m in bad_mods]
        self.assertEqual(problems, [], "missing in a fresh Debian 12 after scripts/setup "
                         "(add the package to scripts/setup):\n  " + "\n  ".join(problems))
        unlisted = sorted(set(commands) - set(COMMANDS) - NOT_COMMANDS)
        self.assertEqual(unlisted, [], "run by the sources but not in test_fresh.py's "
                         "COMMANDS (add them, and their packages to scripts/setup): " +
                         ", ".join(f"{c} ({commands[c][0]})" for c in unlisted))

    def test_3_builds_and_unit_tests_pass(self):
        t0 = time.monotonic()
        r = self.run_in(["nice", "-n", "10", "sh", "-ec",
                         f"cd {INSIDE}; cmake -S . -B build -G Ninja "
                         "-DCMAKE_BUILD_TYPE=RelWithDebInfo; cmake --build build -j2"],
                        timeout=2400, net=False)
        self.times["build"] = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, f"build failed:\n{r.stdout[-4000:]}{r.stderr[-3000:]}")
        t0 = time.monotonic()
        r = self.run_in(["sh", "-c", f"cd {INSIDE} && ctest --test-dir build -L unit "
                         "--output-on-failure -j2"], timeout=900)
        self.times["unit"] = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, f"unit tests:\n{r.stdout[-6000:]}{r.stderr[-2000:]}")
        m = re.search(r"100% tests passed, 0 tests failed out of (\d+)", r.stdout)
        self.assertTrue(m and int(m.group(1)) > 0, r.stdout[-2000:])
        log(f"unit: {m.group(1)} tests passed")
        type(self).built = True

    def test_4_demo_passes(self):
        if not self.built:
            self.skipTest("no build (test_3 failed)")
        t0 = time.monotonic()
        # A PID namespace (whatever the demo leaves dies with it), /sys for `ip netns
        # exec`, and a network namespace of its own (net=False): the lab's namespaces
        # are made from there, and nothing reaches this machine's own.
        r = self.run_in(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                         f"mount -t sysfs sysfs /sys && cd {INSIDE} && bash scripts/demo"],
                        timeout=600, net=False)
        self.times["demo"] = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, f"scripts/demo exited {r.returncode}:\n"
                         f"{r.stdout[-5000:]}{r.stderr[-3000:]}")
        self.assertIn("peer=198.19.1.1:", r.stdout)
        self.assertIn("tprosshy exited with 0", r.stdout)


if __name__ == "__main__":
    debroot.need_root()
    unittest.main(verbosity=2)
