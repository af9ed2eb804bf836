"""The analyzer as a stream, on hand-built captures: rotated files read in time order as one stream, the events
reported as the capture goes on (a data connection's fate, a session's end), CCC followed back to clear text, and
memory that stays flat however many sessions pass."""

from __future__ import annotations

import gc
import io
import math
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import pytest

from ftpkit.capture import Analyzer, Options, analyze
from ftpkit.capture.engine import SWEEP
from ftpkit.capture.events import ConnectionDecided, Event, NatPaired, SessionEnded, SessionStarted
from ftpkit.capture.flows import FINISHED_KEEP
from ftpkit.capture.live import POOL as READ_BUFFERS
from ftpkit.capture.live import READ, Backlog, Capture
from ftpkit.capture.nat import POOL
from ftpkit.capture.records import CaptureError, RecordParser, RecordReader
from ftpkit.capture.render_events import JsonEvents
from pcapbuild import (
    ETHERNET,
    LINUX_SLL,
    LINUX_SLL2,
    RAW,
    Frame,
    Tcp,
    Timeline,
    data_transfer,
    ftp_exchange,
    pcap_header,
    pcap_record,
    write_pcap,
)


def passive_download(tl: Timeline, cport: int = 41000, size: int = 30_000, close: bool = True,
                     isn: int = 1000) -> None:
    ctl = Tcp("198.18.1.2", cport, "198.19.1.2", 21, cseq=isn)
    tl.add(*ctl.handshake())
    for command, reply in [(None, b"220 hi"), (b"USER alice", b"331 pw"), (b"PASS x", b"230 ok"),
                           (b"PASV", b"227 Entering Passive Mode (198,19,1,2,195,80).")]:
        ftp_exchange(tl, ctl, command + b"\r\n" if command else None, reply + b"\r\n")
    ftp_exchange(tl, ctl, b"RETR big.bin\r\n", b"150 here\r\n")
    data_transfer(tl, Tcp("198.18.1.2", cport + 1, "198.19.1.2", 50000), size)
    ftp_exchange(tl, ctl, None, b"226 done\r\n")
    ftp_exchange(tl, ctl, b"QUIT\r\n", b"221 bye\r\n")
    if close:
        tl.add(*ctl.close())


def events_of(frames: list[Frame], options: Options | None = None) -> tuple[list[Event], Analyzer]:
    events: list[Event] = []
    analyzer = Analyzer(options, events.append)
    point = analyzer.point("test")
    point.run((f.ts, ETHERNET, f.data) for f in frames)
    analyzer.close()
    return events, analyzer


# --- rotated files ----------------------------------------------------------------------------------------------
def test_a_session_split_across_three_rotated_files_is_one_session(tmp_path: Path) -> None:
    tl = Timeline()
    passive_download(tl, size=60_000)
    frames = tl.frames
    third = len(frames) // 3
    parts = [frames[:third], frames[third:2 * third], frames[2 * third:]]
    names = [tmp_path / "cap.pcap", tmp_path / "cap.pcap1", tmp_path / "cap.pcap2"]
    for path, part in zip(names, parts, strict=True):
        write_pcap(path, ETHERNET, part)
    report = analyze([names[2], names[0], names[1]])  # any order on the command line: time order wins
    (s,) = report.sessions
    assert s.started_at_syn and s.user == "alice" and s.file == str(names[0])
    (t,) = s.transfers
    assert (t.method, t.command, t.final[0], t.fate, t.bytes_to_client()) == ("PASV", "RETR", 226, "established",
                                                                              60_000)
    assert [e.text for e in s.log][-2:] == ["QUIT", "221 bye"]
    assert report.findings == [] and [f.packets for f in report.files] == [len(parts[2]), len(parts[0]), len(parts[1])]


def test_two_captures_at_the_same_time_stay_apart(tmp_path: Path) -> None:
    """The same session captured at two places at once (same addresses: no NAT) is two sessions, one per file."""
    tl = Timeline()
    passive_download(tl)
    a = write_pcap(tmp_path / "router-in.pcap", ETHERNET, tl.frames)
    b = write_pcap(tmp_path / "router-out.pcap", ETHERNET, [Frame(f.ts + 0.0001, f.data) for f in tl.frames])
    report = analyze([a, b])
    assert sorted(s.file for s in report.sessions) == [str(a), str(b)]
    assert all(s.transfers[0].bytes_to_client() == 30_000 for s in report.sessions)


