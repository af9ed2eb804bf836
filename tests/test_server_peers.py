"""The server driven by real FTP clients (curl, lftp, tnftp, inetutils-ftp, ncftp) on loopback, each in passive and
in active mode: byte-exact downloads and uploads, listings with Japanese UTF-8 names, and file management.

Every test checks the result where it cannot lie: the bytes on disk (downloads in ``tmp_path``, uploads in the
served root), the served tree after MKD/RNFR/RNTO/DELE/RMD, and the server's own record of the control conversation
(``caplog`` on the in-process server) to prove that the intended data-connection command (PASV, EPSV, PORT or EPRT)
was really used. tnftp and inetutils-ftp exit 0 even when a command fails, so their replies are checked as well.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import require_peer

pytestmark = pytest.mark.peer

TIMEOUT = 60
JP_FILE = "日本語ファイル.txt"
JP_DIR = "フォルダ"
JP_CONTENT = "こんにちは\n".encode()
ROOT_NAMES = {"hello.txt", "random.bin", "sub", JP_DIR, JP_FILE}
DATA_VERBS = ("PASV", "EPSV", "PORT", "EPRT")
PASSIVE = frozenset({"PASV", "EPSV"})
ACTIVE = frozenset({"PORT", "EPRT"})
COMMAND_LINE = re.compile(r"^\[(?P<session>[^\]]+)\] --> (?P<verb>[A-Z]+)")
FAILURE_REPLY = re.compile(r"^[45]\d\d[ -]", re.MULTILINE)


# --- helpers -----------------------------------------------------------------------------------------------------


class Conversation:
    """The server's debug log of the control conversations (commands ``-->`` and replies ``<--``)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        caplog.set_level(logging.DEBUG, logger="ftpkit.server")

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.caplog.records if r.name == "ftpkit.server")

    def verbs(self) -> list[str]:
        out = []
        for record in self.caplog.records:
            match = COMMAND_LINE.match(record.getMessage())
            if match:
                out.append(match["verb"])
        return out

    def data_verbs(self) -> set[str]:
        return {verb for verb in self.verbs() if verb in DATA_VERBS}

    def assert_data_verbs(self, allowed: frozenset[str]) -> None:
        """At least one data connection was announced, and only with the commands of the mode under test."""
        used = self.data_verbs()
        assert used, f"no PASV/EPSV/PORT/EPRT seen by the server:\n{self.text()}"
        assert used <= allowed, f"expected only {sorted(allowed)}, the server saw {sorted(used)}:\n{self.text()}"


@pytest.fixture
def conversation(caplog: pytest.LogCaptureFixture) -> Conversation:
    return Conversation(caplog)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The clients' environment: an empty HOME (no user config, bookmarks or .netrc), UTF-8, no proxies."""
    home = tmp_path / "home"
    home.mkdir()
    out = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out.update(HOME=str(home), LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="dumb")
    return out


@pytest.fixture
def dl(tmp_path: Path) -> Path:
    """The local download folder."""
    path = tmp_path / "dl"
    path.mkdir()
    return path


class Result:
    def __init__(self, args: list[str], returncode: int, out: str, err: str) -> None:
        self.args, self.returncode, self.out, self.err = args, returncode, out, err

    def __str__(self) -> str:
        return f"$ {' '.join(self.args)}\nexit {self.returncode}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"

    def ok(self, conversation: Conversation | None = None) -> Result:
        """Assert exit status 0 (for clients whose exit status is reliable)."""
        server = f"\n--- server\n{conversation.text()}" if conversation else ""
        assert self.returncode == 0, f"{self}{server}"
        return self


def run(args: list[str], env: dict[str, str], stdin: str | None = None, cwd: Path | None = None) -> Result:
    proc = subprocess.run(
        args,
        input=stdin.encode() if stdin is not None else None,
        env=env,
        cwd=cwd,
        timeout=TIMEOUT,
        capture_output=True,
        check=False,
    )
    return Result(args, proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_same_file(got: Path, expected: Path | bytes) -> None:
    want = expected if isinstance(expected, bytes) else expected.read_bytes()
    assert got.exists(), f"{got} was not written"
    data = got.read_bytes()
    assert (len(data), sha256(data)) == (len(want), sha256(want)), f"{got} differs from the original"


def payload(tmp_path: Path, name: str = "payload.bin") -> Path:
    """A fresh 1 MiB random file to upload."""
    path = tmp_path / name
    path.write_bytes(os.urandom(1 << 20))
    return path


def lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.splitlines()]


