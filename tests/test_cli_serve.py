"""`ftpkit serve` and `ftpkit user add` as a user runs them: real processes, real signals."""

from __future__ import annotations

import ftplib
import io
import os
import re
import selectors
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import passive_range

FTPKIT = [sys.executable, "-m", "ftpkit"]


def start_serve(args: list[str], cwd: Path) -> tuple[subprocess.Popen, int, str]:
    proc = subprocess.Popen([*FTPKIT, "serve", "--port", "0", "--passive-ports", passive_range(), *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=20):
        proc.kill()
        raise AssertionError("ftpkit serve printed nothing within 20 s: " + proc.stderr.read())
    line = proc.stdout.readline()
    match = re.search(r"ftp://127\.0\.0\.1:(\d+)/", line)
    assert match, line
    return proc, int(match.group(1)), line


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_without_arguments_serves_cwd_read_only(tree):
    proc, port, line = start_serve([], tree)
    try:
        assert str(tree) in line and "anonymous read-only" in line and "passive ports" in line
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=10)
        ftp.login()
        assert "hello.txt" in ftp.nlst()
        with pytest.raises(ftplib.error_perm):
            ftp.storbinary("STOR x", io.BytesIO(b"x"))
        ftp.quit()
    finally:
        assert stop(proc) == 0


def test_serve_slash(tmp_path):
    (tmp_path / "made-for-slash.txt").write_bytes(b"slash\n")
    proc, port, line = start_serve(["/"], tmp_path)
    try:
        assert "anonymous read-only" in line
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=10)
        ftp.login()
        ftp.cwd(str(tmp_path))
        assert ftp.pwd() == str(tmp_path) and ftp.nlst() == ["made-for-slash.txt"]
        got = io.BytesIO()
        ftp.retrbinary("RETR made-for-slash.txt", got.write)
        assert got.getvalue() == b"slash\n"
        ftp.quit()
    finally:
        assert stop(proc) == 0


def test_sigint_closes_idle_sessions_and_exits_zero(tree):
    proc, port, _ = start_serve(["--user", "bob:pw"], tree)
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=10)
    ftp.login("bob", "pw")
    assert stop(proc, signal.SIGINT) == 0
    with pytest.raises((ftplib.error_temp, EOFError, ConnectionError)):
        ftp.voidcmd("NOOP")  # the idle session got 421 and was closed


def test_sigterm_lets_a_running_transfer_finish(tree):
    size = 64 << 20
    (tree / "big.bin").write_bytes(os.urandom(1 << 16) * (size >> 16))
    proc, port, _ = start_serve(["--user", "bob:pw", "--shutdown-grace", "30"], tree)
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=20)
    ftp.login("bob", "pw")
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("RETR big.bin")
    first = conn.recv(1 << 16)
    proc.send_signal(signal.SIGTERM)  # while the transfer is under way
    received = len(first)
    while chunk := conn.recv(1 << 20):
        received += len(chunk)
    conn.close()
    assert ftp.voidresp().startswith("226")
    assert received == size
    assert proc.wait(20) == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "abc"], "port: 'abc' is not a whole number from 0 to 65535"),
    (["--passive-ports", "50100-50000"], "passive_ports: '50100-50000' is not low-high within 1024-65535"),
    (["--host", "not-an-ip"], "host: 'not-an-ip' is not an IP address"),
    (["--masquerade-address", "10.0.0"], "masquerade_address: '10.0.0' is not an IP address"),
    (["--user", "alice"], "users: 'alice'... is not NAME:PASSWORD"),
    (["--idle-timeout", "-1"], "idle_timeout: '-1' is not within"),
    (["--log-format", "xml"], "log_format: 'xml' is not one of text, json"),
    (["/does/not/exist"], "root: '/does/not/exist' is not a directory"),
    (["--config", "/does/not/exist.toml"], "config: '/does/not/exist.toml' does not exist"),
    (["--no-such-flag"], "No such option"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, args, message):
    result = subprocess.run([*FTPKIT, "serve", *args], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("values", "message"), [
    ({"port": "abc"}, "port: 'abc' is not a whole number from 0 to 65535"),
    ({"port": 70000}, "port: 70000 is not within 0-65535"),
    ({"passive_ports": (50100, 50000)}, "passive_ports: '50100-50000' is not low-high within 1024-65535"),
    ({"host": "not-an-ip"}, "host: 'not-an-ip' is not an IP address"),
    ({"max_sessions": 0}, "max_sessions: 0 is not within 1-100000"),
    ({"anonymous": "maybe"}, "anonymous: 'maybe' is not true or false"),
    ({"anonymous_write": None}, "anonymous_write: None is not true or false"),
    ({"idle_timeout": -1}, "idle_timeout: -1 is not within 0.001-86400 seconds"),
    ({"banner": "two\nlines"}, "banner: must be one line of at most 200 characters"),
    ({"tls": "required"}, "tls: 'required' needs tls_cert and tls_key (PEM files; `ftpkit cert` writes a pair)"),
    ({"masquerade_address": "::1"}, "masquerade_address: must be an IPv4 address (it is announced in 227 replies)"),
    ({"root": Path("/does/not/exist")}, "root: '/does/not/exist' is not a directory"),
])
def test_library_construction_is_validated_with_the_same_lines(values, message):
    from ftpkit.server.config import ConfigError, ServerConfig, validate

    with pytest.raises(ConfigError) as built:
        ServerConfig(**values)
    assert str(built.value) == message
    if None not in values.values():  # validate() leaves None out (an unset flag)
        with pytest.raises(ConfigError) as validated:
            validate(values)
        assert str(validated.value) == message


