"""Event hooks: commands get the event's fields (environment and argument placeholders), URLs a JSON document; a
hook never holds up the session (the FTP reply comes before the hook ends: the hook waits on a FIFO the test writes
only after it saw the reply); slow, failing and missing hooks are stopped, logged and counted; a pre-upload hook
refuses an upload with 550 and its reason."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from conftest import RunningServer
from rawftp import Raw, read_all

FTPKIT = [sys.executable, "-m", "ftpkit"]

# Writes the event's FTPKIT_* variables and its arguments to OUT/<event>.env (atomically: readers see it whole).
RECORD = """#!/bin/sh
out="$1"; shift
{ env | grep '^FTPKIT_' | sort; for a in "$@"; do echo "ARG=$a"; done; } > "$out/$FTPKIT_EVENT.tmp"
mv "$out/$FTPKIT_EVENT.tmp" "$out/$FTPKIT_EVENT.env"
"""
# Waits until the test writes to the FIFO $1, then records like RECORD into $2 and says so on the FIFO $3.
WAIT_THEN_RECORD = """#!/bin/sh
read go < "$1"
{ env | grep '^FTPKIT_' | sort; echo "ARG=$4"; } > "$2"
echo done > "$3"
"""
PRE_UPLOAD = """#!/bin/sh
case "$FTPKIT_PATH" in
  *.exe) echo "executables are not accepted here ($FTPKIT_USER)"; exit 1 ;;
  *.slow) sleep 3600 ;;
esac
exit 0
"""


def script(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def until(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Poll real state until ``condition`` holds; bounded."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:g} s: {what}")
        time.sleep(0.01)


def in_thread(func: Callable[[], object], limit: float = 20.0) -> object:
    """Run a blocking call (opening a FIFO waits for the other end) with a bound."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(func()), daemon=True)
    thread.start()
    thread.join(limit)
    assert result, f"blocked for more than {limit:g} s"
    return result[0]


def write_fifo(path: Path, text: str) -> None:
    def write() -> bool:
        with open(path, "w") as fifo:
            fifo.write(text + "\n")
        return True

    in_thread(write)


def read_fifo(path: Path) -> str:
    def read() -> str:
        with open(path) as fifo:
            return fifo.read()

    return str(in_thread(read))


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def hook_count(server: RunningServer, event: str, result: str) -> float:
    return server.server.metrics.registry.get_sample_value("ftpkit_hooks_total",
                                                           {"event": event, "result": result}) or 0.0


def store(c: Raw, name: str, data: bytes) -> tuple[int, int]:
    """STOR over a passive connection: (the preliminary reply's code, the final one's)."""
    host, port = c.pasv()
    sock = socket.create_connection((host, port), timeout=10)
    first = c.cmd(f"STOR {name}")
    if first.code != 150:
        sock.close()
        return first.code, first.code
    sock.sendall(data)
    sock.close()
    return first.code, c.reply().code


