"""Capture files the analyzer must read: pcap (µs and ns), pcapng with several interfaces, gzip, every link type
tcpdump writes on Linux (and BSD loopback), IPv4 and IPv6, and damaged files (exit 2, one line, sessions kept)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from ftpkit.capture import Options, analyze
from ftpkit.capture.records import CaptureError, RecordReader
from pcapbuild import (
    ETHERNET,
    LINUX_SLL,
    LINUX_SLL2,
    LOOP,
    NULL,
    RAW,
    Frame,
    Tcp,
    Timeline,
    data_transfer,
    ftp_exchange,
    link_frame,
    pcap_header,
    pcapng_bytes,
    write_pcap,
    write_pcapng,
)


def passive_session(tl: Timeline, client: str = "10.1.0.2", server: str = "10.2.0.3", cport: int = 40100,
                    size: int = 5000) -> None:
    """Login, PASV, RETR of ``size`` bytes over a passive data connection, QUIT."""
    ctl = Tcp(client, cport, server, 21)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 ready\r\n")
    ftp_exchange(tl, ctl, b"USER alice\r\n", b"331 password\r\n")
    ftp_exchange(tl, ctl, b"PASS secret\r\n", b"230 ok\r\n")
    v6 = ":" in server
    if v6:
        ftp_exchange(tl, ctl, b"EPSV\r\n", b"229 Entering Extended Passive Mode (|||50001|)\r\n")
    else:
        six = server.replace(".", ",").encode()
        ftp_exchange(tl, ctl, b"PASV\r\n", b"227 Entering Passive Mode (" + six + b",195,81).\r\n")
    tl.add(ctl.client_sends(b"RETR file.bin\r\n"))
    data = Tcp(client, cport + 1, server, 50001)
    ftp_exchange(tl, ctl, None, b"150 here it comes\r\n")
    data_transfer(tl, data, size)
    ftp_exchange(tl, ctl, None, b"226 done\r\n")
    ftp_exchange(tl, ctl, b"QUIT\r\n", b"221 bye\r\n")
    tl.add(*ctl.close())


def check_passive(report, size: int = 5000, server: str = "10.2.0.3") -> None:
    assert len(report.sessions) == 1, report.sessions
    check_session(report.sessions[0], size, server)
    assert report.exit_code == 0, [f.code for f in report.findings]


def check_session(s, size: int = 5000, server: str = "10.2.0.3") -> None:
    assert str(s.server) == (f"[{server}]:21" if ":" in server else f"{server}:21")
    assert s.user == "alice" and s.logged_in
    assert [e.verb for e in s.commands()] == ["USER", "PASS", "EPSV" if ":" in server else "PASV", "RETR", "QUIT"]
    (t,) = s.transfers
    assert t.command == "RETR" and t.final[0] == 226 and t.fate == "established"
    assert t.announced.port == 50001
    assert t.bytes_to_client() == size and t.bytes_to_server() == 0
    assert s.findings == []


@pytest.mark.parametrize("linktype", [ETHERNET, LINUX_SLL, LINUX_SLL2, RAW, NULL, LOOP])
@pytest.mark.parametrize("server", ["10.2.0.3", "2001:db8::3"])
def test_link_types_and_ip_versions(tmp_path: Path, linktype: int, server: str) -> None:
    tl = Timeline(linktype=linktype)
    passive_session(tl, client="2001:db8::2" if ":" in server else "10.1.0.2", server=server)
    check_passive(analyze([write_pcap(tmp_path / "c.pcap", linktype, tl)]), server=server)


def test_nanosecond_pcap_and_big_endian_header(tmp_path: Path) -> None:
    tl = Timeline()
    passive_session(tl)
    path = write_pcap(tmp_path / "ns.pcap", ETHERNET, tl, nano=True)
    report = analyze([path])
    check_passive(report)
    assert abs(report.sessions[0].start - tl.frames[0].ts) < 1e-6
    # the same records behind a big-endian file header
    import struct
    big = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, ETHERNET) + b"".join(
        struct.pack(">IIII", int(f.ts), round(f.ts % 1 * 1e6), len(f.data), len(f.data)) + f.data for f in tl)
    (tmp_path / "be.pcap").write_bytes(big)
    check_passive(analyze([tmp_path / "be.pcap"]))


def test_pcapng_with_two_interfaces_of_different_link_types(tmp_path: Path) -> None:
    """Control connection on an Ethernet interface, its data connection on a Linux-cooked one (tcpdump -i any)."""
    tl = Timeline()
    passive_session(tl)
    frames = []
    for f in tl:
        data_conn = b"\xc3\x51" in f.data[34:38]  # port 50001 as source or destination
        if data_conn:
            ip = f.data[14:]
            frames.append(Frame(f.ts, link_frame(LINUX_SLL2, ip), 1))
        else:
            frames.append(f)
    path = write_pcapng(tmp_path / "two.pcapng", [ETHERNET, LINUX_SLL2], frames)
    reader = RecordReader(path)
    kinds = {lt for _, lt, _ in reader}
    assert kinds == {ETHERNET, LINUX_SLL2} and reader.format == "pcapng"
    check_passive(analyze([path]))


def test_gzip_pcap_and_pcapng(tmp_path: Path) -> None:
    tl = Timeline()
    passive_session(tl, size=300_000)
    check_passive(analyze([write_pcap(tmp_path / "c.pcap.gz", ETHERNET, tl, compress=True)]), size=300_000)
    path = write_pcapng(tmp_path / "c.pcapng.gz", [ETHERNET], tl, compress=True)
    report = analyze([path])
    check_passive(report, size=300_000)
    assert report.files[0].compressed and report.files[0].format == "pcapng"


def two_sessions(tmp_path: Path) -> tuple[bytes, int]:
    """Two complete sessions one after the other; the offset where the second one's last record starts."""
    tl = Timeline()
    passive_session(tl, cport=40100)
    first_count = len(tl.frames)
    passive_session(tl, cport=40200)
    data = pcap_header(ETHERNET)
    offsets = []
    for f in tl:
        offsets.append(len(data))
        import struct
        data += struct.pack("<IIII", int(f.ts), round(f.ts % 1 * 1e6), len(f.data), len(f.data)) + f.data
    return data, offsets[first_count + 10]