def test_rotated_sets_of_two_capture_points_are_joined_each_with_its_own(tmp_path: Path) -> None:
    """inside.pcap0/1 and outside.pcap0/1, rotated at the same moment: each file continues its own capture point
    (the name decides which of two ended files a new one continues)."""
    tl = Timeline()
    passive_download(tl, size=20_000)
    frames = tl.frames
    half = len(frames) // 2
    out = [Frame(f.ts + 0.0001, f.data) for f in frames]
    paths = {name: tmp_path / name for name in ("inside.pcap0", "inside.pcap1", "outside.pcap0", "outside.pcap1")}
    write_pcap(paths["inside.pcap0"], ETHERNET, frames[:half])
    write_pcap(paths["inside.pcap1"], ETHERNET, frames[half:])
    write_pcap(paths["outside.pcap0"], ETHERNET, out[:half])
    write_pcap(paths["outside.pcap1"], ETHERNET, out[half:])
    report = analyze(list(paths.values()))
    assert sorted(s.file for s in report.sessions) == [str(paths["inside.pcap0"]), str(paths["outside.pcap0"])]
    for s in report.sessions:
        assert s.started_at_syn and s.transfers[0].bytes_to_client() == 20_000 and s.log[-1].text == "221 bye"


# --- events -----------------------------------------------------------------------------------------------------
def active_syn_dropped(tl: Timeline, reply_after: float | None, gaps: tuple[float, ...] = (0.01, 1, 2, 4)) -> None:
    ctl = Tcp("198.18.1.2", 41872, "198.19.1.2", 21)
    tl.add(*ctl.handshake())
    for command, reply in [(None, b"220 hi"), (b"USER a", b"230 ok"), (b"PORT 198,18,1,2,156,65", b"200 ok")]:
        ftp_exchange(tl, ctl, command + b"\r\n" if command else None, reply + b"\r\n")
    tl.add(ctl.client_sends(b"RETR x\r\n"))
    data = Tcp("198.19.1.2", 20, "198.18.1.2", 40001)
    for gap in gaps:
        tl.add(data.syn(), gap=gap)
    if reply_after is not None:
        tl.add(ctl.server_sends(b"425 Failed to establish connection.\r\n"), gap=reply_after)
    tl.add(ctl.client_sends(b"NOOP\r\n"), gap=30)  # time passes on the control connection


def test_an_unanswered_syn_is_decided_by_the_transfer_reply_before_the_session_ends() -> None:
    tl = Timeline()
    active_syn_dropped(tl, reply_after=0.5, gaps=(0.01, 1, 2))  # the 425 comes 3.5 s after the first SYN
    events, _ = events_of(tl.frames, Options(syn_timeout=5.0))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SessionStarted", "ConnectionDecided", "SessionEnded"]
    decided = events[1]
    assert isinstance(decided, ConnectionDecided)
    assert (decided.fate, decided.by, decided.conn.retransmissions) == ("syn-unanswered", "reply", 2)
    assert decided.transfer is not None and decided.transfer.announce_text == "PORT 198,18,1,2,156,65"
    assert decided.ts == tl.frames[-2].ts  # the 425
    ended = events[2]
    assert isinstance(ended, SessionEnded) and ended.reason == "capture-end"
    assert sorted(f.code for f in ended.session.findings) == ["data-syn-unanswered", "transfer-failed"]


def test_an_unanswered_syn_is_decided_after_the_syn_timeout_when_no_reply_comes() -> None:
    tl = Timeline()
    active_syn_dropped(tl, reply_after=None)
    syn_ts = next(f.ts for f in tl.frames if b"\x9c\x41" in f.data[34:38])  # to port 40001
    events, _ = events_of(tl.frames, Options(syn_timeout=5.0))
    (decided,) = [e for e in events if isinstance(e, ConnectionDecided)]
    assert (decided.fate, decided.by) == ("syn-unanswered", "timeout")
    assert decided.ts == syn_ts + 5.0 and decided.conn.retransmissions == 2  # the SYNs at +1 s and +3 s
    (ended,) = [e for e in events if isinstance(e, SessionEnded)]
    finding = next(f for f in ended.session.findings if f.code == "data-syn-unanswered")
    assert finding.params["retransmissions"] == "3"  # the session's findings count every retransmission seen


