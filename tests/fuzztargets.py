"""Fuzz targets for the parsers of untrusted input, shared by the coverage-guided campaign (``scripts/fuzz.py``,
atheris) and the suite's deterministic replay and property tests (``tests/test_fuzz_parsers.py``).

Each target takes bytes and either returns or raises :class:`Finding` (an invariant broken) or any unexpected
exception; the codec's own error (``ProtocolError`` and its subclasses, ``ValueError`` where a parser documents it,
``NotClientHello``) is part of normal operation. The first bytes of an input are parameters (a line limit, a chunk
size, a mode) so that one corpus file reaches every configuration; :func:`seeds` builds the seed corpus from the
project's real captures (``tests/fuzz/captures``, recorded from real clients by ``scripts/record-fuzz-seeds.sh``),
the dialogues in them, and the worked examples of the source articles (``tests/fuzz/corpus/*/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ftpkit.capture import Options, analyze
from ftpkit.capture.packets import ip_offset, tcp_segment
from ftpkit.capture.reassembly import MAX_PENDING, Reassembler
from ftpkit.capture.records import CaptureError, RecordReader
from ftpkit.capture.render_json import to_json
from ftpkit.protocol import (
    BadLine,
    ClientConversation,
    Command,
    CommandError,
    HostPortError,
    LineTooLong,
    MalformedReply,
    Reply,
    ReplyError,
    ServerConversation,
    explain_port,
    format_command,
    format_eprt,
    format_pasv,
    format_port,
    format_reply,
    parse_eprt,
    parse_epsv,
    parse_epsv_arg,
    parse_pasv,
    parse_port,
)
from ftpkit.protocol.commands import CommandReader
from ftpkit.protocol.conversation import TRANSFER_COMMANDS, Answer, Phase
from ftpkit.protocol.hostport import classify_announced
from ftpkit.protocol.listing import parse_facts, parse_mlst_time
from ftpkit.protocol.listparse import Entry, parse_list_line, parse_listing, parse_mlsx_line, plain_name
from ftpkit.protocol.proxyproto import ProxyHeaderError, format_v1, format_v2, parse_proxy_header
from ftpkit.protocol.replies import ReplyReader, printable
from ftpkit.tls_hello import ClientHello, NotClientHello, read_client_hello

FUZZ = Path(__file__).resolve().parent / "fuzz"
CAPTURES = FUZZ / "captures"
CORPUS = FUZZ / "corpus"
SEED_FTP_PORT = 2197  # the control port of the recorded captures
NOW = 1_764_000_000.0  # a fixed "now" for listing dates without a year


class Finding(AssertionError):
    """An invariant a parser broke: a bug, whatever the input."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Finding(what)


def _params(data: bytes, n: int) -> tuple[bytes, bytes]:
    head = data[:n].ljust(n, b"\0")
    return head, data[n:]


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


# --- commands: CommandReader and ServerConversation (the server side of a control connection) ----------------------

def fuzz_commands(data: bytes) -> None:
    head, body = _params(data, 2)
    max_line = 16 + head[0] * 16  # 16 .. 4096
    conv = ServerConversation(max_line)
    events = []
    for chunk in _chunks(body, 1 + head[1]):
        conv.receive_data(chunk)
        check(conv.reader.buffered <= max_line + 1, f"the reader holds {conv.reader.buffered} bytes > {max_line + 1}")
        while (event := conv.next_event()) is not None:
            events.append(event)
            _answer(conv, event)
    check(len(events) <= body.count(b"\n"), "more events than lines")
    for event in events:
        if isinstance(event, Command):
            check(1 <= len(event.verb) <= 8 and event.verb.isascii() and event.verb.isalpha()
                  and event.verb == event.verb.upper(), f"bad verb {event.verb!r}")
            _round_trip_command(event, max_line)
        else:
            check(isinstance(event, BadLine | LineTooLong), f"unknown event {event!r}")


def _answer(conv: ServerConversation, event: object) -> None:
    """Answer the way a server does: 150 then 226 for a transfer command, one final reply for the rest."""
    if conv.phase is not Phase.READY:
        return
    if isinstance(event, Command) and event.verb in TRANSFER_COMMANDS:
        out = conv.reply(Reply.of(150, "Opening."), event)
        check(out.startswith(b"150 "), "the 150 reply was not formatted")
    code = 221 if isinstance(event, Command) and event.verb == "QUIT" else 200
    conv.reply(Reply.of(code, "ok"), event)  # type: ignore[arg-type]