def test_library_construction_normalises(tmp_path):
    from ftpkit.server.config import QuickUser, ServerConfig

    cfg = ServerConfig(root=str(tmp_path / "."), passive_ports="40000-40010", port="2121", anonymous="no",
                       users="bob:pw", masquerade_map={"10.0.0.0/8": "203.0.113.1"}, idle_timeout="5")
    assert cfg.root == tmp_path and cfg.passive_ports == (40000, 40010) and cfg.port == 2121
    assert cfg.anonymous is False and cfg.users == (QuickUser("bob", "pw"),) and cfg.idle_timeout == 5.0
    assert str(cfg.masquerade_map[0][0]) == "10.0.0.0/8"
    import dataclasses

    assert dataclasses.replace(cfg, port=0) == dataclasses.replace(cfg, port="0")  # rebuilt, checked again


def test_a_setting_without_an_entry_in_the_table_fails():
    import dataclasses

    from ftpkit.server.config import FIELD_NAMES, SETTINGS, ConfigError, ServerConfig

    assert set(SETTINGS) == FIELD_NAMES
    extended = dataclasses.make_dataclass("Extended", [("colour", bool, False)], bases=(ServerConfig,), frozen=True,
                                          slots=True)
    with pytest.raises(ConfigError, match=r"^colour: has no entry in ftpkit\.server\.config\.SETTINGS"):
        extended()


def test_every_setting_has_its_meaning_in_serve_help_and_in_the_readme():
    from ftpkit.server.config import FIELD_NAMES, SETTINGS

    result = subprocess.run([*FTPKIT, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    shown = "".join(result.stdout.split())  # click wraps lines (also after a hyphen)
    assert "seeREADME" not in shown
    for name in FIELD_NAMES - {"root"}:  # root is the DIR argument
        help_text = SETTINGS[name].help
        assert help_text.strip() and "\n" not in help_text, name
        assert "".join(help_text.split()) in shown, name
    assert "controlport(0:anyfreeport)(default2121)" in shown and "(default50000-50100)" in shown
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert not [name for name in sorted(FIELD_NAMES) if f"`{name}`" not in readme]


def test_bad_config_file_values(tmp_path):
    cfg = tmp_path / "ftpkit.toml"
    cfg.write_text('[server]\npassive_ports = "1-2"\n')
    result = subprocess.run([*FTPKIT, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.strip() == (
        "ftpkit serve: passive_ports: '1-2' is not low-high within 1024-65535")
    cfg.write_text('colour = "blue"\n')
    result = subprocess.run([*FTPKIT, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith("ftpkit serve: colour: unknown setting")
    cfg.write_text("this is = = not toml\n")
    result = subprocess.run([*FTPKIT, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_config_file_and_flags(tree, tmp_path):
    cfg = tmp_path / "ftpkit.toml"
    cfg.write_text(f'[server]\nroot = "{tree}"\nanonymous_write = true\nmasquerade_address = "203.0.113.7"\n')
    proc, port, line = start_serve(["--config", str(cfg)], tmp_path)
    try:
        assert "anonymous read-write" in line and "203.0.113.7" in line
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", port, timeout=10)
        ftp.login()
        ftp.mkd("made-by-anonymous")
        assert (tree / "made-by-anonymous").is_dir()
        assert "203,0,113,7" in ftp.sendcmd("PASV")
    finally:
        assert stop(proc) == 0


def test_user_add_writes_hash_and_login_works(tree, tmp_path):
    users = tmp_path / "users.toml"
    (tree / "carol").mkdir()
    result = subprocess.run([*FTPKIT, "user", "add", "carol", "--file", str(users), "--home", "carol",
                             "--password-stdin"], input="s3cret-パス\n", capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    text = users.read_text()
    assert "s3cret" not in text
    entry = tomllib.loads(text)["users"]["carol"]
    assert entry["password_hash"].startswith("$argon2id$") and entry["write"] is True
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    proc, port, _ = start_serve([str(tree), "--users-file", str(users), "--no-anonymous"], tmp_path)
    try:
        ftp = ftplib.FTP(encoding="utf-8")
        ftp.connect("127.0.0.1", port, timeout=10)
        ftp.login("carol", "s3cret-パス")
        assert ftp.pwd() == "/"
        ftp.storbinary("STOR in-home.txt", io.BytesIO(b"c"))
        assert (tree / "carol" / "in-home.txt").read_bytes() == b"c"
        ftp.quit()
        bad = ftplib.FTP()
        bad.connect("127.0.0.1", port, timeout=10)
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            bad.login("anonymous", "x")
    finally:
        assert stop(proc) == 0


def test_json_logs_and_xferlog(tree, tmp_path):
    xferlog = tmp_path / "xferlog"
    proc, port, _ = start_serve(["--log-format", "json", "--xferlog", str(xferlog)], tree)
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=10)
    ftp.login()
    ftp.retrbinary("RETR hello.txt", lambda b: None)
    ftp.quit()
    assert stop(proc) == 0
    import json

    records = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    transfers = [r["transfer"] for r in records if "transfer" in r]
    assert transfers and transfers[0]["path"] == "/hello.txt" and transfers[0]["bytes"] == 12
    assert transfers[0]["mode"] == "passive" and transfers[0]["complete"] is True
    fields = xferlog.read_text().split()
    assert fields[-14:][2:5] == ["127.0.0.1", "12", "/hello.txt"] and fields[-1] == "c"