def test_established_and_refused_are_decided_by_the_answer_and_a_closed_session_ends_at_once() -> None:
    tl = Timeline()
    passive_download(tl)
    last_fin = tl.frames[-2].ts  # the server's FIN: both sides have closed
    ctl = Tcp("198.18.1.2", 42000, "198.19.1.2", 21)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")
    ftp_exchange(tl, ctl, b"PORT 198,18,1,2,156,66\r\n", b"200 ok\r\n")
    tl.add(ctl.client_sends(b"LIST\r\n"))
    data = Tcp("198.19.1.2", 20, "198.18.1.2", 40002)
    tl.add(data.syn(), data.rst_to_syn())
    ftp_exchange(tl, ctl, None, b"425 no\r\n")
    events, analyzer = events_of(tl.frames)
    decided = [(e.fate, e.by, e.session.index) for e in events if isinstance(e, ConnectionDecided)]
    assert decided == [("established", "answer", 1), ("refused", "answer", 2)]
    first_end = next(e for e in events if isinstance(e, SessionEnded))
    assert (first_end.session.index, first_end.reason, first_end.ts) == (1, "closed", last_fin)
    assert [e.session.index for e in events if isinstance(e, SessionStarted)] == [1, 2]
    assert analyzer.open_sessions == 0 and analyzer.ended == 2


def test_a_quiet_session_ends_after_idle_end(tmp_path: Path) -> None:
    tl = Timeline()
    passive_download(tl, close=False)
    other = Tcp("198.18.1.9", 43000, "198.19.1.2", 21)
    tl.add(*other.handshake(), gap=100)
    tl.add(other.server_sends(b"220 hi\r\n"), gap=100)
    events, _ = events_of(tl.frames, Options(idle_end=150))
    ended = [(e.session.index, e.reason) for e in events if isinstance(e, SessionEnded)]
    assert ended == [(1, "idle"), (2, "capture-end")]


# --- CCC --------------------------------------------------------------------------------------------------------
def tls_record(kind: int, size: int) -> bytes:
    return struct.pack("!BHH", kind, 0x0303, size) + bytes(i % 251 for i in range(size))


def test_after_ccc_the_commands_are_read_again(tmp_path: Path) -> None:
    tl = Timeline()
    ctl = Tcp("198.18.1.2", 41000, "198.19.1.2", 21)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")
    ftp_exchange(tl, ctl, b"AUTH TLS\r\n", b"234 Proceed with negotiation.\r\n")
    # the handshake, USER/PASS/PBSZ/PROT/CCC and their replies, then close_notify both ways: records only
    ftp_exchange(tl, ctl, tls_record(22, 512), tls_record(22, 3000) + tls_record(20, 1) + tls_record(22, 40))
    ftp_exchange(tl, ctl, tls_record(23, 40)[:7], None)  # a record cut across two segments
    ftp_exchange(tl, ctl, tls_record(23, 40)[7:] + tls_record(23, 33), tls_record(23, 60))
    ftp_exchange(tl, ctl, tls_record(21, 26), tls_record(21, 26))
    ftp_exchange(tl, ctl, b"PASV\r\n", b"227 Entering Passive Mode (198,19,1,2,195,80).\r\n")
    ftp_exchange(tl, ctl, b"RETR f\r\n", b"150 go\r\n")
    data_transfer(tl, Tcp("198.18.1.2", 41001, "198.19.1.2", 50000), 5000)
    ftp_exchange(tl, ctl, None, b"226 done\r\n")
    report = analyze([write_pcap(tmp_path / "ccc.pcap", ETHERNET, tl)])
    (s,) = report.sessions
    assert [e.note or e.text for e in s.log] == ["220 hi", "AUTH TLS", "234 Proceed with negotiation.", "encrypted",
                                                 "clear-again", "PASV",
                                                 "227 Entering Passive Mode (198,19,1,2,195,80).", "RETR f",
                                                 "150 go", "226 done"]
    assert s.encrypted_at is not None and s.clear_at is not None and not s.still_encrypted
    (t,) = s.transfers
    assert (t.method, t.fate, t.bytes_to_client(), t.final[0]) == ("PASV", "established", 5000, 226)
    assert report.findings == []