def assert_long_listing(text: str) -> None:
    """A UNIX ``ls -l`` style listing: the Japanese file and folder, and random.bin with its size."""
    got = lines(text)
    assert any(line.startswith("-") and line.endswith(" " + JP_FILE) for line in got), text
    assert any(line.startswith("d") and line.endswith(" " + JP_DIR) for line in got), text
    assert any(line.startswith("-") and line.endswith(" random.bin") and " 1048576 " in line for line in got), text


def assert_tree_after_rename(root: Path) -> None:
    """The state after MKD x, RNFR hello.txt RNTO x/b.txt, MKD 新規, RNFR 日本語ファイル.txt RNTO 新規/改名.txt."""
    assert not (root / "hello.txt").exists()
    assert not (root / JP_FILE).exists()
    assert (root / "x" / "b.txt").read_bytes() == b"hello\nworld\n"
    assert (root / "新規" / "改名.txt").read_bytes() == JP_CONTENT


def assert_tree_after_remove(root: Path) -> None:
    assert not (root / "x").exists()
    assert not (root / "新規").exists()
    assert {p.name for p in root.iterdir()} == {"random.bin", "sub", JP_DIR}


def replies(text: str) -> list[str]:
    """The reply codes a verbose command-line client printed (``226 Transfer complete.`` -> ``226``)."""
    return re.findall(r"^(\d\d\d)[ -]", text, re.MULTILINE)


def assert_no_failure_reply(result: Result, conversation: Conversation) -> None:
    bad = FAILURE_REPLY.findall(result.out)
    assert not bad, f"failure replies {bad}:\n{result}\n--- server\n{conversation.text()}"


# --- curl ----------------------------------------------------------------------------------------------------------

CURL_MODES = {
    "passive-epsv": (["--ftp-pasv"], frozenset({"EPSV"})),
    "passive-pasv": (["--ftp-pasv", "--disable-epsv"], frozenset({"PASV"})),
    "active-eprt": (["--ftp-port", "127.0.0.1"], frozenset({"EPRT"})),
    "active-port": (["--ftp-port", "127.0.0.1", "--disable-eprt"], frozenset({"PORT"})),
}
curl_mode = pytest.mark.parametrize("mode", list(CURL_MODES))

# curl takes the path of a URL percent-encoded; these are the UTF-8 bytes of the Japanese names.
JP_FILE_URL = "%E6%97%A5%E6%9C%AC%E8%AA%9E%E3%83%95%E3%82%A1%E3%82%A4%E3%83%AB.txt"
UPLOAD_JP = "アップロード.bin"
UPLOAD_JP_URL = "%E3%82%A2%E3%83%83%E3%83%97%E3%83%AD%E3%83%BC%E3%83%89.bin"


def curl(server, mode: str, env: dict[str, str], *args: str) -> Result:
    exe = require_peer("curl")
    base = [exe, "-sS", "--noproxy", "*", "--connect-timeout", "10", "--max-time", "30", "-u", "alice:secret"]
    return run([*base, *CURL_MODES[mode][0], *args], env)


@curl_mode
def test_curl_download(server, mode, env, dl, conversation):
    curl(server, mode, env, f"{server.url}/random.bin", "-o", str(dl / "random.bin")).ok(conversation)
    assert_same_file(dl / "random.bin", server.root / "random.bin")
    curl(server, mode, env, f"{server.url}/{JP_FILE_URL}", "-o", str(dl / "jp.txt")).ok(conversation)
    assert (dl / "jp.txt").read_bytes() == JP_CONTENT
    conversation.assert_data_verbs(CURL_MODES[mode][1])


