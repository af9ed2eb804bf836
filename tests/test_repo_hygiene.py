"""The tracked files hold no leftovers of a merge: a conflict marker in the README or the benchmark results once
landed on main unnoticed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(rb"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def test_no_merge_conflict_markers_in_tracked_files() -> None:
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    names = [name for name in listed.decode().split("\0") if name]
    assert names, "git ls-files listed nothing"
    found = []
    for name in names:
        path = ROOT / name
        if not path.is_file() or path.stat().st_size > 4_000_000:
            continue
        data = path.read_bytes()
        for match in MARKER.finditer(data):
            line = data.count(b"\n", 0, match.start()) + 1
            found.append(f"{name}:{line}")
    assert not found, "merge conflict markers in: " + ", ".join(found)
