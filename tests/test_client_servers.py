"""The ftpkit client (library and ``ftpkit get/put/ls/mirror``) against real servers started by the tests on
loopback: vsftpd, proftpd, pure-ftpd, pyftpdlib and ``ftpkit serve``, in passive (EPSV, PASV) and active (EPRT, PORT)
mode.

Every test checks what cannot lie: bytes on disk (downloads here, uploads in the served directory), exit codes, the
one line a failure prints, and the client's own transcript (library) or ``-v`` output (CLI) to prove that the data
connection command of the mode under test was really the one used.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import realservers
from ftpkit.client import Client, ClientOptions, FTPError, ReplyError
from realservers import SERVER_NAMES, RealServer, RealServers

pytestmark = pytest.mark.peer

real_servers = realservers.real_servers
served_root = realservers.served_root

CLI_TIMEOUT = 120
MIB = 1 << 20
JP_FILE = "日本語ファイル.txt"
JP_DIR = "フォルダ"
JP_INNER = "中身.txt"
JP_CONTENT = "こんにちは\n".encode()
DATA_VERBS = frozenset({"EPSV", "PASV", "EPRT", "PORT"})


@dataclass(frozen=True)
class Mode:
    options: dict[str, Any]
    flags: tuple[str, ...]
    verb: str


MODES = {
    "passive-epsv": Mode({"passive": True}, ("--passive",), "EPSV"),
    "passive-pasv": Mode({"passive": True, "epsv": False}, ("--passive", "--no-epsv"), "PASV"),
    "active-eprt": Mode({"passive": False}, ("--active",), "EPRT"),
    "active-port": Mode({"passive": False, "eprt": False}, ("--active", "--no-eprt"), "PORT"),
}
servers = pytest.mark.parametrize("server_name", SERVER_NAMES)
all_modes = pytest.mark.parametrize("mode", list(MODES))


# --- helpers -----------------------------------------------------------------------------------------------------


@dataclass
class Transcript:
    """What ClientOptions(transcript=...) was told: (direction, text)."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, direction: str, text: str) -> None:
        with self.lock:
            self.lines.append((direction, text))

    def commands(self) -> list[str]:
        return [text for direction, text in self.lines if direction == "-->"]

    def text(self) -> str:
        return "\n".join(f"{d} {t}" for d, t in self.lines)


def options(mode: str, transcript: Transcript | None = None, **extra: Any) -> ClientOptions:
    settings: dict[str, Any] = {"timeout": 20.0, **MODES[mode].options, **extra}
    if transcript is not None:
        settings["transcript"] = transcript
    return ClientOptions(**settings)


def assert_mode_used(commands: list[str], mode: str, context: str) -> None:
    """At least one data connection was announced, and only with the command of the mode under test."""
    used = {c.split()[0] for c in commands if c.split()[0] in DATA_VERBS}
    assert used == {MODES[mode].verb}, f"expected only {MODES[mode].verb}, the client sent {sorted(used)}:\n{context}"


@dataclass
class Result:
    args: list[str]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"$ ftpkit {' '.join(self.args)}\nexit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"

    def ok(self, server: RealServer | None = None) -> Result:
        log = f"\n--- {server.name} log\n{server.log_text()}" if server is not None else ""
        assert self.code == 0, f"{self}{log}"
        return self

    def commands(self) -> list[str]:
        """The commands a ``-v`` run printed (``--> EPSV``)."""
        return [line[4:] for line in self.err.splitlines() if line.startswith("--> ")]

    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip() and not line.startswith("ftpkit: note:")]