@curl_mode
def test_curl_upload(server, mode, env, tmp_path, conversation):
    source = payload(tmp_path)
    curl(server, mode, env, "-T", str(source), f"{server.url}/up.bin").ok(conversation)
    assert_same_file(server.root / "up.bin", source)
    other = payload(tmp_path, "other.bin")
    curl(server, mode, env, "-T", str(other), f"{server.url}/{UPLOAD_JP_URL}").ok(conversation)
    assert_same_file(server.root / UPLOAD_JP, other)
    conversation.assert_data_verbs(CURL_MODES[mode][1])


@curl_mode
def test_curl_listing(server, mode, env, conversation):
    names = curl(server, mode, env, "--list-only", f"{server.url}/").ok(conversation).out
    assert set(lines(names)) == ROOT_NAMES, names
    assert_long_listing(curl(server, mode, env, f"{server.url}/").ok(conversation).out)
    inner = curl(server, mode, env, "--list-only", f"{server.url}/sub/").ok(conversation).out
    assert lines(inner) == ["inner.txt"]
    conversation.assert_data_verbs(CURL_MODES[mode][1])


@curl_mode
def test_curl_file_management(server, mode, env, conversation):
    quotes = ["MKD x", "RNFR hello.txt", "RNTO x/b.txt", "MKD 新規", f"RNFR {JP_FILE}", "RNTO 新規/改名.txt"]
    listing = curl(server, mode, env, *[a for q in quotes for a in ("-Q", q)], "--list-only", f"{server.url}/")
    # the -Q commands run before the listing: it shows their result
    assert set(lines(listing.ok(conversation).out)) == {"random.bin", "sub", JP_DIR, "x", "新規"}
    assert_tree_after_rename(server.root)

    quotes = ["DELE x/b.txt", "RMD x", "DELE 新規/改名.txt", "RMD 新規"]
    listing = curl(server, mode, env, *[a for q in quotes for a in ("-Q", q)], "--list-only", f"{server.url}/")
    assert set(lines(listing.ok(conversation).out)) == {"random.bin", "sub", JP_DIR}
    assert_tree_after_remove(server.root)

    # a refused command is reported as a failure (curl exit 21: quote error), and changes nothing
    refused = curl(server, mode, env, "-Q", "RMD sub", "--list-only", f"{server.url}/")
    assert refused.returncode == 21, str(refused)
    assert (server.root / "sub" / "inner.txt").read_bytes() == b"inner\n"
    conversation.assert_data_verbs(CURL_MODES[mode][1])


# --- lftp ----------------------------------------------------------------------------------------------------------

LFTP_MODES = {
    "passive-epsv": ("set ftp:passive-mode on; set ftp:prefer-epsv on", frozenset({"EPSV"})),
    "passive-pasv": ("set ftp:passive-mode on; set ftp:prefer-epsv off", frozenset({"PASV"})),
    "active": ("set ftp:passive-mode off; set ftp:prefer-epsv off", ACTIVE),
    "active-prefer-epsv": ("set ftp:passive-mode off; set ftp:prefer-epsv on", ACTIVE),
}
lftp_mode = pytest.mark.parametrize("mode", list(LFTP_MODES))


def lftp(server, mode: str, env: dict[str, str], commands: str) -> Result:
    exe = require_peer("lftp")
    settings = (
        "set net:max-retries 1; set net:timeout 10; set net:reconnect-interval-base 1; set cmd:fail-exit yes; "
        "set ftp:ssl-allow no; set xfer:clobber on; " + LFTP_MODES[mode][0]
    )
    script = f"{settings}; open -u alice,secret -p {server.port} {server.host}; {commands}"
    return run([exe, "-c", script], env)


