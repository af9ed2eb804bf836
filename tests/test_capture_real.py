"""The analyzer on real captures: tcpdump around real clients (curl, lftp, a raw client) and servers (ftpkit,
pyftpdlib, vsftpd) on loopback, in passive and active mode, with data connections that work, that are refused, and
whose SYN a firewall drops (inside a private network namespace). For every file, commands, reply codes and
announced ports must agree with tshark's FTP dissector.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from functools import partial
from pathlib import Path

import pytest

from capturelab import (
    analyzer_view,
    curl,
    ftpkit_server,
    lftp,
    netns,
    pyftpdlib_server,
    python,
    run,
    tcpdump,
    tshark_view,
    vsftpd_server,
)
from conftest import IN_CI, require_peer
from ftpkit.capture import Options, analyze
from ftpkit.capture.model import Report

pytestmark = [pytest.mark.peer]
SIZE = 200_000
PORT, PASSIVE = 2121, "50000-50009"  # each test has a network namespace of its own: fixed ports are free


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("capturing with tcpdump and creating network namespaces needs root")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A served folder readable by everyone (vsftpd's anonymous user, too): a random file and a text file."""
    need_root()
    for peer in ("tcpdump", "tshark", "ip", "iptables", "curl", "lftp"):
        require_peer(peer)
    folder = tmp_path / "srv"
    folder.mkdir()
    (folder / "random.bin").write_bytes(os.urandom(SIZE))
    (folder / "hello.txt").write_bytes(b"hello\n")
    for p in (tmp_path, folder):
        p.chmod(0o755)
    return folder


def conversations(report: Report) -> list:
    """The sessions with commands: the tests' own checks that a server listens are sessions too."""
    return [s for s in report.sessions if s.commands()]


def agree_with_tshark(path: Path, report: Report, server_port: int) -> None:
    ours, theirs = analyzer_view(report), tshark_view(path, {server_port})
    assert ours == theirs


def check_transfer(t, method: str, command: str, size: int) -> None:  # type: ignore[no-untyped-def]
    assert (t.method, t.command, t.final[0], t.fate) == (method, command, 226, "established"), t
    moved = t.bytes_to_server() if t.upload else t.bytes_to_client()
    assert moved == size, t


def test_ftpkit_server_with_curl_and_lftp_in_both_modes(root: Path, tmp_path: Path) -> None:
    port = 2199  # not 21: the control connections are found by their 220 greeting
    pcap = tmp_path / "ftpkit.pcap"
    url = f"ftp://127.0.0.1:{port}"
    with netns() as ns, tcpdump(pcap, ns=ns), ftpkit_server(root, port, PASSIVE, ns=ns):
        assert curl(f"{url}/random.bin", "--disable-epsv", "-o", str(tmp_path / "a"), ns=ns).returncode == 0
        assert curl(f"{url}/random.bin", "-o", str(tmp_path / "b"), ns=ns).returncode == 0  # EPSV
        assert curl(f"{url}/random.bin", "-P", "127.0.0.1", "--disable-eprt", "-o", str(tmp_path / "c"),
                    ns=ns).returncode == 0
        assert curl(f"{url}/", "-P", "127.0.0.1", ns=ns).returncode == 0  # EPRT, LIST
        result = lftp(url, f"set ftp:passive-mode off; get random.bin -o {tmp_path / 'd'}", ns=ns)
        assert result.returncode == 0, result.stderr
    digest = hashlib.sha256((root / "random.bin").read_bytes()).digest()
    assert all(hashlib.sha256((tmp_path / n).read_bytes()).digest() == digest for n in "abcd")
    report = analyze([pcap])
    probe, *sessions = report.sessions  # the first connection is the test's own check that the server listens
    assert [e.text for e in probe.log] == ["220 ftpkit FTP server ready."]
    assert len(sessions) == 5, [str(s.client) for s in sessions]
    first, second, third, fourth, fifth = sessions
    check_transfer(first.transfers[-1], "PASV", "RETR", SIZE)
    check_transfer(second.transfers[-1], "EPSV", "RETR", SIZE)
    check_transfer(third.transfers[-1], "PORT", "RETR", SIZE)
    assert fourth.transfers[-1].method == "EPRT" and fourth.transfers[-1].command == "LIST"
    assert fourth.transfers[-1].fate == "established" and fourth.transfers[-1].bytes_to_client() > 0
    (retr,) = (t for t in fifth.transfers if t.command == "RETR")
    check_transfer(retr, "PORT", "RETR", SIZE)
    for s in sessions:
        assert s.user == "anonymous" and s.started_at_syn and s.server.port == port
    assert report.problems == [] and report.exit_code == 0
    agree_with_tshark(pcap, report, port)


