"""Listing bombs (issue 12): a wide folder (50,000 entries) lists through LIST, NLST, MLSD and STAT with bounded
memory (the server runs in this process: ``tracemalloc`` counts every byte it allocates, the clients run in other
processes), a deep tree (200 nested folders) is not walked (``LIST -R`` lists one level), and glob patterns in
LIST/NLST/STAT match one path component with a bounded pattern: each command line gets exactly one reply and the
session goes on."""

from __future__ import annotations

import gc
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_peer
from rawftp import Raw

WIDE = 50_000
NAMES_BUDGET = WIDE * 220
"""Local storage holds a folder's names to sort them (94 bytes each here: 4.6 MB); the facts and lines are made and
sent a batch at a time: 4.9-8.6 MB at the peak in all, measured in this process with whatever else it runs. Before,
the whole folder's facts were held: 13-20 MB here."""
NAME = "entry-with-a-longish-name-{:06d}.txt"  # 36 characters: a listing line is about 90 bytes


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wide")
    wide = root / "wide"
    wide.mkdir()
    for n in range(WIDE):
        (wide / NAME.format(n)).touch()
    return root


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


def _peak_during(run) -> int:  # type: ignore[no-untyped-def]
    """Bytes allocated at the peak of ``run()`` above what was allocated before it (this process: the server)."""
    gc.collect()  # what earlier tests left for the collector is not freed (or counted) in the middle
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    run()
    _, peak = tracemalloc.get_traced_memory()
    return peak - before


STAT_CLIENT = r"""
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=120)
f = s.makefile("rb")
def reply():
    first = f.readline()
    lines = 1
    if first[3:4] == b"-":
        while not (len(line := f.readline()) >= 4 and line[:3] == first[:3] and line[3:4] == b" "):
            if not line:
                raise SystemExit("closed")
            lines += 1
        lines += 1
    return first[:3].decode(), lines
reply()
for line in ("USER alice", "PASS secret", "STAT " + sys.argv[2]):
    s.sendall(line.encode() + b"\r\n")
    code, lines = reply()
print(code, lines)
"""