def test_hooks_run_with_the_event_fields_after_the_reply(servers, tree, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    go, done = tmp_path / "go", tmp_path / "done"
    os.mkfifo(go)
    os.mkfifo(done)
    record = script(tmp_path, "record.sh", RECORD)
    waiter = script(tmp_path, "wait.sh", WAIT_THEN_RECORD)
    hooks = [{"event": "upload", "command": [waiter, str(go), str(out / "upload.env"), str(done), "{local_path}"],
              "timeout": 60}]
    hooks += [{"event": event, "command": [record, str(out), "{path}"]}
              for event in ("delete", "rename", "mkdir", "rmdir", "download", "login-failed")]
    server = servers.start(tree, users=["alice:secret"], hooks=hooks, metrics_address="127.0.0.1:0")
    c = Raw(server.host, server.port)
    assert c.cmd("USER alice").code == 331 and c.cmd("PASS wrong").code == 530
    c.login()
    assert c.cmd("TYPE I").code == 200
    assert store(c, "up.bin", b"x" * 1234) == (150, 226)
    # The 226 came while the upload hook waits for us: the session goes on (every reply below arrives) meanwhile.
    assert c.cmd("MKD newdir").code == 257 and c.cmd("RMD newdir").code == 250
    assert c.cmd("RNFR hello.txt").code == 350 and c.cmd("RNTO renamed.txt").code == 250
    assert c.cmd("DELE renamed.txt").code == 250
    assert server.server.shared.events.hooks.pending >= 1  # the upload hook has not ended
    write_fifo(go, "go")
    assert read_fifo(done) == "done\n"
    upload = env_file(out / "upload.env")
    assert upload["FTPKIT_EVENT"] == "upload" and upload["FTPKIT_USER"] == "alice"
    assert upload["FTPKIT_PATH"] == "/up.bin" and upload["FTPKIT_SIZE"] == "1234"
    assert upload["FTPKIT_CLIENT_IP"] == "127.0.0.1" and upload["FTPKIT_MODE"] == "passive"
    assert upload["FTPKIT_METHOD"] == "PASV" and upload["FTPKIT_ANONYMOUS"] == "false"
    assert upload["FTPKIT_LOCAL_PATH"] == str(tree / "up.bin") == upload["ARG"]
    until(lambda: all((out / f"{e}.env").exists() for e in ("mkdir", "rmdir", "rename", "delete", "login-failed")),
          "the other hooks ran")
    assert env_file(out / "mkdir.env")["FTPKIT_PATH"] == "/newdir" == env_file(out / "rmdir.env")["ARG"]
    rename = env_file(out / "rename.env")
    assert rename["FTPKIT_FROM"] == "/hello.txt" and rename["FTPKIT_PATH"] == "/renamed.txt"
    assert env_file(out / "delete.env")["FTPKIT_LOCAL_PATH"] == str(tree / "renamed.txt")
    failed = env_file(out / "login-failed.env")
    assert failed["FTPKIT_USER"] == "alice" and failed["FTPKIT_REASON"] == "credentials"
    assert "FTPKIT_PATH" not in failed
    assert not (out / "download.env").exists()  # no download happened
    until(lambda: hook_count(server, "upload", "ok") == 1, "the upload hook counted")
    c.cmd("QUIT")


def test_slow_failing_and_missing_hooks_do_not_slow_the_session(servers, tree, tmp_path, caplog):
    go = tmp_path / "go"  # the waiting hooks end once this file exists (two readers of one FIFO would race)
    pid_file = tmp_path / "slow.pid"
    hooks = [
        {"event": "download", "command": ["/bin/sh", "-c", f'echo $$ > {pid_file}; exec sleep 3600'],
         "timeout": 0.5},
        {"event": "download", "command": ["/bin/sh", "-c", "echo scanner unavailable; exit 3"]},
        {"event": "download", "command": [str(tmp_path / "no-such-program")]},
        {"event": "download", "command": ["/bin/sh", "-c", f"while [ ! -e {go} ]; do sleep 0.05; done"],
         "timeout": 60},
    ]
    server = servers.start(tree, users=["alice:secret"], hooks=hooks, metrics_address="127.0.0.1:0")
    c = Raw(server.host, server.port)
    c.login()
    for _ in range(2):  # two downloads, each answered while the FIFO hook of the first still waits
        host, port = c.pasv()
        data = socket.create_connection((host, port), timeout=10)
        assert c.cmd("RETR hello.txt").code == 150
        assert read_all(data) == b"hello\r\nworld\r\n" and c.reply().code == 226
    assert hook_count(server, "download", "ok") == 0  # the FIFO hooks still wait: none of them has ended
    go.write_text("go\n")
    until(lambda: hook_count(server, "download", "ok") == 2, "the waiting hooks ended")
    until(lambda: hook_count(server, "download", "timeout") == 2, "the slow hooks were stopped")
    until(lambda: hook_count(server, "download", "failed") == 4, "the failing and missing hooks counted")
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    messages = [r.getMessage() for r in caplog.records]
    assert any("hook download" in m and "exit 3: scanner unavailable" in m for m in messages)
    assert any("hook download" in m and "cannot run" in m and "no-such-program" in m for m in messages)
    assert any("hook download" in m and "timeout" in m and "killed" in m for m in messages)
    assert c.cmd("NOOP").code == 200
    c.cmd("QUIT")


def test_a_pre_upload_hook_refuses_with_550_and_its_reason(servers, tree, tmp_path):
    check = script(tmp_path, "check.sh", PRE_UPLOAD)
    server = servers.start(tree, users=["alice:secret"],
                           hooks=[{"event": "pre-upload", "command": [check], "timeout": 1}])
    c = Raw(server.host, server.port)
    c.login()
    c.pasv()
    reply = c.cmd("STOR tool.exe")
    assert reply.code == 550 and reply.text == "Upload refused: executables are not accepted here (alice)."
    assert not (tree / "tool.exe").exists() and not list(tree.glob(".tool.exe*"))
    assert store(c, "notes.txt", b"fine\n") == (150, 226)
    assert (tree / "notes.txt").read_bytes() == b"fine\n"
    c.pasv()
    reply = c.cmd("STOR data.slow")  # the check does not answer within its timeout: a transient refusal
    assert reply.code == 451 and "try again later" in reply.text
    c.pasv()
    assert c.cmd("APPE tool.exe").code == 550
    assert c.cmd("NOOP").code == 200
    c.cmd("QUIT")


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, object]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append((self.path, body))
        refuse = self.path == "/check" and str(body.get("path", "")).endswith(".big")
        self.send_response(403 if refuse else 204)
        if refuse:
            self.send_header("Content-Length", "15")
            self.end_headers()
            self.wfile.write(b"quota exceeded\n")
        else:
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, object]]]]]:
    """An HTTP server on loopback that records the JSON documents POSTed to it."""
    _Receiver.received = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Receiver.received
    httpd.shutdown()
    httpd.server_close()