def pyftpdlib_installed() -> None:
    if importlib.util.find_spec("pyftpdlib") is None:
        message = "pyftpdlib is not installed (pip install -e .[test])"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def test_pyftpdlib_with_curl_passive_and_active(root: Path, tmp_path: Path) -> None:
    pyftpdlib_installed()
    port = PORT
    pcap = tmp_path / "pyftpdlib.pcap"
    url = f"ftp://127.0.0.1:{port}"
    with netns() as ns, tcpdump(pcap, ns=ns), pyftpdlib_server(root, port, PASSIVE, ns=ns):
        assert curl(f"{url}/random.bin", "--disable-epsv", "-o", str(tmp_path / "a"), ns=ns).returncode == 0
        assert curl(f"{url}/random.bin", "-P", "127.0.0.1", "--disable-eprt", "-o", str(tmp_path / "b"),
                    ns=ns).returncode == 0
    report = analyze([pcap], Options(ftp_ports=frozenset({21, port})))
    probes = [s for s in report.sessions if not s.commands()]  # the test's checks that the server listens
    sessions = [s for s in report.sessions if s.commands()]
    assert len(sessions) == 2
    for probe in probes:  # before pyftpdlib listened: refused; after: greeted
        codes = [f.code for f in probe.findings]
        assert codes == (["control-refused"] if probe.control.fate == "refused" else []), (probe.log, codes)
    passive_t, active_t = (s.transfers[-1] for s in sessions)
    check_transfer(passive_t, "PASV", "RETR", SIZE)
    check_transfer(active_t, "PORT", "RETR", SIZE)
    assert active_t.preliminary == 125  # pyftpdlib connects at PORT, so the data connection is already open
    assert [f.code for s in sessions for f in s.findings] == []
    agree_with_tshark(pcap, report, port)


def test_vsftpd_with_lftp_and_curl_from_port_20(root: Path, tmp_path: Path) -> None:
    os.chown(root, 0, 0)  # vsftpd refuses an anonymous root the ftp user can write to
    port = 21
    pcap = tmp_path / "vsftpd.pcap"
    url = f"ftp://127.0.0.1:{port}"
    with netns() as ns, tcpdump(pcap, ns=ns), vsftpd_server(tmp_path, root, port, PASSIVE, ns=ns):
        result = lftp(url, f"set ftp:passive-mode on; ls; get random.bin -o {tmp_path / 'a'}", ns=ns)
        assert result.returncode == 0, result.stderr
        assert curl(f"{url}/random.bin", "-P", "127.0.0.1", "--disable-eprt", "-o", str(tmp_path / "b"),
                    ns=ns).returncode == 0
    report = analyze([pcap])  # port 21
    lftp_s, curl_s = conversations(report)
    assert [t.command for t in lftp_s.transfers] == ["LIST", "RETR"]
    check_transfer(lftp_s.transfers[-1], lftp_s.transfers[-1].method, "RETR", SIZE)
    assert lftp_s.transfers[-1].method in ("PASV", "EPSV")
    active_t = curl_s.transfers[-1]
    check_transfer(active_t, "PORT", "RETR", SIZE)
    assert active_t.connection.initiator.port == 20  # connect_from_port_20=YES
    assert [f.code for s in conversations(report) for f in s.findings] == []
    agree_with_tshark(pcap, report, port)