def cli(cwd: Path, *args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(cwd), LANG="C.UTF-8", LC_ALL="C.UTF-8", PYTHONIOENCODING="utf-8", TERM="dumb")
    proc = subprocess.run([sys.executable, "-m", "ftpkit", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=CLI_TIMEOUT, check=False)
    return Result(list(args), proc.returncode, proc.stdout.decode("utf-8", "replace"),
                  proc.stderr.decode("utf-8", "replace"))


def digest(data: bytes) -> tuple[int, str]:
    return len(data), hashlib.sha256(data).hexdigest()


def assert_same(got: Path, want: bytes | Path) -> None:
    expected = want.read_bytes() if isinstance(want, Path) else want
    assert got.is_file(), f"{got} was not written"
    assert digest(got.read_bytes()) == digest(expected), f"{got} differs from the original"


def make_tree(root: Path) -> bytes:
    """The served tree: a 1 MiB random file, Japanese UTF-8 names, a sub-folder. Returns the random bytes."""
    data = os.urandom(MIB)
    (root / "random.bin").write_bytes(data)
    (root / JP_FILE).write_bytes(JP_CONTENT)
    (root / JP_DIR).mkdir()
    (root / JP_DIR / JP_INNER).write_bytes("中身です\n".encode())
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    return data


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory (None, name ending in /) below ``top``."""
    out: dict[str, bytes | None] = {}
    for base, dirs, files in os.walk(top):
        rel = os.path.relpath(base, top)
        prefix = "" if rel == "." else rel + "/"
        for name in dirs:
            out[prefix + name + "/"] = None
        for name in files:
            out[prefix + name] = Path(base, name).read_bytes()
    return out


def login(ftp: Client, srv: RealServer) -> None:
    ftp.connect(srv.host, srv.port)
    ftp.login(srv.user, srv.password)


# --- get / put / ls -------------------------------------------------------------------------------------------------


@all_modes
@servers
def test_library_get_put_ls(real_servers: RealServers, served_root: Path, tmp_path: Path, server_name: str,
                            mode: str) -> None:
    random_data = make_tree(served_root)
    srv = real_servers.start(server_name, served_root)
    log = Transcript()
    payload = os.urandom(MIB)
    (tmp_path / "payload.bin").write_bytes(payload)
    with Client(options(mode, log)) as ftp:
        login(ftp, srv)
        assert ftp.download("random.bin", tmp_path / "random.bin") == MIB
        assert_same(tmp_path / "random.bin", random_data)
        assert ftp.upload(tmp_path / "payload.bin", "uploaded.bin") == MIB
        assert_same(served_root / "uploaded.bin", payload)
        assert ftp.read_bytes(JP_FILE) == JP_CONTENT
        top = {entry.name: entry for entry in ftp.listdir("")}
        assert set(top) == {"random.bin", "uploaded.bin", JP_FILE, JP_DIR, "sub"}, log.text()
        assert top[JP_DIR].is_dir and top["sub"].is_dir
        assert top[JP_FILE].is_file and top[JP_FILE].size == len(JP_CONTENT)
        assert top["random.bin"].size == MIB
        assert [entry.name for entry in ftp.listdir(JP_DIR)] == [JP_INNER], log.text()
    assert_mode_used(log.commands(), mode, log.text())


@all_modes
@servers
def test_cli_get_put_ls(real_servers: RealServers, served_root: Path, tmp_path: Path, server_name: str,
                        mode: str) -> None:
    random_data = make_tree(served_root)
    srv = real_servers.start(server_name, served_root)
    flags = [*MODES[mode].flags, "-v", "--timeout", "20"]
    payload = os.urandom(MIB)
    (tmp_path / "payload.bin").write_bytes(payload)
    upload_name = "アップロード.bin"

    put = cli(tmp_path, "put", str(tmp_path / "payload.bin"), srv.url(upload_name), *flags).ok(srv)
    assert_same(served_root / upload_name, payload)

    get = cli(tmp_path, "get", srv.url("random.bin"), "-o", str(tmp_path / "got.bin"), *flags).ok(srv)
    assert_same(tmp_path / "got.bin", random_data)

    ls_top = cli(tmp_path, "ls", srv.url(), *flags).ok(srv)
    assert set(ls_top.out.splitlines()) == {"random.bin", upload_name, JP_FILE, JP_DIR + "/", "sub/"}, str(ls_top)

    ls_jp = cli(tmp_path, "ls", srv.url(JP_DIR + "/"), *flags).ok(srv)
    assert ls_jp.out.splitlines() == [JP_INNER], str(ls_jp)

    for result in (put, get, ls_top, ls_jp):
        assert_mode_used(result.commands(), mode, str(result))


# --- the fixtures' options: anonymous, extra configuration --------------------------------------------------------


@servers
def test_anonymous_reads_but_cannot_write(real_servers: RealServers, served_root: Path, tmp_path: Path,
                                          server_name: str) -> None:
    random_data = make_tree(served_root)
    srv = real_servers.start(server_name, served_root)
    if srv.anon_root != served_root:
        pytest.skip(f"{server_name} serves anonymous from {srv.anon_root} here (no private mount namespace)")
    log = Transcript()
    with Client(options("passive-epsv", log)) as ftp:
        ftp.connect(srv.host, srv.port)
        ftp.login()
        assert {entry.name for entry in ftp.listdir("")} == {"random.bin", JP_FILE, JP_DIR, "sub"}, log.text()
        assert ftp.download("random.bin", tmp_path / "random.bin") == MIB
        assert_same(tmp_path / "random.bin", random_data)
        with pytest.raises(ReplyError) as refused:
            ftp.write_bytes("anonymous.bin", b"not allowed")
        assert refused.value.reply.kind == 5, log.text()
    assert not (served_root / "anonymous.bin").exists()


@servers
def test_anonymous_off(real_servers: RealServers, served_root: Path, server_name: str) -> None:
    make_tree(served_root)
    srv = real_servers.start(server_name, served_root, anonymous=False)
    assert srv.anon_root is None
    with Client(options("passive-epsv")) as ftp:
        ftp.connect(srv.host, srv.port)
        with pytest.raises(FTPError):
            ftp.login()
    with Client(options("passive-epsv")) as ftp:
        login(ftp, srv)
        assert ftp.read_bytes(JP_FILE) == JP_CONTENT


@servers
def test_extra_configuration(real_servers: RealServers, served_root: Path, tmp_path: Path, server_name: str) -> None:
    banner = "extra-banner-check"
    fortunes = tmp_path / "fortunes"
    fortunes.write_text(banner + "\n")
    extra = {
        "vsftpd": [f"ftpd_banner={banner}"],
        "proftpd": [f'ServerIdent on "{banner}"'],
        "pure-ftpd": ["-F", str(fortunes)],  # the greeting becomes a line of this fortunes file
        "pyftpdlib": [f"handler.banner = {banner!r}"],
        "ftpkit": ["--banner", banner],
    }[server_name]
    srv = real_servers.start(server_name, served_root, extra=extra)
    with Client(options("passive-epsv")) as ftp:
        greeting = ftp.connect(srv.host, srv.port)
        assert greeting.code == 220 and banner in greeting.text, greeting


@servers
def test_directory_names_with_quotes(real_servers: RealServers, served_root: Path, server_name: str) -> None:
    """RFC 959 appendix II: a quote in the path of a 257 reply is doubled; pwd reads it back from every server.
    pure-ftpd does not double quotes: only a quote followed by more of the name can be told from the closing one."""
    srv = real_servers.start(server_name, served_root)
    names = ['a"b', '日本"語'] if server_name == "pure-ftpd" else ['a"b', 'say "hi" there', '"', '日本"語']
    log = Transcript()
    with Client(options("passive-epsv", log)) as ftp:
        login(ftp, srv)
        home = ftp.pwd()
        for name in names:
            ftp.mkdir(name)
            ftp.cwd(name)
            assert ftp.pwd() == posixpath.join(home, name), log.text()
            ftp.cwd(home)
    assert all((served_root / name).is_dir() for name in names)


# --- mirror --------------------------------------------------------------------------------------------------------


def mirror_summary(result: Result) -> dict[str, int]:
    match = re.search(r"mirror: (\d+) transferred \((\d+) bytes\), (\d+) unchanged, (\d+) deleted", result.err)
    assert match, f"no mirror summary:\n{result}"
    return dict(zip(("transferred", "bytes", "unchanged", "deleted"), map(int, match.groups()), strict=True))


def small_tree(top: Path) -> None:
    top.mkdir()
    (top / "a.txt").write_bytes(b"alpha\n")
    (top / JP_DIR).mkdir()
    (top / JP_DIR / "日本語.txt").write_bytes("日本語の中身\n".encode())
    (top / JP_DIR / "深い").mkdir()
    (top / JP_DIR / "深い" / "データ.bin").write_bytes(os.urandom(20000))
    (top / "sub").mkdir()
    (top / "sub" / "c.txt").write_bytes(b"charlie\n")


@all_modes
@servers
def test_cli_mirror_download(real_servers: RealServers, served_root: Path, tmp_path: Path, server_name: str,
                             mode: str) -> None:
    """Everything, then nothing, then only what changed; --delete removes what the server lacks."""
    remote = served_root / "tree"
    small_tree(remote)
    srv = real_servers.start(server_name, served_root)
    flags = [*MODES[mode].flags, "--timeout", "20"]
    local = tmp_path / "down"
    first = cli(tmp_path, "mirror", srv.url("tree"), str(local), *flags).ok(srv)
    assert snapshot(local) == snapshot(remote), str(first)
    assert mirror_summary(first)["transferred"] == 4, str(first)

    second = cli(tmp_path, "mirror", srv.url("tree"), str(local), *flags).ok(srv)
    assert mirror_summary(second) == {"transferred": 0, "bytes": 0, "unchanged": 4, "deleted": 0}, str(second)

    (remote / "a.txt").write_bytes(b"alpha, longer now\n")
    (remote / JP_DIR / "新しい.txt").write_bytes("新規\n".encode())
    (remote / "sub" / "c.txt").unlink()
    (remote / "sub").rmdir()
    third = cli(tmp_path, "mirror", srv.url("tree"), str(local), "--delete", "-v", *flags).ok(srv)
    assert snapshot(local) == snapshot(remote), str(third)
    assert mirror_summary(third) == {"transferred": 2, "bytes": 18 + len("新規\n".encode()), "unchanged": 2,
                                     "deleted": 2}, str(third)
    assert_mode_used(third.commands(), mode, str(third))


@all_modes
@servers
def test_cli_mirror_upload(real_servers: RealServers, served_root: Path, tmp_path: Path, server_name: str,
                           mode: str) -> None:
    """--reverse into a directory the server does not have yet: everything, then nothing, then only what changed;
    --delete removes what the local side lacks."""
    srv = real_servers.start(server_name, served_root)
    flags = [*MODES[mode].flags, "--timeout", "20"]
    source = tmp_path / "up"
    small_tree(source)
    up = served_root / "up"
    fourth = cli(tmp_path, "mirror", "--reverse", srv.url("up"), str(source), "-v", *flags).ok(srv)
    assert snapshot(up) == snapshot(source), str(fourth)
    assert mirror_summary(fourth)["transferred"] == 4, str(fourth)
    assert_mode_used(fourth.commands(), mode, str(fourth))

    fifth = cli(tmp_path, "mirror", "--reverse", srv.url("up"), str(source), *flags).ok(srv)
    assert mirror_summary(fifth) == {"transferred": 0, "bytes": 0, "unchanged": 4, "deleted": 0}, str(fifth)

    (source / "a.txt").write_bytes(b"alpha, longer now\n")
    (source / "sub" / "c.txt").unlink()
    (source / "sub").rmdir()
    sixth = cli(tmp_path, "mirror", "--reverse", "--delete", srv.url("up"), str(source), *flags).ok(srv)
    assert snapshot(up) == snapshot(source), str(sixth)
    assert mirror_summary(sixth) == {"transferred": 1, "bytes": 18, "unchanged": 2, "deleted": 2}, str(sixth)


# --- resume after the server died mid-transfer -------------------------------------------------------------------

BIG = 64 * MIB
CUT = 8 * MIB


@pytest.fixture(scope="module")
def big_data() -> bytes:
    return os.urandom(BIG)


@pytest.mark.parametrize(("mode", "resumer"), [("passive-epsv", "cli"), ("active-eprt", "library"),
                                                ("passive-pasv", "library"), ("active-port", "cli")])
@servers
def test_resume_after_server_killed_mid_download(real_servers: RealServers, served_root: Path, tmp_path: Path,
                                                 big_data: bytes, server_name: str, mode: str, resumer: str) -> None:
    (served_root / "big.bin").write_bytes(big_data)
    srv = real_servers.start(server_name, served_root)
    local = tmp_path / "big.bin"
    received = [0]
    killed = threading.Event()

    def progress(n: int) -> None:  # runs in the client's transfer thread, between two reads
        received[0] += n
        if received[0] >= CUT and not killed.is_set():
            killed.set()
            srv.kill()  # SIGKILL: the server, its session processes, everything

    log = Transcript()
    with Client(options(mode, log)) as ftp:
        login(ftp, srv)
        with pytest.raises(FTPError) as failure:
            ftp.download("big.bin", local, progress=progress)
    assert killed.is_set(), f"the download ended before {CUT} bytes:\n{log.text()}"
    assert failure.value.transient, f"a server that went away is a transient failure: {failure.value!r}"
    partial = local.stat().st_size
    assert CUT <= partial < BIG, f"partial file of {partial} bytes after: {failure.value}"
    with local.open("rb") as fh:
        assert digest(fh.read()) == digest(big_data[:partial]), "the partial file is not a prefix of the original"

    srv.start()  # the same port, root and configuration
    if resumer == "cli":
        result = cli(tmp_path, "get", srv.url("big.bin"), "-o", str(local), "--continue", "-v",
                     *MODES[mode].flags, "--timeout", "20").ok(srv)
        commands, context = result.commands(), str(result)
    else:
        log = Transcript()
        with Client(options(mode, log)) as ftp:
            login(ftp, srv)
            assert ftp.download("big.bin", local, resume=True) == BIG - partial, log.text()
        commands, context = log.commands(), log.text()
    assert f"REST {partial}" in commands, context
    assert_mode_used(commands, mode, context)
    assert_same(local, big_data)


# --- Shift_JIS names -----------------------------------------------------------------------------------------------

SJIS_FILES = {"日本語.txt": "シフトJIS\n".encode("shift_jis"), "ソース表.txt": b"0x5C trail bytes\n"}
SJIS_DIR = "フォルダ"
SJIS_INNER = "中身.txt"


def make_sjis_tree(root: Path) -> None:
    """Names whose bytes on disk are Shift_JIS (ソ and 表 end in 0x5C, the backslash)."""
    broot = os.fsencode(root)
    for name, content in SJIS_FILES.items():
        with open(os.path.join(broot, name.encode("shift_jis")), "wb") as fh:
            fh.write(content)
    folder = os.path.join(broot, SJIS_DIR.encode("shift_jis"))
    os.mkdir(folder)
    with open(os.path.join(folder, SJIS_INNER.encode("shift_jis")), "wb") as fh:
        fh.write(b"inner\n")
    assert set(os.listdir(broot)) == {n.encode("shift_jis") for n in [*SJIS_FILES, SJIS_DIR]}


@pytest.mark.parametrize("mode", ["passive-epsv", "active-port"])
@pytest.mark.parametrize("server_name", ["vsftpd", "ftpkit"])
def test_shift_jis_names(real_servers: RealServers, served_root: Path, tmp_path: Path, server_name: str,
                         mode: str) -> None:
    make_sjis_tree(served_root)
    srv = real_servers.start(server_name, served_root)

    log = Transcript()
    with Client(options(mode, log, encoding="shift_jis")) as ftp:
        login(ftp, srv)
        top = {entry.name: entry for entry in ftp.listdir("")}
        assert set(top) == {*SJIS_FILES, SJIS_DIR}, log.text()
        assert top[SJIS_DIR].is_dir
        assert [entry.name for entry in ftp.listdir(SJIS_DIR)] == [SJIS_INNER], log.text()
        for name, content in SJIS_FILES.items():
            assert ftp.read_bytes(name) == content, log.text()
        assert ftp.download(f"{SJIS_DIR}/{SJIS_INNER}", tmp_path / "inner.txt") == len(b"inner\n")
        assert (tmp_path / "inner.txt").read_bytes() == b"inner\n"
    assert_mode_used(log.commands(), mode, log.text())

    flags = [*MODES[mode].flags, "--encoding", "shift_jis", "--timeout", "20"]
    listing = cli(tmp_path, "ls", srv.url(), *flags).ok(srv)
    assert set(listing.out.splitlines()) == {*SJIS_FILES, SJIS_DIR + "/"}, str(listing)
    inner = cli(tmp_path, "ls", srv.url(SJIS_DIR + "/"), *flags).ok(srv)
    assert inner.out.splitlines() == [SJIS_INNER], str(inner)
    for i, (name, content) in enumerate(SJIS_FILES.items()):
        out = tmp_path / f"sjis-{i}.txt"
        cli(tmp_path, "get", srv.url(name), "-o", str(out), *flags).ok(srv)
        assert out.read_bytes() == content


# --- a data connection that cannot be opened -----------------------------------------------------------------------

def assert_one_error_line(result: Result, *needles: str) -> str:
    assert result.code == 1, str(result)
    assert "Traceback" not in result.err, str(result)
    errors = result.errors()
    assert len(errors) == 1, f"expected one error line:\n{result}"
    line = errors[0]
    assert line.startswith("ftpkit: "), str(result)
    for needle in needles:
        assert needle in line, f"{needle!r} missing from the error line:\n{result}"
    return line


ACTIVE_FAILURES = [
    # (server, server settings, client flags): the server refuses PORT/EPRT naming another host than the client ...
    *[(name, {}, ("--active-address", "127.0.0.2")) for name in SERVER_NAMES],
    # ... or refuses active mode altogether.
    ("vsftpd", {"active": False}, ()),
    ("proftpd", {"active": False}, ()),
    ("pyftpdlib", {"active": False}, ()),
]


@pytest.mark.parametrize(("server_name", "settings", "extra"), ACTIVE_FAILURES,
                         ids=[f"{s}-{'foreign' if x else 'disabled'}" for s, _, x in ACTIVE_FAILURES])
def test_active_data_connection_refused_then_fallback(real_servers: RealServers, served_root: Path, tmp_path: Path,
                                                      server_name: str, settings: dict[str, Any],
                                                      extra: tuple[str, ...]) -> None:
    random_data = make_tree(served_root)
    srv = real_servers.start(server_name, served_root, **settings)
    out = tmp_path / "random.bin"
    args = ["get", srv.url("random.bin"), "-o", str(out), "--active", "--timeout", "10", *extra]

    failed = cli(tmp_path, *args)
    line = assert_one_error_line(failed, "data connection", "active mode")
    code = re.search(r"server replied ([45]\d\d)\b", line)
    assert code, f"the error line names no reply code:\n{failed}"
    if server_name == "ftpkit":
        assert code[1] == "501", str(failed)  # RFC 2577: PORT/EPRT naming another host
    assert not out.exists()

    recovered = cli(tmp_path, *args, "--fallback").ok(srv)
    assert_same(out, random_data)
    assert re.search(r"retrying RETR in passive mode", recovered.err), str(recovered)


PASSIVE_FAILURE_SERVERS = list(SERVER_NAMES)
UNUSED_LOOPBACK = "127.0.0.3"


@pytest.mark.parametrize("server_name", PASSIVE_FAILURE_SERVERS)
def test_passive_port_nobody_answers_then_fallback(real_servers: RealServers, served_root: Path, tmp_path: Path,
                                                   server_name: str) -> None:
    random_data = make_tree(served_root)
    srv = real_servers.start(server_name, served_root, pasv_address=UNUSED_LOOPBACK)
    out = tmp_path / "random.bin"
    args = ["get", srv.url("random.bin"), "-o", str(out), "--passive", "--no-epsv", "--trust-pasv-address",
            "--timeout", "3"]

    failed = cli(tmp_path, *args)
    line = assert_one_error_line(failed, "data connection", "passive mode", "PASV", UNUSED_LOOPBACK)
    assert re.search(r"server replied 227\b", line), str(failed)
    assert not out.exists()

    recovered = cli(tmp_path, *args, "--fallback").ok(srv)
    assert_same(out, random_data)
    assert re.search(r"retrying RETR in active mode", recovered.err), str(recovered)