def test_truncated_file_keeps_sessions_before_the_damage(tmp_path: Path) -> None:
    data, cut_record = two_sessions(tmp_path)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: cut_record + 20])  # the record header and 4 bytes of its frame
    report = analyze([path])
    assert report.exit_code == 2
    (error,) = report.errors
    assert error == f"{path}: truncated record at byte {cut_record}; {report.files[0].packets} packets read before it"
    assert len(report.sessions) == 2  # the second session is cut short, but what was read is there
    check_session(report.sessions[0])
    assert report.sessions[1].transfers == []  # it was cut before its PASV


def test_cli_exit_2_with_one_line_and_the_report(tmp_path: Path) -> None:
    data, cut_record = two_sessions(tmp_path)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: cut_record + 7])  # inside the record header
    proc = subprocess.run([sys.executable, "-m", "ftpkit", "analyze", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"{path}: truncated record header at byte {cut_record}; "
                                        f"{RecordReader_count(path)} packets read before it"]
    assert "Session 2" in proc.stdout and "RETR file.bin" in proc.stdout


def RecordReader_count(path: Path) -> int:
    reader = RecordReader(path)
    try:
        for _ in reader:
            pass
    except CaptureError:
        pass
    return reader.packets


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    tl = Timeline()
    passive_session(tl, size=2_000_000)
    whole = gzip.compress(pcap_header(ETHERNET) + b"".join(
        __import__("pcapbuild").pcap_record(f) for f in tl))
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(whole[: len(whole) * 3 // 4])
    report = analyze([path])
    assert report.exit_code == 2
    assert report.errors[0].startswith(f"{path}: ")
    assert "packets read before it" in report.errors[0]
    assert report.sessions and report.sessions[0].user == "alice"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty file"),
    (b"hello world, not a capture", "not a pcap or pcapng file (it starts with 68 65 6c 6c)"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated file header at byte 0; 0 packets read before it"),
])
def test_unreadable_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    report = analyze([path])
    assert report.errors == [f"{path}: {message}"] and report.exit_code == 2


def test_missing_file_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ftpkit", "analyze", str(tmp_path / "nope.pcap")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"{tmp_path / 'nope.pcap'}: No such file or directory"


def test_corrupt_pcapng_block(tmp_path: Path) -> None:
    tl = Timeline()
    passive_session(tl)
    data = bytearray(pcapng_bytes([ETHERNET], tl))
    # the length of the 5th packet block becomes absurd
    pos, seen = 0, 0
    import struct
    while True:
        kind, length = struct.unpack_from("<II", data, pos)
        if kind == 6:
            seen += 1
            if seen == 5:
                break
        pos += length
    data[pos + 4:pos + 8] = struct.pack("<I", 7)
    (tmp_path / "bad.pcapng").write_bytes(bytes(data))
    report = analyze([tmp_path / "bad.pcapng"])
    assert report.errors == [f"{tmp_path / 'bad.pcapng'}: corrupt block (length 7) at byte {pos}; "
                             "4 packets read before it"]


def test_unsupported_link_type_is_said(tmp_path: Path) -> None:
    path = tmp_path / "wifi.pcap"
    path.write_bytes(pcap_header(127) + __import__("pcapbuild").pcap_record(Frame(1.0, b"\0" * 60)))
    report = analyze([path])
    assert report.errors == [f"{path}: no TCP/IP packets; link type 127 is not supported"]


def test_control_port_option_and_content_detection(tmp_path: Path) -> None:
    """A server on port 2121 is found by its 220 greeting; one that starts mid-session only with --ftp-port."""
    tl = Timeline()
    ctl = Tcp("10.1.0.2", 40300, "10.2.0.3", 2121)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")
    ftp_exchange(tl, ctl, b"USER bob\r\n", b"331 pw\r\n")
    mid = Tcp("10.1.0.2", 40400, "10.2.0.3", 2222)  # no handshake, no greeting in the capture
    ftp_exchange(tl, mid, b"NOOP\r\n", b"200 ok\r\n")
    smtp = Tcp("10.1.0.2", 40500, "10.2.0.4", 25)
    tl.add(*smtp.handshake())
    ftp_exchange(tl, smtp, None, b"220 mail ESMTP\r\n")
    ftp_exchange(tl, smtp, b"EHLO me\r\n", b"250 hello\r\n")
    path = write_pcap(tmp_path / "ports.pcap", ETHERNET, tl)
    found = analyze([path])
    assert [str(s.server) for s in found.sessions] == ["10.2.0.3:2121"]
    both = analyze([path], Options(ftp_ports=frozenset({21, 2222})))
    assert sorted(str(s.server) for s in both.sessions) == ["10.2.0.3:2121", "10.2.0.3:2222"]
    mid_session = next(s for s in both.sessions if s.server.port == 2222)
    assert not mid_session.started_at_syn and [e.text for e in mid_session.log] == ["NOOP", "200 ok"]


def test_snaplen_cut_packets_still_count_every_byte(tmp_path: Path) -> None:
    """``tcpdump -s 96``: data packets are cut, but their sizes come from the IP header."""
    tl = Timeline()
    passive_session(tl, size=50_000)
    frames = [Frame(f.ts, f.data[:96] if len(f.data) > 200 else f.data) for f in tl]
    check_passive(analyze([write_pcap(tmp_path / "short.pcap", ETHERNET, frames)]), size=50_000)


def test_damaged_packets_never_crash_the_analyzer(tmp_path: Path) -> None:
    """Random bytes flipped in frames (headers and payloads), frames cut anywhere: a report, never a traceback."""
    import random
    tl = Timeline()
    passive_session(tl, size=20_000)
    for seed in range(40):
        rng = random.Random(seed)
        frames = []
        for f in tl:
            data = bytearray(f.data)
            for _ in range(rng.randrange(0, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.1:
                data = data[: rng.randrange(len(data))]
            frames.append(Frame(f.ts, bytes(data)))
        report = analyze([write_pcap(tmp_path / f"fuzz{seed}.pcap", rng.choice([ETHERNET, RAW, LINUX_SLL2]),
                                     frames)])
        assert report.errors == []