RAW_CLIENT = """
from rawftp import Raw
raw = Raw("127.0.0.1", {port})
assert raw.cmd("USER anonymous").code == 331 and raw.cmd("PASS x").code == 230
assert raw.cmd("PORT 127,0,0,1,{p1},{p2}").code == 200
replies = [raw.cmd("RETR hello.txt")]
while replies[-1].is_preliminary:
    replies.append(raw.reply())
assert replies[-1].code == 425, replies
assert raw.cmd("QUIT").code == 221
"""


def test_active_data_connection_refused_by_rst(root: Path, tmp_path: Path) -> None:
    """A raw client announces a port nobody listens on: the kernel answers the server's SYN with RST."""
    port, target = PORT, 40123
    pcap = tmp_path / "refused.pcap"
    with netns() as ns, tcpdump(pcap, ns=ns), ftpkit_server(root, port, PASSIVE, ns=ns):
        result = python(RAW_CLIENT.format(port=port, p1=target >> 8, p2=target & 255), ns)
        assert result.returncode == 0, result.stderr
    report = analyze([pcap], Options(ftp_ports=frozenset({port})))
    (s,) = conversations(report)
    (t,) = s.transfers
    assert (t.method, t.announced.port, t.fate, t.final[0]) == ("PORT", target, "refused", 425)
    assert t.computation == f"{target >> 8}*256+{target & 255} = {target}"
    assert sorted(f.code for f in s.findings) == ["data-refused", "transfer-failed"]
    assert report.exit_code == 1
    agree_with_tshark(pcap, report, port)


def syn_count(path: Path, port: int) -> int:
    """Independent count: SYNs without ACK to ``port``, as tshark sees them."""
    proc = run([require_peer("tshark"), "-r", str(path), "-Y",
                f"tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.dstport=={port}", "-T", "fields", "-e", "frame.number"],
               check=True)
    return len(proc.stdout.split())


@pytest.mark.parametrize("server", ["ftpkit", "vsftpd"])
def test_active_syn_dropped_by_the_clients_firewall(root: Path, tmp_path: Path, server: str) -> None:
    port, passive = PORT, PASSIVE
    pcap = tmp_path / "dropped-active.pcap"
    if server == "vsftpd":
        os.chown(root, 0, 0)
        running = partial(vsftpd_server, tmp_path, root, port, passive, extra=("connect_timeout=4",))
    else:
        running = partial(ftpkit_server, root, port, passive, "--data-connect-timeout", "3.5")
    with netns() as ns:
        run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "40100:40109", "--tcp-flags", "SYN,ACK,RST", "SYN",
             "-j", "DROP"], ns, check=True)
        with tcpdump(pcap, ns=ns), running(ns=ns):
            result = curl(f"ftp://127.0.0.1:{port}/hello.txt", "-P", "127.0.0.1:40100-40109", "--disable-eprt",
                          "-o", str(tmp_path / "x"), ns=ns)
            assert result.returncode != 0
    report = analyze([pcap], Options(ftp_ports=frozenset({port})))
    (s,) = conversations(report)
    t = s.transfers[-1]
    assert (t.method, t.command, t.fate, t.final[0]) == ("PORT", "RETR", "syn-unanswered", 425)
    assert 40100 <= t.announced.port <= 40109
    conn = t.connection
    assert conn.retransmissions == syn_count(pcap, t.announced.port) - 1 >= 1
    assert (conn.initiator.port == 20) == (server == "vsftpd")  # vsftpd: connect_from_port_20=YES
    assert sorted(f.code for f in s.findings) == ["data-syn-unanswered", "transfer-failed"]
    finding = next(f for f in s.findings if f.code == "data-syn-unanswered")
    assert finding.params["target"] == str(t.announced) and finding.params["method"] == "PORT"
    agree_with_tshark(pcap, report, port)