@lftp_mode
def test_lftp_get_put(server, mode, env, dl, tmp_path, conversation):
    source = payload(tmp_path)
    commands = f"get random.bin -o {dl}/random.bin; get {JP_FILE} -o {dl}/jp.txt; put {source} -o up.bin"
    lftp(server, mode, env, commands).ok(conversation)
    assert_same_file(dl / "random.bin", server.root / "random.bin")
    assert (dl / "jp.txt").read_bytes() == JP_CONTENT
    assert_same_file(server.root / "up.bin", source)
    other = payload(tmp_path, "other.bin")
    lftp(server, mode, env, f"put {other} -o {UPLOAD_JP}").ok(conversation)
    assert_same_file(server.root / UPLOAD_JP, other)
    conversation.assert_data_verbs(LFTP_MODES[mode][1])


@lftp_mode
def test_lftp_listing(server, mode, env, conversation):
    # cls -1 marks folders with a slash; ls is the server's LIST output
    names = lftp(server, mode, env, "cls -1").ok(conversation).out
    assert set(lines(names)) == {"hello.txt", "random.bin", "sub/", f"{JP_DIR}/", JP_FILE}, names
    assert_long_listing(lftp(server, mode, env, "ls").ok(conversation).out)
    inner = lftp(server, mode, env, f"cls -1 sub; cls -1 {JP_DIR}").ok(conversation).out
    assert lines(inner) == ["sub/inner.txt"]
    conversation.assert_data_verbs(LFTP_MODES[mode][1])


@lftp_mode
def test_lftp_file_management(server, mode, env, conversation):
    commands = f"mkdir x; mv hello.txt x/b.txt; mkdir 新規; mv {JP_FILE} 新規/改名.txt; cls -1 x 新規"
    listing = lftp(server, mode, env, commands).ok(conversation).out
    assert set(lines(listing)) == {"x/b.txt", "新規/改名.txt"}, listing
    assert_tree_after_rename(server.root)
    lftp(server, mode, env, "rm x/b.txt; rmdir x; rm 新規/改名.txt; rmdir 新規").ok(conversation)
    assert_tree_after_remove(server.root)
    # with cmd:fail-exit a refused command ends lftp with a failure, and changes nothing
    refused = lftp(server, mode, env, "rmdir sub")
    assert refused.returncode != 0, str(refused)
    assert (server.root / "sub" / "inner.txt").read_bytes() == b"inner\n"
    conversation.assert_data_verbs(LFTP_MODES[mode][1])


# --- tnftp ---------------------------------------------------------------------------------------------------------

TNFTP_MODES = {
    "passive-epsv": (["passive on"], frozenset({"EPSV"})),
    "passive-pasv": (["passive on", "epsv4 off"], frozenset({"PASV"})),
    "active-eprt": (["passive off"], frozenset({"EPRT"})),
    "active-port": (["passive off", "epsv4 off"], frozenset({"PORT"})),
}
tnftp_mode = pytest.mark.parametrize("mode", list(TNFTP_MODES))


def tnftp(server, mode: str, env: dict[str, str], commands: list[str], cwd: Path) -> Result:
    """tnftp driven by a stdin script; it exits 0 even when a command fails, so callers check the replies."""
    exe = require_peer("tnftp")
    script = ["user alice secret", *TNFTP_MODES[mode][0], "binary", *commands, "quit"]
    return run([exe, "-n", "-v", server.host, str(server.port)], env, stdin="\n".join(script) + "\n", cwd=cwd)


@tnftp_mode
def test_tnftp_get_put_list(server, mode, env, dl, tmp_path, conversation):
    source = payload(tmp_path)
    (dl / "up.bin").write_bytes(source.read_bytes())
    result = tnftp(server, mode, env, ["get random.bin", f"get {JP_FILE} jp.txt", "put up.bin", "ls", "nlist"], dl)
    assert_no_failure_reply(result, conversation)
    assert_same_file(dl / "random.bin", server.root / "random.bin")
    assert (dl / "jp.txt").read_bytes() == JP_CONTENT
    assert_same_file(server.root / "up.bin", source)
    assert replies(result.out).count("226") == 5, str(result)
    assert_long_listing(result.out)
    assert {JP_FILE, JP_DIR, "up.bin"} <= set(lines(result.out)), str(result)
    conversation.assert_data_verbs(TNFTP_MODES[mode][1])