def test_without_ccc_the_session_stays_encrypted(tmp_path: Path) -> None:
    tl = Timeline()
    ctl = Tcp("198.18.1.2", 41000, "198.19.1.2", 21)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")
    ftp_exchange(tl, ctl, b"AUTH TLS\r\n", b"234 go\r\n")
    ftp_exchange(tl, ctl, tls_record(22, 512), tls_record(22, 3000))
    ftp_exchange(tl, ctl, b"\x17\x03\x03\x00\x10PASV\r\n" + bytes(10), tls_record(23, 30))  # "PASV" inside a record
    report = analyze([write_pcap(tmp_path / "tls.pcap", ETHERNET, tl)])
    (s,) = report.sessions
    assert s.still_encrypted and [e.note for e in s.log if e.side == "note"] == ["encrypted"]
    assert [f.code for f in report.findings] == ["control-encrypted"]


# --- a pipe, a few bytes at a time ------------------------------------------------------------------------------
def test_the_record_parser_takes_bytes_as_they_come() -> None:
    tl = Timeline()
    passive_download(tl, size=5000)
    data = pcap_header(ETHERNET) + b"".join(pcap_record(f) for f in tl)
    parser = RecordParser("pipe")
    got = []
    for i in range(0, len(data), 7):  # 7 bytes per read: headers and frames cut everywhere
        got += list(parser.feed(data[i:i + 7]))
    parser.finish()
    assert [frame for _, _, frame in got] == [f.data for f in tl]
    assert all(abs(ts - f.ts) < 1e-6 for (ts, _, _), f in zip(got, tl, strict=True))
    assert parser.packets == len(tl.frames) and parser.format == "pcap"


def ipv6_download(tl: Timeline, size: int = 40_000) -> None:
    ctl = Tcp("2001:db8::3", 42200, "2001:db8::1", 21)
    tl.add(*ctl.handshake())
    for command, reply in [(None, b"220 hi"), (b"USER carol", b"331 pw"), (b"PASS x", b"230 ok"),
                           (b"EPSV", b"229 Entering Extended Passive Mode (|||50000|)")]:
        ftp_exchange(tl, ctl, command + b"\r\n" if command else None, reply + b"\r\n")
    ftp_exchange(tl, ctl, b"RETR big.bin\r\n", b"150 here\r\n")
    data_transfer(tl, Tcp("2001:db8::3", 42201, "2001:db8::1", 50000), size)
    ftp_exchange(tl, ctl, None, b"226 done\r\n")
    ftp_exchange(tl, ctl, b"QUIT\r\n", b"221 bye\r\n")
    tl.add(*ctl.close())


def mixed_capture(linktype: int = ETHERNET) -> Timeline:
    """A passive download, other traffic (HTTP, with a retransmitted segment), an active data connection whose SYN
    is not answered, one refused by RST, a session over IPv6 and a download over IPv6; every tenth frame captured
    twice."""
    tl = Timeline(linktype=linktype)
    passive_download(tl, size=60_000)
    web = Tcp("198.18.1.7", 43000, "198.19.1.9", 80)
    tl.add(*web.handshake())
    tl.add(web.client_sends(b"GET / HTTP/1.1\r\n\r\n"))
    for _ in range(20):
        tl.add(web.server_sends(bytes(1448)))
    tl.frames.append(Frame(tl.ts + 0.0001, tl.frames[-3].data))
    tl.add(*web.close())
    active_syn_dropped(tl, reply_after=0.5, gaps=(0.01, 1, 2))
    ctl = Tcp("198.18.1.2", 42000, "198.19.1.2", 21)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")
    ftp_exchange(tl, ctl, b"PORT 198,18,1,2,156,66\r\n", b"200 ok\r\n")
    tl.add(ctl.client_sends(b"LIST\r\n"))
    data = Tcp("198.19.1.2", 20, "198.18.1.2", 40002)
    tl.add(data.syn(), data.rst_to_syn())
    ftp_exchange(tl, ctl, None, b"425 no\r\n")
    v6 = Tcp("2001:db8::2", 42100, "2001:db8::1", 21)
    tl.add(*v6.handshake())
    for command, reply in [(None, b"220 hi"), (b"USER bob", b"331 pw"), (b"PASS x", b"530 no")]:
        ftp_exchange(tl, v6, command + b"\r\n" if command else None, reply + b"\r\n")
    tl.add(*v6.close())
    ipv6_download(tl)
    tl.frames = [g for i, f in enumerate(tl.frames) for g in ([f, Frame(f.ts, f.data)] if i % 10 == 0 else [f])]
    return tl


