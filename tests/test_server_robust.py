"""A bad argument or a handler's unexpected error never ends a session silently: replies that echo client text
carry CR, LF and NUL as visible escapes, an unexpected exception is answered 451 (logged once with its traceback)
and the session goes on, and a conversation that cannot go on ends with 421."""

from __future__ import annotations

import logging
import socket

import pytest

from ftpkit.server.commands import COMMANDS, Spec
from ftpkit.server.storage import Download, LocalStorage
from rawftp import Raw, read_all


def _replies_then_noop(c: Raw, line: bytes) -> list:
    """Send ``line`` and a NOOP together; return every reply up to and including the NOOP's."""
    c.send(line + b"\r\nNOOP\r\n")
    replies = [c.reply()]
    while replies[-1].code != 200 or "NOOP" not in replies[-1].text:
        replies.append(c.reply())
    return replies


@pytest.mark.parametrize("line", [
    b"CWD a\x00b",
    b"SIZE a\x00",
    b"MDTM a\x00b",
    b"DELE a\x00",
    b"SIZE a\rb",
    b"RNFR x\ry",
    b"CWD x\ry",
    b"MKD d\x00\r\x00",
])
def test_nul_or_cr_in_an_argument_gets_one_reply_and_the_session_goes_on(server, line):
    c = Raw(server.host, server.port)
    c.login()
    replies = _replies_then_noop(c, line)
    assert len(replies) == 2, replies  # exactly one reply to the bad line, then the NOOP's
    assert replies[0].code in (451, 550), replies[0]
    assert c.cmd("SIZE hello.txt").text == "12"


@pytest.mark.parametrize("line, echoed", [
    (b"SIZE a\rb", "/a\\rb"),
    (b"RNFR x\ry", "/x\\ry"),
    (b"CWD x\ry", "/x\\ry"),
])
def test_replies_echo_a_lone_cr_as_a_visible_escape(server, line, echoed):
    c = Raw(server.host, server.port)
    c.login()
    reply = c.cmd(line + b"\r\n")
    assert reply.code == 550 and echoed in reply.text, reply


class _BrokenStorage(LocalStorage):
    """A storage with a bug: stat raises something no handler expects."""

    async def stat(self, vpath: str):  # type: ignore[no-untyped-def]
        if "boom" in vpath:
            raise RuntimeError("storage bug")
        return await super().stat(vpath)

    async def open_read(self, vpath: str, offset: int = 0) -> Download:
        download = await super().open_read(vpath, offset)
        return _BrokenDownload(download) if "boom" in vpath else download


class _BrokenDownload:
    """A download whose reads raise something no transfer code expects."""

    def __init__(self, download: Download) -> None:
        self.download = download
        self.size, self.offset = download.size, download.offset

    @property
    def file(self) -> None:
        return None  # no zero-copy: every byte goes through read()

    async def read(self, size: int) -> bytes:
        raise RuntimeError("read bug")

    async def close(self) -> None:
        await self.download.close()


def test_unexpected_handler_error_is_answered_451_logged_once_and_the_session_goes_on(servers, tree, caplog):
    server = servers.start(tree, storage_factory=_BrokenStorage, users=["alice:secret"])
    bystander = Raw(server.host, server.port)
    bystander.login()
    c = Raw(server.host, server.port)
    c.login()
    with caplog.at_level(logging.ERROR, logger="ftpkit.server"):
        reply = c.cmd("SIZE boom")
        assert reply.code == 451 and "Traceback" not in reply.text and "storage bug" not in reply.text, reply
        assert c.cmd("NOOP").code == 200
    tracebacks = [r for r in caplog.records if r.exc_info and r.exc_info[1] is not None]
    assert len(tracebacks) == 1 and isinstance(tracebacks[0].exc_info[1], RuntimeError)
    assert "SIZE" in tracebacks[0].getMessage()
    assert c.cmd("SIZE hello.txt").text == "12"
    assert bystander.cmd("SIZE hello.txt").text == "12"
    fresh = Raw(server.host, server.port)
    fresh.login()
    assert fresh.cmd("PWD").code == 257


def test_unexpected_error_inside_a_running_transfer_is_answered_451(servers, tree, caplog):
    (tree / "boom.txt").write_bytes(b"never sent\n")
    server = servers.start(tree, storage_factory=_BrokenStorage, users=["alice:secret"])
    c = Raw(server.host, server.port)
    c.login()
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    with caplog.at_level(logging.ERROR, logger="ftpkit.server"):
        c.send("RETR boom.txt")  # TYPE A: the file is read through the storage, which fails
        assert c.reply().code == 150
        reply = c.reply()
        assert reply.code == 451, reply
    assert read_all(data) == b""
    assert sum(1 for r in caplog.records if r.exc_info) == 1
    assert c.cmd("NOOP").code == 200
    c.cmd("TYPE I")
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send("RETR hello.txt")
    assert read_all(data) == b"hello\nworld\n"
    assert c.reply().code == 150 and c.reply().code == 226


async def _replies_twice(s, cmd) -> None:  # type: ignore[no-untyped-def]
    await s.reply(200, "first")
    await s.reply(200, "second")  # the command was answered already: the conversation refuses this


def test_a_conversation_that_cannot_go_on_ends_with_421(server, monkeypatch, caplog):
    monkeypatch.setitem(COMMANDS, "ALLO", Spec("ALLO", _replies_twice, True, "optional", False, "ALLO"))
    c = Raw(server.host, server.port)
    c.login()
    with caplog.at_level(logging.ERROR, logger="ftpkit.server"):
        c.send("ALLO 1")
        assert c.reply().text == "first"
        reply = c.reply()
        assert reply.code == 421, reply
        assert c.closed_by_server()
    assert sum(1 for r in caplog.records if r.exc_info) == 1
    other = Raw(server.host, server.port)
    other.login()
    assert other.cmd("NOOP").code == 200



@pytest.mark.parametrize("password", [b"\xc3\x28", b"caf\xe9", b"\xed\xa0\x80", b"ok\x00"])
def test_a_password_that_is_not_utf8_is_an_ordinary_wrong_password(server, caplog, password):
    # Found by tests/test_server_fuzz.py: argon2 could not encode the surrogate escapes such a password arrives with.
    c = Raw(server.host, server.port)
    assert c.cmd("USER alice").code == 331
    with caplog.at_level(logging.ERROR, logger="ftpkit.server"):
        assert c.cmd(b"PASS " + password + b"\r\n").code == 530
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    c.login()