@tnftp_mode
def test_tnftp_file_management(server, mode, env, dl, conversation):
    commands = ["mkdir x", "rename hello.txt x/b.txt", "mkdir 新規", f"rename {JP_FILE} 新規/改名.txt", "nlist 新規"]
    result = tnftp(server, mode, env, commands, dl)
    assert_no_failure_reply(result, conversation)
    codes = [c for c in replies(result.out) if c in ("257", "350", "250", "226")]
    assert codes == ["257", "350", "250", "257", "350", "250", "226"], str(result)
    assert "改名.txt" in lines(result.out) or "新規/改名.txt" in lines(result.out), str(result)
    assert_tree_after_rename(server.root)

    result = tnftp(server, mode, env, ["delete x/b.txt", "rmdir x", "delete 新規/改名.txt", "rmdir 新規", "ls"], dl)
    assert_no_failure_reply(result, conversation)
    codes = [c for c in replies(result.out) if c in ("250", "226")]
    assert codes == ["250", "250", "250", "250", "226"], str(result)
    assert_tree_after_remove(server.root)

    refused = tnftp(server, mode, env, ["rmdir sub"], dl)
    assert "550" in replies(refused.out), str(refused)
    assert (server.root / "sub" / "inner.txt").read_bytes() == b"inner\n"
    conversation.assert_data_verbs(TNFTP_MODES[mode][1])


# --- inetutils-ftp -------------------------------------------------------------------------------------------------

INETUTILS_MODES = {
    "passive": (["-p"], PASSIVE),
    "active": (["-A"], ACTIVE),
    "active-default": ([], ACTIVE),  # inetutils-ftp defaults to active mode
}
inetutils_mode = pytest.mark.parametrize("mode", list(INETUTILS_MODES))


def inetutils_ftp(server, mode: str, env: dict[str, str], commands: list[str], cwd: Path) -> Result:
    """inetutils-ftp driven by a stdin script; its exit status says nothing about transfers: check the replies."""
    exe = require_peer("inetutils-ftp")
    script = ["user alice secret", "binary", *commands, "quit"]
    args = [exe, "-n", "-v", *INETUTILS_MODES[mode][0], server.host, str(server.port)]
    return run(args, env, stdin="\n".join(script) + "\n", cwd=cwd)


@inetutils_mode
def test_inetutils_get_put_list(server, mode, env, dl, tmp_path, conversation):
    source = payload(tmp_path)
    (dl / "up.bin").write_bytes(source.read_bytes())
    commands = ["get random.bin", f"get {JP_FILE} jp.txt", "put up.bin", "ls", "nlist"]
    result = inetutils_ftp(server, mode, env, commands, dl)
    assert_no_failure_reply(result, conversation)
    assert_same_file(dl / "random.bin", server.root / "random.bin")
    assert (dl / "jp.txt").read_bytes() == JP_CONTENT
    assert_same_file(server.root / "up.bin", source)
    assert replies(result.out).count("226") == 5, str(result)
    assert_long_listing(result.out)
    assert {JP_FILE, JP_DIR, "up.bin"} <= set(lines(result.out)), str(result)
    conversation.assert_data_verbs(INETUTILS_MODES[mode][1])


@inetutils_mode
def test_inetutils_file_management(server, mode, env, dl, conversation):
    commands = ["mkdir x", "rename hello.txt x/b.txt", "mkdir 新規", f"rename {JP_FILE} 新規/改名.txt", "nlist 新規"]
    result = inetutils_ftp(server, mode, env, commands, dl)
    assert_no_failure_reply(result, conversation)
    codes = [c for c in replies(result.out) if c in ("257", "350", "250", "226")]
    assert codes == ["257", "350", "250", "257", "350", "250", "226"], str(result)
    assert "改名.txt" in lines(result.out) or "新規/改名.txt" in lines(result.out), str(result)
    assert_tree_after_rename(server.root)

    commands = ["delete x/b.txt", "rmdir x", "delete 新規/改名.txt", "rmdir 新規", "ls"]
    result = inetutils_ftp(server, mode, env, commands, dl)
    assert_no_failure_reply(result, conversation)
    codes = [c for c in replies(result.out) if c in ("250", "226")]
    assert codes == ["250", "250", "250", "250", "226"], str(result)
    assert_tree_after_remove(server.root)

    refused = inetutils_ftp(server, mode, env, ["rmdir sub"], dl)
    assert "550" in replies(refused.out), str(refused)
    assert (server.root / "sub" / "inner.txt").read_bytes() == b"inner\n"
    conversation.assert_data_verbs(INETUTILS_MODES[mode][1])