def _json_events(data: bytes, step: int, how: str) -> tuple[str, int]:
    """The events of ``data`` cut every ``step`` bytes: as ``records`` (``run``), fed as ``bytes``, or fed through
    one ``buffer`` used again and again (a longer bytearray filled anew each time, as the live reader does)."""
    out = io.StringIO()
    analyzer = Analyzer(Options(), JsonEvents(out, "en"), keep=False)
    point, parser = analyzer.point("pipe"), RecordParser("pipe")
    buffer = bytearray(step + 100)
    for i in range(0, len(data), step):
        piece = data[i:i + step]
        if how == "records":
            point.run(parser.feed(piece))
        elif how == "bytes":
            point.feed(parser, piece)
        else:
            buffer[:len(piece)] = piece
            buffer[len(piece):] = b"\xff" * (len(buffer) - len(piece))  # what the buffer held before
            point.feed(parser, buffer, len(piece))
    parser.finish()
    analyzer.close()
    return out.getvalue(), point.segments


@pytest.mark.parametrize(("linktype", "nano"), [(ETHERNET, False), (ETHERNET, True), (LINUX_SLL, False),
                                               (LINUX_SLL2, False), (RAW, False)])
def test_bytes_fed_from_a_pipe_give_what_their_records_give(linktype: int, nano: bool) -> None:
    """``PointAnalysis.feed`` (the live capture's way, packets only counted where they lie) reports event for
    event what the records of the same bytes give, however the bytes are cut (raw IP: no fast path, all records)."""
    frames = mixed_capture(linktype).frames
    data = pcap_header(linktype, nano) + b"".join(pcap_record(f, nano) for f in frames)
    want, segments = _json_events(data, len(data), "records")
    assert segments == len(frames) and want.count("\n") == 14  # 5 sessions started and ended, 4 fates
    assert '"syn-unanswered"' in want and '"refused"' in want and '"2001:db8::2"' in want
    assert '"bytes_to_client": 40000' in want
    for how in ("bytes", "buffer"):
        for step in (7, 1000, 65536, len(data)):
            assert _json_events(data, step, how) == (want, segments), (how, step)


@pytest.mark.parametrize(("linktype", "tcp", "ipv6"), [(ETHERNET, 34, False), (LINUX_SLL, 36, False),
                                                      (LINUX_SLL2, 40, False), (ETHERNET, 54, True)])
def test_the_packets_of_a_settled_data_connection_are_counted_without_becoming_records(
        monkeypatch: pytest.MonkeyPatch, linktype: int, tcp: int, ipv6: bool) -> None:
    tl = Timeline(linktype=linktype)
    if ipv6:
        ipv6_download(tl, 60_000)
    else:
        passive_download(tl, size=60_000)
    analyzer = Analyzer(Options())
    point, parser = analyzer.point("pipe"), RecordParser("pipe")
    records: list[bytes] = []
    run = point.run

    def spy(got: Iterable[tuple[float, int, bytes]], until: float = math.inf) -> object:
        def seen() -> Iterator[tuple[float, int, bytes]]:
            for r in got:
                records.append(r[2])
                yield r
        return run(seen(), until)

    monkeypatch.setattr(point, "run", spy)
    point.feed(parser, pcap_header(linktype) + b"".join(pcap_record(f) for f in tl))
    analyzer.close()
    (s,) = analyzer.sessions
    (t,) = s.transfers
    assert (t.fate, t.bytes_to_client()) == ("established", 60_000) and parser.packets == len(tl.frames)

    def of_port(port: int, frames: list[bytes]) -> list[bytes]:
        return [f for f in frames if struct.pack("!H", port) in (f[tcp:tcp + 2], f[tcp + 2:tcp + 4])]

    def of_data(frames: list[bytes]) -> list[bytes]:
        return of_port(50000, frames)

    assert len(of_data([f.data for f in tl])) > 40
    assert [f[tcp + 13] for f in of_data(records)] == [0x02, 0x12, 0x11, 0x11]  # SYN, SYN-ACK and the FINs only
    control = of_port(21, [f.data for f in tl])
    assert [f for f in records if f not in of_data(records)] == control[:-1]  # its last ACK: after the session