def _round_trip_command(command: Command, max_line: int) -> None:
    try:
        wire = format_command(command.verb, command.arg)
    except CommandError:
        return  # an argument with a CR in it (or one that cannot be encoded) cannot be sent again: refused
    again = CommandReader(max(max_line, len(wire))).feed(wire)
    check(again == [command], f"{command!r} formatted as {wire[:80]!r} reads back as {again!r}")


# --- replies: ReplyReader and ClientConversation (the client side, and the capture analyzer) ----------------------

def fuzz_replies(data: bytes) -> None:
    head, body = _params(data, 2)
    max_reply = 64 + head[0] * 64
    conv = ClientConversation(max_reply)
    for verb in ("USER", "PASS", "PASV", "RETR", "STAT", "LIST", "QUIT"):
        conv.sent(Command(verb))
    for chunk in _chunks(body, 1 + head[1]):
        for out in conv.receive_data(chunk):
            if isinstance(out, MalformedReply):
                check(len(out.raw) <= max(200, max_reply), f"a malformed line of {len(out.raw)} bytes was kept")
                continue
            check(isinstance(out, Answer), f"unknown event {out!r}")
            _round_trip_reply(out.reply)


def _round_trip_reply(reply: Reply) -> None:
    check(100 <= reply.code <= 599 and bool(reply.lines), f"bad reply {reply!r}")
    try:
        wire = format_reply(reply)
    except ReplyError:
        pass  # a line with a lone CR in it: refused, as it must be
    else:
        again = ReplyReader(len(wire) + 1).feed(wire)
        check(len(again) == 1 and isinstance(again[0], Reply) and again[0].code == reply.code
              and len(again[0].lines) == len(reply.lines), f"{reply!r} reads back as {again!r}")
    safe = Reply(reply.code, tuple(printable(line) for line in reply.lines))
    format_reply(safe)  # echoing a peer's text through printable() never fails


# --- host-port codecs ---------------------------------------------------------------------------------------------