def test_passive_syn_dropped_by_the_servers_firewall(root: Path, tmp_path: Path) -> None:
    port, passive = PORT, PASSIVE
    pcap = tmp_path / "dropped-passive.pcap"
    with netns() as ns:
        run(["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "50000:50009", "--tcp-flags", "SYN,ACK,RST", "SYN",
             "-j", "DROP"], ns, check=True)
        with tcpdump(pcap, ns=ns), ftpkit_server(root, port, passive, ns=ns):
            result = curl(f"ftp://127.0.0.1:{port}/hello.txt", "--disable-epsv", "--connect-timeout", "4",
                          "-o", str(tmp_path / "x"), ns=ns)
            assert result.returncode != 0
    report = analyze([pcap], Options(ftp_ports=frozenset({port})))
    (s,) = conversations(report)
    t = s.transfers[-1]
    assert (t.method, t.fate) == ("PASV", "syn-unanswered") and 50000 <= t.announced.port <= 50009
    assert t.connection.retransmissions == syn_count(pcap, t.announced.port) - 1 >= 1
    codes = sorted(f.code for f in s.findings)
    assert "data-syn-unanswered" in codes and set(codes) <= {"data-syn-unanswered", "transfer-failed"}
    assert report.exit_code == 1
    agree_with_tshark(pcap, report, port)


def test_a_session_across_three_rotated_files_is_joined(root: Path, tmp_path: Path) -> None:
    """tcpdump -C 1 rotates every 1,000,000 bytes: a 2.5 MB download spreads its session over three files or more,
    read as one stream (each file on its own would give a session per file, all but the first seen from the middle)."""
    (root / "big.bin").write_bytes(os.urandom(2_500_000))
    pcap = tmp_path / "rotated.pcap"
    with netns() as ns, tcpdump(pcap, ns=ns, extra=("-C", "1", "-Z", "root")), \
            ftpkit_server(root, PORT, PASSIVE, ns=ns):
        assert curl(f"ftp://127.0.0.1:{PORT}/big.bin", "-o", str(tmp_path / "a"), ns=ns).returncode == 0
    files = sorted(tmp_path.glob("rotated.pcap*"))
    assert len(files) >= 3, files
    report = analyze(files[::-1], Options(ftp_ports=frozenset({PORT})))  # any order: time decides
    (s,) = conversations(report)
    assert s.started_at_syn and s.file == str(pcap)
    check_transfer(s.transfers[-1], "EPSV", "RETR", 2_500_000)
    assert [e.text for e in s.log if e.side == "client"][-1] == "QUIT"
    assert s.findings == []  # (the test's own checks that the server listens may have been refused)


def test_ccc_session_is_read_again_after_ccc(root: Path, tmp_path: Path) -> None:
    """A real FTPS session with CCC: ftpkit's server (allow_ccc) and ftpkit's client (--tls --ccc). The capture
    shows AUTH TLS, records, then the commands after CCC in clear, and the download paired with them."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = run([sys.executable, "-m", "ftpkit", "cert", "--host", "127.0.0.1", "--cert", str(cert), "--key", str(key),
                "--days", "1"])
    assert made.returncode == 0, made.stderr
    pcap = tmp_path / "ccc.pcap"
    out = tmp_path / "got"
    with netns() as ns, tcpdump(pcap, ns=ns), ftpkit_server(root, PORT, PASSIVE, "--tls", "required", "--tls-cert",
                                                                str(cert), "--tls-key", str(key), "--allow-ccc",
                                                                ns=ns):
        got = run([sys.executable, "-m", "ftpkit", "get", "--tls", "--ccc", "--ca-file", str(cert), "-o", str(out),
                   f"ftp://127.0.0.1:{PORT}/random.bin"], ns)
        assert got.returncode == 0, got.stderr
    assert out.read_bytes() == (root / "random.bin").read_bytes()
    report = analyze([pcap], Options(ftp_ports=frozenset({PORT})))
    (s,) = conversations(report)
    notes = [e.note for e in s.log if e.side == "note"]
    assert notes == ["encrypted", "clear-again"], [e.text or e.note for e in s.log]
    after = [e.verb for e in s.log if e.side == "client" and e.ts > s.clear_at]
    assert "RETR" in after and after[-1] == "QUIT", after
    t = s.transfers[-1]
    assert (t.command, t.final[0], t.fate) == ("RETR", 226, "established")
    assert t.bytes_to_client() > SIZE  # the file inside TLS records (PROT P)
    assert [f.code for f in s.findings] == []
