"""`ftpkit shell`: a real pseudo-terminal session (type, read the screen, tab completion) and a stdin script."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import subprocess
import sys
import time

FTPKIT = [sys.executable, "-m", "ftpkit"]


class Terminal:
    """A program on a pseudo-terminal; ``expect`` reads the screen until a text appears (bounded by a deadline)."""

    def __init__(self, argv: list[str], cwd: str) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child
            os.chdir(cwd)
            os.environ["HOME"] = cwd
            os.environ["TERM"] = "xterm"
            os.execv(argv[0], argv)
        self.screen = ""

    def expect(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} did not appear; screen:\n{self.screen[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"program ended before {text!r}; screen:\n{self.screen[-2000:]}")
                self.screen += data.decode("utf-8", "replace")
        found = self.screen
        self.screen = self.screen[self.screen.index(text) + len(text):]
        return found

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            select.select([self.fd], [], [], 0.05)  # drain output while waiting
            with contextlib.suppress(OSError):
                os.read(self.fd, 65536)
        os.kill(self.pid, 9)
        raise AssertionError("shell did not exit")


def test_shell_on_a_terminal(server, tmp_path):
    term = Terminal([*FTPKIT, "shell", f"ftp://alice:secret@127.0.0.1:{server.port}/"], str(tmp_path))
    try:
        term.expect("ftp> ")
        term.type("ls\r")
        screen = term.expect("ftp> ")
        assert "日本語ファイル.txt" in screen and "random.bin" in screen
        term.type("get rand\t")  # tab completion of a remote name
        term.expect("random.bin")
        term.type("\r")
        screen = term.expect("ftp> ")
        assert "bytes received" in screen
        assert (tmp_path / "random.bin").read_bytes() == (server.root / "random.bin").read_bytes()
        term.type("passive\r")
        assert "Passive mode: off." in term.expect("ftp> ")
        term.type("put ran\t")  # completion of a local name
        term.expect("random.bin")
        term.type(" copy.bin\r")
        screen = term.expect("ftp> ")
        assert "226" in screen
        assert (server.root / "copy.bin").read_bytes() == (tmp_path / "random.bin").read_bytes()
        term.type("!echo local-$((40+2))\r")
        assert "local-42" in term.expect("ftp> ")
        term.type("get no-such-file\r")
        assert "550" in term.expect("ftp> ")
        term.type("bye\r")
        assert term.wait() == 0  # interactive: failures do not change the exit code
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(term.pid, 9)


def test_shell_reads_a_script_from_stdin(server, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\n")
    (tmp_path / "b.txt").write_bytes(b"two\n")
    script = "\n".join([
        "user alice secret",
        "binary",
        "mkdir scripted",
        "cd scripted",
        "mput *.txt",
        "ls",
        "rename a.txt c.txt",
        "mget *.txt",
        "ascii",
        "get hello-missing.txt",
        "cdup",
        "size random.bin",
        "passive off",
        "binary",
        "reget random.bin part.bin",
        "bye",
    ]) + "\n"
    (tmp_path / "part.bin").write_bytes((server.root / "random.bin").read_bytes()[:1000])
    result = subprocess.run([*FTPKIT, "shell", "-n", "-v", f"ftp://127.0.0.1:{server.port}"], input=script,
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    out = result.stdout
    assert sorted(p.name for p in (server.root / "scripted").iterdir()) == ["b.txt", "c.txt"]
    assert "a.txt\nb.txt\n" in out  # the NLST after mput
    assert (tmp_path / "c.txt").read_bytes() == b"one\n"
    assert re.search(r"^(?:<-+ )?550 .*hello-missing", out, re.M), out  # the missing file
    assert f"213 {1 << 20}" in out
    assert "350 Restarting at 1000" in out
    assert (tmp_path / "part.bin").read_bytes() == (server.root / "random.bin").read_bytes()
    assert result.returncode == 1  # one command failed in the script


def test_shell_script_without_failures_exits_zero(server, tmp_path):
    result = subprocess.run([*FTPKIT, "shell", f"ftp://alice:secret@127.0.0.1:{server.port}"],
                            input="cd sub\nget inner.txt\nbye\n", capture_output=True, text=True, cwd=tmp_path,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "inner.txt").read_bytes() == b"inner\n"


def test_shell_pwd_quotes_a_directory_with_quotes(server, tmp_path):
    """RFC 959 appendix II: the path a 257 reply names is in quotes, quotes inside doubled; the shell prints it so."""
    script = 'mkdir say "hi"\ncd say "hi"\npwd\nbye\n'
    result = subprocess.run([*FTPKIT, "shell", f"ftp://alice:secret@127.0.0.1:{server.port}"], input=script,
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (server.root / 'say "hi"').is_dir()
    assert '"/say ""hi""" is the current directory.' in result.stdout.splitlines()