def test_url_hooks_get_a_json_document(servers, tree, receiver):
    base, received = receiver
    server = servers.start(tree, users=["alice:secret"], metrics_address="127.0.0.1:0", hooks=[
        f"login-failed:{base}/events", {"event": "upload", "url": f"{base}/events"},
        {"event": "pre-upload", "url": f"{base}/check"}])
    c = Raw(server.host, server.port)
    assert c.cmd("USER mallory").code == 331 and c.cmd("PASS guess").code == 530
    c.login()
    c.pasv()
    reply = c.cmd("STOR movie.big")
    assert reply.code == 550 and reply.text == "Upload refused: quota exceeded."
    assert store(c, "small.txt", b"12345") == (150, 226)
    until(lambda: hook_count(server, "upload", "ok") == 1, "the upload document was sent")
    documents = {(path, doc["event"]): doc for path, doc in received}
    failed = documents[("/events", "login-failed")]
    assert failed["user"] == "mallory" and failed["client_ip"] == "127.0.0.1" and failed["reason"] == "credentials"
    upload = documents[("/events", "upload")]
    assert upload["path"] == "/small.txt" and upload["size"] == 5 and upload["mode"] == "passive"
    assert upload["anonymous"] is False and upload["local_path"] == str(tree / "small.txt")
    assert [doc["path"] for path, doc in received if path == "/check"] == ["/movie.big", "/small.txt"]
    assert hook_count(server, "pre-upload", "refused") == 1
    c.cmd("QUIT")


@pytest.mark.parametrize(("toml", "error"), [
    ('[[hooks]]\nevent = "uplaod"\ncommand = ["true"]\n',
     "hooks[0].event: 'uplaod' is not one of upload, download, delete, rename, mkdir, rmdir, login-failed, "
     "pre-upload"),
    ('[[hooks]]\nevent = "upload"\n', "hooks[0]: needs a command or a url"),
    ('[[hooks]]\nevent = "upload"\nurl = "ftp://x/"\n', "hooks[0].url: 'ftp://x/' is not an http:// or https:// URL"),
    ('[[hooks]]\nevent = "upload"\ncommand = ["true"]\ntimeout = -1\n',
     "hooks[0].timeout: -1 is not within 0.1-3600 seconds"),
    ('[server]\nport = 0\n[[hooks]]\nevent = "upload"\ncommand = 5\n',
     "hooks[0].command: must be a list of strings (the program and its arguments; no shell)"),
    ('[[hooks]]\nevent = "upload"\ncommand = ["true"]\nshell = true\n',
     "hooks[0].shell: unknown key; a hook has event, command, url, timeout"),
])
def test_bad_hooks_are_one_line_errors(tmp_path, toml, error):
    cfg = tmp_path / "ftpkit.toml"
    cfg.write_text(toml)
    done = subprocess.run([*FTPKIT, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"ftpkit serve: {error}"]


def test_hooks_in_a_file_after_the_server_table_and_from_the_flag(tmp_path):
    from ftpkit.server.config import load_toml, validate

    cfg = tmp_path / "ftpkit.toml"
    cfg.write_text('[server]\nport = 0\n[[hooks]]\nevent = "upload"\ncommand = ["clamscan", "{local_path}"]\n'
                   'timeout = 120\n')
    values = load_toml(cfg)
    parsed = validate(values).hooks
    assert [(h.event, h.command, h.timeout) for h in parsed] == [("upload", ("clamscan", "{local_path}"), 120.0)]
    flagged = validate({"hooks": ["upload:/usr/bin/scan --quiet", "delete:http://127.0.0.1:9/x"]}).hooks
    assert flagged[0].command == ("/usr/bin/scan", "--quiet") and flagged[1].url == "http://127.0.0.1:9/x"
