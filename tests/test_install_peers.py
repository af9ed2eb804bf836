"""scripts/install-peers.sh derives the libraries of the unpacked servers from their Depends (Debian 12 and 13 name
them differently), here checked on .debs built for the test against the machine's real apt package lists."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import ROOT, require_peer

SCRIPT = ROOT / "scripts" / "install-peers.sh"


def build_deb(directory: Path, name: str, fields: dict[str, str]) -> Path:
    """A .deb with no files and the given control fields, built by dpkg-deb."""
    tree = directory / name
    (tree / "DEBIAN").mkdir(parents=True)
    control = {"Package": name, "Version": "1.0", "Architecture": "all", "Description": "dependency fixture",
               "Maintainer": "ftpkit tests <tests@example.invalid>", **fields}
    (tree / "DEBIAN" / "control").write_text("".join(f"{key}: {value}\n" for key, value in control.items()))
    deb = directory / f"{name}_1.0_all.deb"
    subprocess.run([require_peer("dpkg-deb"), "--build", "--root-owner-group", str(tree), str(deb)],
                   check=True, capture_output=True)
    return deb


def derive(*debs: Path) -> tuple[list[str], list[str], list[str]]:
    """What the script derives (its order), the .debs its first comment names, the entries its second names dropped."""
    require_peer("apt-cache")  # without apt's package lists the script says it derived nothing
    done = subprocess.run(["bash", str(SCRIPT), "--derive-depends", *map(str, debs)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    source, dropped, *packages = done.stdout.splitlines()
    assert source.startswith("# derived from the Depends of: ") and dropped.startswith("# dropped (")
    return packages, source.split(": ", 1)[1].split(), dropped.split(": ", 1)[1].split()


def test_libraries_kept_helpers_and_servers_dropped(tmp_path):
    deb = build_deb(tmp_path, "fake-ftpd", {
        "Pre-Depends": "init-system-helpers (>= 1.54~)",
        "Depends": "adduser, libc6 (>= 2.34), openbsd-inetd | inet-superserver, proftpd-core (= 1.3.8), "
                   "libnosuch-ftpkit-fixture0 | libsodium23 (>= 1.0.10), zlib1g:any (>= 1:1.1.4), lsb-base",
    })
    packages, _, dropped = derive(deb)
    assert packages == ["libc6", "libsodium23", "zlib1g"]
    assert dropped == ["init-system-helpers", "adduser", "openbsd-inetd|inet-superserver", "lsb-base"]


def test_virtual_library_resolves_to_its_provider(tmp_path):
    # zlib1g "Provides: libz1" on Debian 12 and 13; a Depends on the virtual name installs the real package.
    deb = build_deb(tmp_path, "fake-virtual", {"Depends": "libz1"})
    assert derive(deb)[0] == ["zlib1g"]


def test_several_debs_one_list_without_repeats(tmp_path):
    core = build_deb(tmp_path, "fake-core", {"Depends": "libc6, ucf"})
    module = build_deb(tmp_path, "fake-module", {"Depends": "proftpd-core (= 1.0), libc6 (>= 2.34), libpam0g"})
    debs = ["fake-core_1.0_all.deb", "fake-module_1.0_all.deb"]
    assert derive(core, module) == (["libc6", "libpam0g"], debs, ["ucf"])
