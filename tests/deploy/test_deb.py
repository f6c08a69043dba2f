"""deploy.deb: `cpack -G DEB` makes a package that installs and works on a fresh Debian 12.

Builds tprosshy_VERSION_ARCH.deb with cpack from the build directory, checks its fields
and contents, then installs it with `apt-get install ./tprosshy_….deb` into a fresh
`debootstrap --variant=minbase bookworm` tree (cached under build/deploy, used through an
overlay so it stays fresh), where apt fetches the Depends from this machine's own apt
sources. Inside: `tprosshy --version`, `tprosshy check` on the installed example (and on a
config whose ssh server is an address, to see `ssh -G` answer), the conffiles, then a
purge. Root only (exit 77 otherwise); a missing tool fails the test.

usage: python3 tests/deploy/test_deb.py   (TPROSSHY_BUILD_DIR: the build dir, default build/)
"""

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
from debroot import BUILD_DIR, CACHE, SOURCE_DIR, log  # noqa: E402

PKG_DIR = CACHE / "package"


def sh(argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(list(map(str, argv)), **kw)


def project_version():
    m = re.search(r"project\(tprosshy VERSION ([0-9.]+)", (SOURCE_DIR / "CMakeLists.txt").read_text())
    return m.group(1)


class DebianPackage(unittest.TestCase):
    deb = None

    @classmethod
    def setUpClass(cls):
        debroot.need_tools("cpack", "dpkg-deb", "dpkg-shlibdeps", "readelf")
        if not (BUILD_DIR / "CPackConfig.cmake").exists():
            raise debroot.SetupError(f"{BUILD_DIR}/CPackConfig.cmake missing: configure first")
        debroot.safe_rmtree(PKG_DIR)
        PKG_DIR.mkdir(parents=True)
        log(f"cpack -G DEB in {BUILD_DIR}")
        t0 = time.monotonic()
        r = sh(["cpack", "-G", "DEB", "--config", BUILD_DIR / "CPackConfig.cmake", "-B", PKG_DIR],
               cwd=BUILD_DIR, timeout=300)
        if r.returncode != 0:
            raise debroot.SetupError(f"cpack exited {r.returncode}:\n{r.stdout}{r.stderr}")
        debs = sorted(PKG_DIR.glob("*.deb"))
        if len(debs) != 1:
            raise debroot.SetupError(f"cpack made {debs}, not one .deb:\n{r.stdout}")
        cls.deb = debs[0]
        log(f"{cls.deb.name}: {cls.deb.stat().st_size} bytes in {time.monotonic() - t0:.1f}s")
        cls.arch = sh(["dpkg", "--print-architecture"]).stdout.strip()
        cls.version = project_version()
        cls.fields = {}
        info = sh(["dpkg-deb", "-f", cls.deb]).stdout
        for line in info.splitlines():
            if line and not line.startswith(" "):
                k, _, v = line.partition(":")
                cls.fields[k.strip()] = v.strip()
        cls.modes = {}
        for line in sh(["dpkg-deb", "-c", cls.deb]).stdout.splitlines():
            mode, name = line.split()[0], line.split()[5]
            cls.modes[name.lstrip(".").rstrip("/") or "/"] = mode
        cls.files = set(cls.modes)
        ctrl = sh(["sh", "-c", f"dpkg-deb --ctrl-tarfile '{cls.deb}' | tar -xOf - ./conffiles"])
        cls.conffiles = ctrl.stdout.split()

    # -- the file itself

    def test_file_name_and_fields(self):
        self.assertEqual(self.deb.name, f"tprosshy_{self.version}_{self.arch}.deb")
        self.assertEqual(self.fields["Package"], "tprosshy")
        self.assertEqual(self.fields["Version"], self.version)
        self.assertEqual(self.fields["Architecture"], self.arch)
        for key in ("Maintainer", "Description", "Section", "Priority"):
            self.assertTrue(self.fields.get(key), key)

    def test_depends_name_ssh_and_every_linked_library(self):
        depends = {d.strip().split()[0] for d in self.fields["Depends"].split(",")}
        self.assertIn("openssh-client", depends)
        # Each library the packaged binary needs comes from a package that Depends names.
        extract = CACHE / "package/extract"
        debroot.safe_rmtree(extract)
        sh(["dpkg-deb", "-x", self.deb, extract], check=True)
        binary = extract / "usr/bin/tprosshy"
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                            sh(["readelf", "-d", binary], check=True).stdout)
        self.assertTrue(needed)
        for lib in needed:
            owner = sh(["dpkg", "-S", f"*/{lib}"]).stdout.split(":", 1)[0]
            self.assertTrue(owner, f"no package of this machine ships {lib}")
            # The package, or a name it provides (libspdlog1.10 provides libspdlog1.10-fmt9,
            # the name its shlibs file gives).
            provides = re.findall(r"^Provides: (.*)$", sh(["dpkg-query", "-s", owner]).stdout,
                                  re.M)
            names = {owner} | {p.strip().split()[0] for p in ",".join(provides).split(",")
                               if p.strip()}
            self.assertTrue(names & depends,
                            f"{lib} (from {owner}, {names}) is not in Depends: {depends}")
        self.assertNotIn("debug_info", sh(["readelf", "-S", binary]).stdout, "not stripped")
        debroot.safe_rmtree(extract)

    def test_contents(self):
        for path in ("/usr/bin/tprosshy", "/usr/share/man/man1/tprosshy.1.gz",
                     "/usr/share/man/man5/tprosshy.yaml.5.gz",
                     "/usr/share/tprosshy/tprosshy.schema.json",
                     "/etc/tprosshy/config.yaml", "/etc/tprosshy/example-team.yaml"):
            self.assertIn(path, self.files)
        # Root's alone, as README's service section makes it by hand.
        self.assertEqual(self.modes["/etc/tprosshy"], "drwx------")
        self.assertEqual(sorted(self.conffiles),
                         ["/etc/tprosshy/config.yaml", "/etc/tprosshy/example-team.yaml"])
        if (SOURCE_DIR / "systemd/tprosshy.service.in").exists():
            units = [f for f in self.files if f.endswith("/systemd/system/tprosshy.service")]
            self.assertEqual(len(units), 1, f"the systemd unit is not in the package: {units}")
            self.unit = units[0]
            for name in ("tprosshy-helper.service", "tprosshy-helper.socket"):
                self.assertEqual(len([f for f in self.files
                                      if f.endswith(f"/systemd/system/{name}")]), 1, name)

    # -- installed into a fresh Debian 12

    def test_installs_and_runs_on_fresh_bookworm(self):
        tree = debroot.Tree().ensure()
        for d in ("archives/partial", "lists/partial"):
            (CACHE / "apt" / d).mkdir(parents=True, exist_ok=True)
        root = debroot.Overlay(tree, CACHE / "deb-root", binds=[
            (CACHE / "apt/archives", "/var/cache/apt/archives", False),
            (CACHE / "apt/lists", "/var/lib/apt/lists", False)])
        shutil.copy2(self.deb, root.upper(f"/tmp/{self.deb.name}"))
        root.upper("/tmp").chmod(0o1777)

        def run(argv, ok=True, **kw):
            t0 = time.monotonic()
            r = root.run(argv, **kw)
            log(f"chroot: {' '.join(map(str, argv))} -> {r.returncode} "
                f"({time.monotonic() - t0:.1f}s)")
            if ok and r.returncode != 0:
                self.fail(f"{' '.join(map(str, argv))} exited {r.returncode}:\n"
                          f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
            return r

        try:
            # The package's own path, as in README: apt resolves its Depends.
            for attempt in range(3):
                r = run(["apt-get", "update", "-q"], ok=attempt == 2, timeout=300)
                if r.returncode == 0 and "Err:" not in r.stdout:
                    break
                time.sleep(5)
            self.assertEqual(run(["dpkg-query", "-W", "-f=${Status}", "tprosshy"],
                                 ok=False).returncode, 1, "the fresh tree already has tprosshy")
            run(["sh", "-c", "cd /tmp && apt-get install -y -q --no-install-recommends "
                 f"./{self.deb.name}"], timeout=600)
            self.assertEqual(run(["dpkg-query", "-W", "-f=${Status}", "tprosshy"]).stdout,
                             "install ok installed")
            self.assertIn("install ok installed",
                          run(["dpkg-query", "-W", "-f=${Status}", "openssh-client"]).stdout)

            r = run(["tprosshy", "--version"])
            self.assertIn(self.version, r.stdout)
            self.assertEqual(run(["sh", "-c", "command -v tprosshy"]).stdout.strip(),
                             "/usr/bin/tprosshy")

            # The installed example, as a fresh system sees it: no network (a namespace of
            # its own), no ~/.ssh/config. It must load and print a ruleset; what stderr
            # may say is only why a profile's ssh server is left out of the bypass rules,
            # in ssh's own words (so ssh ran).
            r = run(["tprosshy", "check", "-c", "/etc/tprosshy/config.yaml"], net=False)
            self.assertIn("table inet tprosshy", r.stdout)
            self.assertIn("set route4_corp {", r.stdout)   # from config.yaml
            self.assertIn("set route4_team-lab {", r.stdout)   # from example-team.yaml
            self.assertNotIn("not installed", r.stderr)
            for line in r.stderr.splitlines():
                self.assertRegex(line, r"^tprosshy: profile [\w-]+: (ssh -G \S+ failed: .+|"
                                 r"cannot resolve .+) \(its ssh server \S+ is left out")
            # The schema the example's first line names is installed there.
            first = run(["head", "-n1", "/etc/tprosshy/config.yaml"]).stdout
            self.assertIn("$schema=/usr/share/tprosshy/tprosshy.schema.json", first)
            run(["test", "-s", "/usr/share/tprosshy/tprosshy.schema.json"])

            # ssh -G answering: a server given by address needs no resolver.
            root.upper("/tmp/own.yaml").write_text(
                "profiles:\n  one: {host: 'root@198.18.7.1', subnets: [198.19.7.0/24]}\n")
            r = run(["tprosshy", "check", "-c", "/tmp/own.yaml"], net=False)
            self.assertEqual(r.stderr, "")
            self.assertRegex(r.stdout, r"ip daddr 198\.18\.7\.1 tcp dport 22 return")

            conff = run(["dpkg-query", "-W", "-f=${Conffiles}", "tprosshy"]).stdout
            self.assertIn("/etc/tprosshy/config.yaml", conff)
            self.assertIn("/etc/tprosshy/example-team.yaml", conff)
            run(["test", "-s", "/usr/share/man/man1/tprosshy.1.gz"])
            run(["test", "-s", "/usr/share/man/man5/tprosshy.yaml.5.gz"])
            if (SOURCE_DIR / "systemd/tprosshy.service.in").exists():
                unit = run(["sh", "-c", "cat /lib/systemd/system/tprosshy.service"]).stdout
                self.assertIn("ExecStart=/usr/bin/tprosshy ", unit)
                unit = run(["cat", "/lib/systemd/system/tprosshy-helper.service"]).stdout
                self.assertIn("ExecStart=/usr/bin/tprosshy helper\n", unit)
                sock = run(["cat", "/lib/systemd/system/tprosshy-helper.socket"]).stdout
                self.assertIn("SocketGroup=tprosshy\n", sock)
            # The group that grants the helper, made by the package.
            self.assertTrue(run(["getent", "group", "tprosshy"]).stdout.startswith("tprosshy:"))

            # Purge leaves nothing of it.
            run(["apt-get", "purge", "-y", "-q", "tprosshy"])
            run(["test", "!", "-e", "/usr/bin/tprosshy"])
            run(["test", "!", "-e", "/etc/tprosshy"])
        finally:
            root.remove()


if __name__ == "__main__":
    debroot.need_root()
    unittest.main(verbosity=2)