# --- ncftp ---------------------------------------------------------------------------------------------------------

NCFTP_MODES = {
    "passive-default": ([], PASSIVE),  # ncftp's default is passive
    "passive": (["-F"], PASSIVE),
    "active": (["-E"], ACTIVE),
}
ncftp_mode = pytest.mark.parametrize("mode", list(NCFTP_MODES))


def ncftp_tool(name: str, server, mode: str, env: dict[str, str], *args: str) -> Result:
    exe = require_peer(name)
    login = ["-u", "alice", "-p", "secret", "-P", str(server.port), "-t", "10"]
    return run([exe, *login, *NCFTP_MODES[mode][0], *args], env)


@ncftp_mode
def test_ncftpget(server, mode, env, dl, conversation):
    ncftp_tool("ncftpget", server, mode, env, "-V", server.host, str(dl), "/random.bin", f"/{JP_FILE}").ok(conversation)
    assert_same_file(dl / "random.bin", server.root / "random.bin")
    assert (dl / JP_FILE).read_bytes() == JP_CONTENT
    conversation.assert_data_verbs(NCFTP_MODES[mode][1])


@ncftp_mode
def test_ncftpput(server, mode, env, tmp_path, conversation):
    source = payload(tmp_path, "up.bin")
    ncftp_tool("ncftpput", server, mode, env, "-V", server.host, "/", str(source)).ok(conversation)
    assert_same_file(server.root / "up.bin", source)
    # -m: make the remote folder first (MKD), here with a Japanese name
    other = payload(tmp_path, UPLOAD_JP)
    ncftp_tool("ncftpput", server, mode, env, "-V", "-m", server.host, "/新規", str(other)).ok(conversation)
    assert_same_file(server.root / "新規" / UPLOAD_JP, other)
    conversation.assert_data_verbs(NCFTP_MODES[mode][1])


@ncftp_mode
def test_ncftpls(server, mode, env, conversation):
    names = ncftp_tool("ncftpls", server, mode, env, "-1", f"ftp://{server.host}/").ok(conversation).out
    assert set(lines(names)) == ROOT_NAMES, names
    long = ncftp_tool("ncftpls", server, mode, env, "-l", f"ftp://{server.host}/").ok(conversation).out
    assert_long_listing(long)
    inner = ncftp_tool("ncftpls", server, mode, env, "-1", f"ftp://{server.host}/sub/").ok(conversation).out
    assert lines(inner) == ["inner.txt"]
    conversation.assert_data_verbs(NCFTP_MODES[mode][1])


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_ncftp_file_management(server, mode, env, conversation):
    """The interactive ncftp driven by a stdin script (``set passive on|off``); checked on disk."""
    exe = require_peer("ncftp")
    passive = "on" if mode == "passive" else "off"
    opening = [f"set passive {passive}", f"open -u alice -p secret -P {server.port} {server.host}"]
    steps = ["mkdir x", "rename hello.txt x/b.txt", "mkdir 新規", f"rename {JP_FILE} 新規/改名.txt", "ls 新規"]
    result = run([exe], env, stdin="\n".join([*opening, *steps, "quit"]) + "\n")
    assert "改名.txt" in result.out, str(result)
    assert_tree_after_rename(server.root)
    steps = ["rm x/b.txt", "rmdir x", "rm 新規/改名.txt", "rmdir 新規", "ls"]
    result = run([exe], env, stdin="\n".join([*opening, *steps, "quit"]) + "\n")
    assert "random.bin" in result.out, str(result)
    assert_tree_after_remove(server.root)
    conversation.assert_data_verbs(PASSIVE if mode == "passive" else ACTIVE)
