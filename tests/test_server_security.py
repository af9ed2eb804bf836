"""RFC 2577 and secure defaults: bounce and hijack refused, no escape from the home, anonymous read-only, bad
input answered with 5xx while the session goes on, logins that do not reveal names."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from rawftp import Raw, read_all


def raw(server, **kw) -> Raw:
    return Raw(server.host, server.port, **kw)


@pytest.mark.parametrize("line", [
    "PORT 127,0,0,2,156,64",         # another host (127.0.0.2 is on loopback, but it is not the client)
    "PORT 10,1,2,3,156,64",
    "PORT 127,0,0,1,0,21",           # port 21 < 1024
    "EPRT |1|127.0.0.2|40000|",
    "EPRT |1|127.0.0.1|1023|",
])
def test_port_bounce_refused(server, line):
    c = raw(server)
    c.login()
    reply = c.cmd(line)
    assert reply.code == 501 and "RFC 2577" in reply.text
    # nothing was announced: a transfer now has no data connection
    assert c.cmd("RETR hello.txt").code == 425
    assert c.cmd("NOOP").code == 200


def test_port_to_own_address_accepted(server):
    c = raw(server)
    c.login()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        reply = c.cmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}")
        assert reply.code == 200, reply
        c.send("RETR hello.txt")
        conn, addr = listener.accept()
        assert addr[0] == "127.0.0.1"
        assert read_all(conn) == b"hello\r\nworld\r\n"  # TYPE A is the default
        assert c.reply().code == 150
        assert c.reply().code == 226


def test_passive_port_hijack_refused(server, caplog):
    c = raw(server)
    c.login()
    host, port = c.pasv()
    # another host (127.0.0.2) connects to the announced port first: the server closes it without data
    thief = socket.create_connection((host, port), timeout=10, source_address=("127.0.0.2", 0))
    with caplog.at_level(logging.WARNING, logger="ftpkit.server"):
        assert read_all(thief) == b""
    assert any("refused a connection from 127.0.0.2" in r.getMessage() for r in caplog.records)
    # the real client still gets its data
    c.cmd("TYPE I")
    data = socket.create_connection((host, port), timeout=10)
    c.send("RETR random.bin")
    got = read_all(data)
    assert c.reply().code == 150
    assert c.reply().code == 226
    assert got == (server.root / "random.bin").read_bytes()


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/../../etc/passwd", "sub/../../../etc/passwd"])
def test_dotdot_cannot_leave_home(server, path):
    c = raw(server)
    c.login()
    assert c.cmd(f"SIZE {path}").code == 550
    assert c.cmd("CWD ../../..").code == 250
    assert c.cmd("PWD").text.startswith('"/"')
    assert c.cmd("SIZE hello.txt").text == "12"  # still in the home


def test_root_slash_serves_the_whole_tree_read_only(servers, tmp_path):
    """Serving `/` (as `ftpkit serve /` does): every path is inside the home, so a file made under /tmp is listed
    and retrieved by its real path, `..` stays at `/`, and anonymous is still read-only."""
    (tmp_path / "from-slash.txt").write_bytes(b"served from /\n")
    server = servers.start(Path("/"))
    c = raw(server)
    c.login("anonymous", "me@example.com")
    assert c.cmd(f"SIZE {tmp_path}/from-slash.txt").text == "14"
    assert c.cmd(f"CWD {tmp_path}").code == 250
    assert c.cmd("PWD").text.startswith(f'"{tmp_path}"')
    assert c.cmd("CWD ../../../../../../..").code == 250
    assert c.cmd("PWD").text.startswith('"/"')
    c.cmd("TYPE I")
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send(f"NLST {tmp_path}")
    assert read_all(data).decode().split() == ["from-slash.txt"]
    assert c.reply().code == 150 and c.reply().code == 226
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send(f"RETR {tmp_path}/from-slash.txt")
    assert read_all(data) == b"served from /\n"
    assert c.reply().code == 150 and c.reply().code == 226
    assert c.cmd(f"STOR {tmp_path}/new.txt").code == 550 and not (tmp_path / "new.txt").exists()


def test_sibling_with_the_home_as_prefix_is_outside(servers, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "home-other").mkdir()
    (tmp_path / "home-other" / "secret.txt").write_bytes(b"secret")
    os.symlink(tmp_path / "home-other", home / "link")
    server = servers.start(home, users=["alice:secret"])
    c = raw(server)
    c.login()
    assert c.cmd("SIZE link/secret.txt").code == 550
    assert c.cmd("CWD link").code == 550


@pytest.mark.parametrize("line", [b"SIZE a\x00b\r\n", b"CWD a\x00b\r\n", b"MLST \x00\r\n", b"DELE x\x00\r\n"])
def test_nul_in_a_path_is_550_and_session_goes_on(server, line):
    c = raw(server)
    c.login()
    reply = c.cmd(line)
    assert reply.code == 550 and "NUL" in reply.text, reply
    assert c.cmd("SIZE hello.txt").code == 213


def test_symlink_escape_refused(servers, tree, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    os.symlink(outside, tree / "escape-dir")
    os.symlink(outside / "secret.txt", tree / "escape-file")
    os.symlink(tree / "hello.txt", tree / "inside-link")
    server = servers.start(tree, users=["alice:secret"])
    c = raw(server)
    c.login()
    assert c.cmd("CWD escape-dir").code == 550
    assert c.cmd("SIZE escape-dir/secret.txt").code == 550
    assert c.cmd("SIZE escape-file").code == 550
    c.pasv()
    assert c.cmd("RETR escape-file").code == 550
    assert c.cmd("STOR escape-dir/new.txt").code == 550
    assert not (outside / "new.txt").exists()
    assert c.cmd("SIZE inside-link").text == "12"  # a link that stays inside works


def test_anonymous_read_only_by_default(server):
    c = raw(server)
    c.login("anonymous", "me@example.com")
    for line in ("STOR x", "APPE hello.txt", "STOU", "MKD d", "RMD sub", "DELE hello.txt", "RNFR hello.txt"):
        reply = c.cmd(line)
        assert reply.code == 550, (line, reply)
    assert (server.root / "hello.txt").exists() and (server.root / "sub").is_dir()


def test_anonymous_write_when_enabled(servers, tree):
    server = servers.start(tree, anonymous_write=True)
    c = raw(server)
    c.login("ftp", "x")
    assert c.cmd("MKD uploads").code == 257
    assert (tree / "uploads").is_dir()


def test_anonymous_can_be_disabled(servers, tree):
    server = servers.start(tree, anonymous=False)
    c = raw(server)
    assert c.cmd("USER anonymous").code == 331
    assert c.cmd("PASS x").code == 530


@pytest.mark.parametrize("line", [
    b"\x00\x01\x02garbage\r\n",
    b"NOT-A-VERB x\r\n",
    b"\r\n",
    b"A" * 10000 + b"\r\n",
    b"RETR " + b"x" * 5000 + b"\r\n",
    b"\xff\xfb\x01\xff\xf4\xff\xf2NOOP\r\n",  # Telnet IAC WILL ECHO, IAC IP, IAC DM before a command
])
def test_bad_input_gets_5xx_and_session_goes_on(server, line):
    c = raw(server)
    c.login()
    reply = c.cmd(line)
    if line.endswith(b"NOOP\r\n"):
        assert reply.code == 200  # Telnet sequences are tolerated
    else:
        assert 500 <= reply.code <= 502, reply
    assert c.cmd("NOOP").code == 200
    assert c.cmd("SIZE hello.txt").code == 213


def test_command_errors_and_sequence(server):
    c = raw(server)
    assert c.cmd("PASS x").code == 503
    assert c.cmd("LIST").code == 530
    assert c.cmd("XYZZY").code == 502
    assert c.cmd("type i").code == 200  # verbs are case-insensitive
    c.login()
    assert c.cmd("RNTO b").code == 503
    assert c.cmd("RETR").code == 501
    assert c.cmd("TYPE X").code == 501
    assert c.cmd("TYPE E").code == 504
    assert c.cmd("MODE B").code == 504
    assert c.cmd("STRU R").code == 504
    assert c.cmd("REST abc").code == 501
    assert c.cmd("RNFR hello.txt").code == 350
    assert c.cmd("NOOP").code == 200
    assert c.cmd("RNTO renamed.txt").code == 503  # RNTO must follow RNFR directly


def test_user_does_not_reveal_names(server):
    c = raw(server)
    known = c.cmd("USER alice")
    unknown = c.cmd("USER nobody-here")
    assert known.code == unknown.code == 331 and known.text == unknown.text
    assert c.cmd("PASS wrong").code == 530


def test_failed_logins_disconnect(servers, tree, caplog):
    server = servers.start(tree, users=["alice:secret"], max_login_failures=2)
    c = raw(server)
    assert c.cmd("USER alice").code == 331
    assert c.cmd("PASS wrong1").code == 530
    assert c.cmd("USER alice").code == 331
    assert c.cmd("PASS wrong2").code == 421
    assert c.closed_by_server()