def fuzz_hostport(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for parse, fmt in ((parse_port, format_port), (parse_pasv, format_pasv), (parse_eprt, format_eprt)):
        try:
            hp = parse(text)
        except HostPortError:
            continue
        check(0 <= hp.port <= 65535, f"{parse.__name__}({text[:60]!r}) gave port {hp.port}")
        explain_port(hp.port)
        classify_announced(hp.host, "192.0.2.1")
        try:
            again = parse(fmt(hp))
        except HostPortError as exc:
            raise Finding(f"{parse.__name__}: {hp} formats as something it cannot read back: {exc}") from None
        check(again == hp, f"{parse.__name__}: {hp} reads back as {again}")
    try:
        port = parse_epsv(text)
        check(0 <= port <= 65535, f"parse_epsv gave port {port}")
    except HostPortError:
        pass
    with contextlib.suppress(HostPortError):
        parse_epsv_arg(text)


# --- listings: LIST (Unix and DOS) and MLSD/MLST lines --------------------------------------------------------------

def fuzz_listing(data: bytes) -> None:
    head, body = _params(data, 1)
    text = body.decode("utf-8", "surrogateescape")
    entries = parse_listing(text, NOW, mlsd=bool(head[0] & 1))
    check(all(isinstance(e, Entry) and plain_name(e.name) for e in entries), "an entry whose name is no plain name")
    for line in text.splitlines():
        for parse in (lambda line: parse_list_line(line, NOW), parse_mlsx_line):
            entry = parse(line)
            check(entry is None or (isinstance(entry, Entry) and entry.type in ("file", "dir", "link", "other")),
                  f"bad entry {entry!r}")
        with contextlib.suppress(ValueError):
            parse_facts(line)
        with contextlib.suppress(ValueError):
            parse_mlst_time(line.strip())


# --- TLS ClientHello screen ---------------------------------------------------------------------------------------

def fuzz_tls_hello(data: bytes) -> None:
    try:
        hello = read_client_hello(data)
    except NotClientHello:
        return
    check(hello is None or isinstance(hello, ClientHello), f"bad result {hello!r}")
    if hello is not None and hello.alpn is not None:
        check(all(1 <= len(name) <= 255 for name in hello.alpn), "an ALPN name of a length TLS cannot carry")


# --- PROXY protocol header ---------------------------------------------------------------------------------------

def fuzz_proxy_header(data: bytes) -> None:
    """What the accept path does: parse the bytes received so far, as they grow. A header found in the whole input
    must be "incomplete" (None) in every shorter prefix, never another header or an error, and must format back."""
    try:
        header = parse_proxy_header(data)
    except ProxyHeaderError as exc:
        check("\n" not in str(exc), "an error of more than one line")
        return
    if header is None:
        return
    check(0 < header.length <= len(data), f"length {header.length} of {len(data)} bytes")
    for cut in sorted({0, 1, 12, 15, 16, header.length // 2, header.length - 1}):
        if cut < header.length:
            check(parse_proxy_header(data[:cut]) is None, f"a prefix of {cut} bytes is not incomplete")
    if header.source is not None and header.destination is not None and header.protocol in ("TCP4", "TCP6"):
        again = format_v1(header.source, header.destination) if header.version == 1 else \
            format_v2(header.source, header.destination)
        back = parse_proxy_header(again)
        check(back is not None and (back.source, back.destination) == (header.source, header.destination),
              "addresses do not survive a format/parse round trip")


# --- TCP reassembly -------------------------------------------------------------------------------------------------

def fuzz_reassembly(data: bytes) -> None:
    """Segments cut from one known byte stream, in the order, overlap and repetition the input says; the bytes the
    reassembler delivers must be that stream, in order, with the holes it skipped counted exactly."""
    head, ops = _params(data, 5)
    isn = int.from_bytes(head[:4], "big")  # sequence numbers wrap around 2**32 when it is high
    stream = bytes((i * 7 + head[4]) & 0xFF for i in range(4096))
    r = Reassembler()
    start: int | None = None  # the stream position of the first byte the reassembler will deliver
    if head[4] & 1:
        r.syn((isn - 1) % (1 << 32))
        start = 0
    out: list[tuple[int, bytes]] = []
    for op in _chunks(ops, 4):
        if len(op) < 4:
            break
        kind, offset, length = op[0] % 4, int.from_bytes(op[1:3], "big") % len(stream), 1 + op[3] * 4
        seq = (isn + offset) % (1 << 32)
        if kind in (0, 1):
            if start is None:
                start = offset
            chunks = r.segment(seq, stream[offset:offset + length])
        elif kind == 2:
            chunks = r.acked(seq)
        else:
            chunks = r.skip_gap()
        out += [(c.gap, c.data) for c in chunks]
        check(r.pending_bytes == sum(len(p) for p in r.pending.values()), "pending_bytes is off")
    out += [(c.gap, c.data) for c in r.skip_gap()]
    position = start or 0
    for gap, chunk in out:
        position += gap
        check(bool(chunk), "an empty chunk")
        check(chunk == stream[position:position + len(chunk)], f"the bytes delivered at {position} are not the stream")
        position += len(chunk)
    check(r.delivered == sum(len(c) for _, c in out), "delivered does not count what was delivered")
    check(r.missing == sum(g for g, _ in out), "missing does not count the holes skipped")


def fuzz_reassembly_raw(data: bytes) -> None:
    """Arbitrary sequence numbers, acknowledgements and payloads: no exception, bounded waiting bytes."""
    r = Reassembler()
    pos = 0
    while pos + 6 <= len(data):
        kind, seq, size = data[pos], int.from_bytes(data[pos + 1:pos + 5], "big"), data[pos + 5]
        payload = data[pos + 6:pos + 6 + size]
        pos += 6 + size
        if kind % 5 == 0:
            r.syn(seq)
        elif kind % 5 == 1:
            r.acked(seq)
        elif kind % 5 == 2:
            r.skip_gap()
        else:
            r.segment(seq, payload)
        check(r.pending_bytes <= MAX_PENDING + 255, f"{r.pending_bytes} bytes wait")


# --- captures: the whole analyzer on a file -------------------------------------------------------------------------

_SCRATCH = Path(os.environ.get("FTPKIT_FUZZ_TMP", "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()))


def fuzz_capture(data: bytes) -> None:
    fd, name = tempfile.mkstemp(prefix="ftpkit-fuzz-", suffix=".pcap", dir=_SCRATCH)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        report = analyze([name], Options(ftp_ports=frozenset({21, 990, SEED_FTP_PORT}), max_flows=64, max_log=200))
        json.dumps(to_json(report))
        for session in report.sessions:
            check(len(session.log) <= 200 + 1, f"a session kept {len(session.log)} log lines > max_log")
        reader = RecordReader(name)
        try:
            for _ts, linktype, frame in reader:
                tcp_segment(linktype, frame)
        except CaptureError:
            pass
    finally:
        os.unlink(name)


# --- seeds ----------------------------------------------------------------------------------------------------------

def _capture_files() -> list[Path]:
    return sorted(p for p in CAPTURES.iterdir() if p.is_file())


def _streams(path: Path) -> dict[str, list[bytes]]:
    """The payloads of a capture's control connection, per direction (by the project's own readers)."""
    out: dict[str, list[bytes]] = {"client": [], "server": []}
    for _ts, linktype, frame in RecordReader(path):
        seg = tcp_segment(linktype, frame)
        if seg is None or not seg.payload:
            continue
        if seg.dport == SEED_FTP_PORT:
            out["client"].append(seg.payload)
        elif seg.sport == SEED_FTP_PORT:
            out["server"].append(seg.payload)
    return out


def _dialogues() -> Iterator[dict[str, list[bytes]]]:
    for path in _capture_files():
        if path.suffix == ".pcap":
            yield _streams(path)


def _committed(target: str) -> list[bytes]:
    directory = CORPUS / target
    return [p.read_bytes() for p in sorted(directory.iterdir())] if directory.is_dir() else []


def _lines(blobs: list[bytes]) -> list[bytes]:
    return sorted({line for blob in blobs for line in blob.splitlines(keepends=True) if line.strip()})


def _relinked(path: Path) -> Iterator[bytes]:
    """One real capture re-wrapped in every link type and file format the reader takes."""
    from pcapbuild import (  # the writers the analyzer tests use
        LINUX_SLL,
        LINUX_SLL2,
        LOOP,
        NULL,
        RAW,
        Frame,
        link_frame,
        pcap_header,
        pcap_record,
        pcapng_bytes,
    )
    frames = []
    for ts, linktype, frame in RecordReader(path):
        offset = ip_offset(linktype, frame)
        if offset >= 0:
            frames.append((ts, frame[offset:]))
    for linktype in (NULL, LOOP, RAW, LINUX_SLL, LINUX_SLL2):
        wrapped = [Frame(ts, link_frame(linktype, ip)) for ts, ip in frames]
        yield pcap_header(linktype, nano=linktype == RAW) + b"".join(pcap_record(f, linktype == RAW) for f in wrapped)
    yield pcapng_bytes([1, LINUX_SLL2], [Frame(ts, link_frame(LINUX_SLL2, ip), 1) for ts, ip in frames])
    big_endian = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, RAW)
    yield big_endian + b"".join(struct.pack(">IIII", int(ts), int(ts % 1 * 1e6), len(ip), len(ip)) + ip
                                for ts, ip in frames)


def seeds(target: str) -> list[bytes]:
    """The seed corpus of a target, deterministic: real dialogues and captures, then the committed inputs."""
    dialogues = list(_dialogues())
    client = [b"".join(d["client"]) for d in dialogues]
    server = [b"".join(d["server"]) for d in dialogues]
    if target == "commands":
        out = [bytes([255, 0]) + c for c in client] + [bytes([0, 2]) + c for c in client]
        out += [bytes([2, 0]) + line for line in _lines(client)]
    elif target == "replies":
        out = [bytes([255, 255]) + s for s in server] + [bytes([1, 3]) + s for s in server]
        out += [bytes([16, 0]) + line for line in _lines(server)]
    elif target == "hostport":
        out = [line.split(b" ", 1)[-1].strip() for line in _lines(client) + _lines(server)
               if line[:4] in (b"PORT", b"EPRT", b"227 ", b"229 ")]
    elif target in ("listing", "tls_hello", "proxy_header"):
        out = []
    elif target == "capture":
        out = [p.read_bytes() for p in _capture_files()]
        out += [blob for p in _capture_files() if p.suffix == ".pcap" and "abort" not in p.name
                for blob in _relinked(p)]
    elif target in ("reassembly", "reassembly_raw"):
        out = [bytes(range(5)) + bytes([0, 0, 0, 10, 0, 0, 40, 5, 1, 0, 20, 3, 2, 0, 80, 0, 3, 0, 0, 0]),
               b"\xff\xff\xff\xf0\x01" + bytes([0, 0, 0, 200, 1, 0, 0, 50, 0, 1, 0, 255, 2, 2, 0, 0])]
    else:
        raise KeyError(target)
    return out + _committed(target)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    summary: str


TARGETS = {t.name: t for t in (
    Target("commands", fuzz_commands, "CommandReader + ServerConversation, command round trip"),
    Target("replies", fuzz_replies, "ReplyReader + ClientConversation, reply round trip, printable()"),
    Target("hostport", fuzz_hostport, "PORT, 227, EPRT, 229 and EPSV codecs, format/parse round trip"),
    Target("listing", fuzz_listing, "LIST (Unix, DOS) and MLSD/MLST parsers"),
    Target("tls_hello", fuzz_tls_hello, "the server's ClientHello screen (ALPN)"),
    Target("proxy_header", fuzz_proxy_header, "PROXY protocol v1/v2 headers as the accept path reads them"),
    Target("reassembly", fuzz_reassembly, "TCP reassembly against a known stream"),
    Target("reassembly_raw", fuzz_reassembly_raw, "TCP reassembly on arbitrary segments"),
    Target("capture", fuzz_capture, "the analyzer on a capture file: records, packets, flows, sessions, JSON"),
)}
