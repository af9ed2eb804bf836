"""TCP reassembly of control connections, on hand-built captures: out-of-order segments, retransmissions, a command
split across segments, several commands in one segment, a capture that starts mid-session, packets the capture
missed, and sequence numbers that wrap."""

from __future__ import annotations

from pathlib import Path

from ftpkit.capture import analyze
from ftpkit.capture.reassembly import Reassembler
from pcapbuild import ETHERNET, Tcp, Timeline, ftp_exchange, write_pcap


def lines(tmp_path: Path, tl: Timeline) -> list[str]:
    report = analyze([write_pcap(tmp_path / "c.pcap", ETHERNET, tl)])
    assert len(report.sessions) == 1
    return [e.text if e.side != "note" else f"! {e.note}" for e in report.sessions[0].log]


def start(tl: Timeline, ctl: Tcp) -> None:
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")


def test_command_split_across_segments_and_out_of_order(tmp_path: Path) -> None:
    tl, ctl = Timeline(), Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    start(tl, ctl)
    first = ctl.client_sends(b"US")
    second = ctl.client_sends(b"ER al")
    third = ctl.client_sends(b"ice\r\n")
    tl.add(third, first, second)  # captured out of order
    ftp_exchange(tl, ctl, None, b"331 pw\r\n")
    assert lines(tmp_path, tl) == ["220 hi", "USER alice", "331 pw"]


def test_retransmissions_count_once(tmp_path: Path) -> None:
    tl, ctl = Timeline(), Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    start(tl, ctl)
    seq = ctl.cseq
    pkt = ctl.client_sends(b"USER alice\r\n")
    tl.add(pkt, pkt)  # the same segment twice
    reply_seq = ctl.sseq
    tl.add(ctl.server_sends(b"331 password please\r\n"))
    ctl.cseq = seq + len(b"USER ")  # a partial overlap: resent from "alice", with the next command
    tl.add(ctl.client_sends(b"alice\r\nPASS x\r\n"))
    ctl.sseq = reply_seq  # and the server resends its reply together with the next one
    tl.add(ctl.server_sends(b"331 password please\r\n230 ok\r\n"))
    assert lines(tmp_path, tl) == ["220 hi", "USER alice", "331 password please", "PASS ****", "230 ok"]


def test_several_commands_and_replies_in_one_segment(tmp_path: Path) -> None:
    tl, ctl = Timeline(), Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    start(tl, ctl)
    ftp_exchange(tl, ctl, b"USER a\r\nPASS b\r\nTYPE I\r\n", b"331 pw\r\n230 in\r\n200 binary\r\n")
    report = analyze([write_pcap(tmp_path / "c.pcap", ETHERNET, tl)])
    log = report.sessions[0].log
    assert [e.text for e in log] == ["220 hi", "USER a", "PASS ****", "TYPE I", "331 pw", "230 in", "200 binary"]
    assert [e.answers for e in log if e.side == "server"] == [None, "USER", "PASS", "TYPE"]


def test_multiline_reply_split_across_segments(tmp_path: Path) -> None:
    tl, ctl = Timeline(), Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    start(tl, ctl)
    tl.add(ctl.client_sends(b"FEAT\r\n"))
    tl.add(ctl.server_sends(b"211-Features:\r\n EPSV\r\n MD"), ctl.server_sends(b"TM\r\n211 End\r\n"))
    report = analyze([write_pcap(tmp_path / "c.pcap", ETHERNET, tl)])
    reply = report.sessions[0].log[-1]
    assert reply.code == 211 and reply.lines == ("Features:", " EPSV", " MDTM", "End") and reply.answers == "FEAT"


def test_capture_starting_mid_session_and_mid_line(tmp_path: Path) -> None:
    """No handshake, no greeting, and the first segment of each side starts in the middle of a line."""
    tl, ctl = Timeline(), Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    tl.add(ctl.client_sends(b"ome.msg\r\nTYPE I\r\n"))
    tl.add(ctl.server_sends(b"ading welcome.msg\r\n200 Switching to Binary mode.\r\n"))
    ftp_exchange(tl, ctl, b"PWD\r\n", b'257 "/"\r\n')
    report = analyze([write_pcap(tmp_path / "c.pcap", ETHERNET, tl)])
    s = report.sessions[0]
    assert not s.started_at_syn
    assert [e.text for e in s.log] == ["TYPE I", "200 Switching to Binary mode.", "PWD", '257 "/"']
    assert [e.answers for e in s.log if e.side == "server"] == ["TYPE", "PWD"]


def test_segment_missing_from_capture_is_a_gap_then_resync(tmp_path: Path) -> None:
    tl, ctl = Timeline(), Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    start(tl, ctl)
    ftp_exchange(tl, ctl, b"USER alice\r\n", b"331 pw\r\n")
    ctl.client_sends(b"PASS secr")  # sent, not captured
    tl.add(ctl.client_sends(b"et\r\nSYST\r\n"))
    tl.add(ctl.ack_from_server())  # the server acknowledges bytes the capture never saw
    tl.add(ctl.server_sends(b"230 ok\r\n215 UNIX Type: L8\r\n"))
    report = analyze([write_pcap(tmp_path / "c.pcap", ETHERNET, tl)])
    s = report.sessions[0]
    texts = [e.text if e.side != "note" else f"! {e.note} {e.size}" for e in s.log]
    assert texts == ["220 hi", "USER alice", "331 pw", "! gap-client 9", "SYST", "230 ok", "215 UNIX Type: L8"]
    assert s.bytes_missing == 9


def test_hole_at_the_end_is_skipped(tmp_path: Path) -> None:
    tl, ctl = Timeline(), Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    start(tl, ctl)
    ctl.client_sends(b"NOOP\r\n")  # not captured, and nobody acknowledges it in the capture
    tl.add(ctl.client_sends(b"QUIT\r\n"))
    assert lines(tmp_path, tl) == ["220 hi", "! gap-client", "QUIT"]


def test_sequence_numbers_wrap() -> None:
    r = Reassembler()
    r.syn(0xFFFFFFFA)
    out = r.segment(0xFFFFFFFB, b"USER ")  # up to 0xFFFFFFFF: the next byte is 0x00000000
    out += r.segment(0x00000003, b"bob\r\n")  # after the wrap, early
    out += r.segment(0xFFFFFFFC, b"SER ")  # before the wrap, old
    assert b"".join(c.data for c in out) == b"USER "
    out = r.segment(0x00000000, b"ali")  # fills the hole up to the early segment
    assert b"".join(c.data for c in out) == b"alibob\r\n"
    assert r.retransmitted == 4 and r.missing == 0


def test_pending_bytes_are_bounded() -> None:
    r = Reassembler()
    r.syn(0)
    r.segment(1, b"A")
    total = 0
    for i in range(400):
        total += sum(len(c.data) for c in r.segment(1000 + i * 1000, b"x" * 1000))
    assert r.pending_bytes <= 256 * 1024
    assert r.missing > 0 and total > 0