def test_damage_in_bytes_fed_from_a_pipe_is_named_as_in_a_file() -> None:
    tl = Timeline()
    passive_download(tl, size=5000)
    good = pcap_header(ETHERNET) + b"".join(pcap_record(f) for f in tl)
    data = good + struct.pack("<IIII", 1, 0, 1 << 27, 1 << 27) + bytes(100)
    errors = []
    for how in ("records", "bytes", "buffer"):
        with pytest.raises(CaptureError) as caught:
            _json_events(data, 4096, how)
        errors.append(str(caught.value))
    want = f"pipe: corrupt record (length {1 << 27}) at byte {len(good)}; {len(tl.frames)} packets read before it"
    assert errors == [want] * 3


@pytest.mark.parametrize("compress", [False, True])
def test_a_file_read_a_few_bytes_at_a_time_gives_its_records(tmp_path: Path, compress: bool) -> None:
    """The file reader reads into one buffer again and again: records cut across reads come out whole."""
    tl = mixed_capture()
    path = write_pcap(tmp_path / ("c.pcap.gz" if compress else "c.pcap"), ETHERNET, tl, compress=compress)
    for chunk in (7, 1000, 1 << 20):
        got = list(RecordReader(path, chunk=chunk))
        assert [frame for _, _, frame in got] == [f.data for f in tl], chunk
        assert all(type(frame) is bytes for _, _, frame in got)


def test_the_live_backlog_reads_into_buffers_used_again_and_bounds_the_memory_they_hold() -> None:
    backlog = Backlog(limit=4 * READ)
    try:
        buffers = [backlog.buffer() for _ in range(READ_BUFFERS + 2)]
        assert len({id(b) for b in buffers}) == READ_BUFFERS + 2 and all(len(b) == READ for b in buffers)
        for buf in buffers:
            backlog.give_back(buf)
        assert len(backlog.free) == READ_BUFFERS  # the rest is freed
        again = backlog.buffer()
        assert any(again is b for b in buffers)
        backlog.put(cast(Capture, None), again, 100)  # a large read stays in its buffer: it holds a megabyte
        backlog.put(cast(Capture, None), b"x" * 50, 50)  # a small read was copied out
        assert (backlog.size, backlog.held, backlog.peak) == (150, READ + 50, 150)
        item = backlog.pop()
        assert item is not None and item[1] is again and (backlog.size, backlog.held) == (50, 50)
    finally:
        backlog.close()


# --- memory -----------------------------------------------------------------------------------------------------
def test_memory_stays_flat_as_sessions_come_and_go() -> None:
    """Thousands of sessions through an analyzer that keeps nothing: what it holds after 3,000 sessions and after
    9,000 is the same (sessions leave when they end, ended flows leave the table, the NAT pool has its bound).
    Both are measured at the same point between two sweeps of the tables (every 60 s of capture time)."""
    analyzer = Analyzer(Options(), keep=False)
    point = analyzer.point("live")
    pairs: list[Event] = []
    analyzer.on_event = lambda e: pairs.append(e) if isinstance(e, NatPaired) else None
    gap = 0.05  # a session every 50 ms of capture time

    def batch(start: int, count: int) -> None:
        for i in range(start, start + count):
            tl = Timeline(start=1_700_000_000.0 + i * gap, step=0.0005)
            passive_download(tl, cport=10000 + (i * 2) % 50000, size=3000, isn=1000 + i * 100_003)
            point.run((f.ts, ETHERNET, f.data) for f in tl)

    def objects() -> int:
        gc.collect()
        return len(gc.get_objects())

    batch(0, 3000)
    flows_3000, objects_3000 = point.table.count, objects()
    batch(3000, 6000)
    flows_9000, objects_9000 = point.table.count, objects()
    assert analyzer.ended == 9000 and analyzer.open_sessions == 0 and pairs == []
    window = SWEEP + FINISHED_KEEP  # an ended flow stays at most this long
    assert flows_3000 == flows_9000 <= 2 * window / gap  # two flows per session
    assert len(analyzer.nat) == POOL
    assert objects_9000 < objects_3000 * 1.02, (objects_3000, objects_9000)