def _curl(server, path: str, *args: str) -> int:
    """Lines curl received (written to a file by curl: the listing is not held in this process)."""
    curl = require_peer("curl")
    with tempfile.TemporaryFile() as out:
        proc = subprocess.run([curl, "-sS", "-u", "alice:secret", *args, f"ftp://127.0.0.1:{server.port}/{path}"],
                              stdout=out, stderr=subprocess.PIPE, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        out.seek(0)
        return sum(1 for _ in out)


@pytest.mark.parametrize("how", ["LIST", "NLST", "MLSD", "STAT"])
def test_a_wide_folder_lists_with_bounded_memory(servers, wide_root, traced, how):
    server = servers.start(wide_root, users=["alice:secret"])
    _curl(server, "")  # a first session and listing: what the server sets up once is not counted
    out: list[object] = []

    def run() -> None:
        if how == "LIST":
            out.append(_curl(server, "wide/"))
        elif how == "NLST":
            out.append(_curl(server, "wide/", "--list-only"))
        elif how == "MLSD":
            out.append(_curl(server, "wide/", "-X", "MLSD"))
        else:
            proc = subprocess.run([sys.executable, "-c", STAT_CLIENT, str(server.port), "wide"],
                                  capture_output=True, text=True, timeout=300, check=False)
            assert proc.returncode == 0, proc.stderr
            out.append(proc.stdout.split())

    peak = _peak_during(run)
    if how == "STAT":  # one reply: "Status of", 10,000 entries, the note that says why no more, "End of status"
        assert out[0] == ["213", "10003"]
        budget = NAMES_BUDGET + 10_000 * 400
    else:
        assert out[0] == WIDE
        budget = NAMES_BUDGET
    assert peak < budget, f"{how}: {peak} bytes at the peak (budget {budget})"


@pytest.fixture(scope="module")
def deep_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deep")
    path = root
    for n in range(200):
        path = path / f"d{n}"
    path.mkdir(parents=True)
    (path / "bottom.txt").write_bytes(b"deep\n")
    return root


def test_a_deep_tree_is_not_walked(servers, deep_root):
    """``LIST -R`` is ``LIST``: the options are dropped, one level is listed (pure-ftpd walks with a depth limit;
    vsftpd, like ftpkit, does not walk). The bottom of the tree is reached by its path."""
    server = servers.start(deep_root, users=["alice:secret"])
    c = Raw("127.0.0.1", server.port, timeout=60)
    c.login()
    for line in ("STAT -R", "STAT -laR /", "STAT -R d0"):
        reply = c.cmd(line)
        assert reply.code == 213 and len(reply.lines) == 3, reply  # "Status of", one entry, "End of status"
    bottom = "/".join(f"d{n}" for n in range(200))
    assert c.cmd(f"CWD {bottom}").code == 250
    reply = c.cmd("STAT -R .")
    assert reply.code == 213 and "bottom.txt" in reply.lines[1], reply
    assert _curl(server, "", "-X", "LIST -R") == 1
    assert _curl(server, "d0/", "-X", "LIST -R") == 1


@pytest.fixture
def glob_root(tmp_path) -> Path:
    root = tmp_path / "glob"
    (root / "a" / "b" / "c").mkdir(parents=True)
    for name in ("one.txt", "two.txt", "[x].txt", "star*.txt"):
        (root / name).write_bytes(b"x")
    (root / "a" / "b" / "c" / "deep.txt").write_bytes(b"x")
    return root


def _entries(reply) -> list[str]:  # type: ignore[no-untyped-def]
    return [line.rsplit(" ", 1)[-1] for line in reply.lines[1:-1]]


def test_glob_patterns_match_one_component_and_every_line_gets_one_reply(servers, glob_root):
    server = servers.start(glob_root, users=["alice:secret"])
    c = Raw("127.0.0.1", server.port, timeout=60)
    c.login()
    assert _entries(c.cmd("STAT *.txt")) == ["[x].txt", "one.txt", "star*.txt", "two.txt"]
    assert _entries(c.cmd("STAT **")) == ["[x].txt", "a", "one.txt", "star*.txt", "two.txt"]  # ** is *
    assert _entries(c.cmd("STAT [[]x].txt")) == ["[x].txt"]
    assert _entries(c.cmd("STAT a/b/c/*.txt")) == ["deep.txt"]
    # globbing stops at one component: "*/*/*" is the folder "*/*" of the folder "*", which do not exist
    assert c.cmd("STAT */*/*/*").code == 550
    assert c.cmd("STAT */*.txt").code == 550
    for pattern in ("[", "[x", "[]", "[!", "*[", "?" * 255):  # an unclosed bracket is a literal "[": nothing matches
        assert _entries(c.cmd(f"STAT {pattern}")) == [], pattern
    long = "*a" * 1000  # 2,000 characters
    reply = c.cmd(f"STAT {long}")
    assert reply.code == 501 and "at most 255 characters, not 2000" in reply.text, reply
    for verb in ("LIST", "NLST"):  # refused before the data connection is used
        c.pasv()
        assert c.cmd(f"{verb} {long}").code == 501
    assert c.cmd("PWD").code == 257  # the session goes on


def test_distinct_long_patterns_do_not_grow_the_server(servers, glob_root, traced):
    """``fnmatch`` keeps 32,768 compiled patterns for the life of the process (about 64 KiB for a 4 KiB one): 2 GiB
    for a client that sends distinct patterns. Patterns are compiled per listing now, and at most 255 characters
    long; 300 distinct ones of 4 KiB, and 300 of 255 characters, leave nothing behind."""
    server = servers.start(glob_root, users=["alice:secret"])
    c = Raw("127.0.0.1", server.port, timeout=60)
    c.login()
    assert c.cmd("STAT *.txt").code == 213  # what the first listing sets up once is not counted
    before, _ = tracemalloc.get_traced_memory()
    codes = [(c.cmd("STAT " + f"*{n:04d}" * 800).code, c.cmd("STAT " + f"*{n:04d}" * 51).code) for n in range(300)]
    after, _ = tracemalloc.get_traced_memory()
    assert after - before < 2 << 20, f"{after - before} bytes more after 600 patterns"
    assert set(codes) == {(501, 213)}
