"""Findings on hand-built captures: each scenario is the packets a real failure leaves, and each test checks the
transfer's facts (method, announced port, data connection, fate) and the findings' codes and params."""

from __future__ import annotations

from pathlib import Path

from ftpkit.capture import Options, analyze
from ftpkit.capture.model import Report
from pcapbuild import (
    ETHERNET,
    LINUX_SLL2,
    RST,
    Frame,
    Tcp,
    Timeline,
    data_transfer,
    ftp_exchange,
    link_frame,
    write_pcap,
    write_pcapng,
)


class Scenario:
    """A control connection with login done; helpers add announcements, transfers and data connections."""

    def __init__(self, client: str = "198.18.1.2", server: str = "198.19.1.2", cport: int = 41872,
                 tl: Timeline | None = None) -> None:
        self.tl = tl or Timeline()
        self.ctl = Tcp(client, cport, server, 21)
        self.tl.add(*self.ctl.handshake())
        self.reply(b"220 (vsFTPd 3.0.3)")
        self.exchange(b"USER anonymous", b"331 Please specify the password.")
        self.exchange(b"PASS secret", b"230 Login successful.")

    def exchange(self, command: bytes | None, reply: bytes | None, delay: float = 0.002) -> None:
        ftp_exchange(self.tl, self.ctl, command + b"\r\n" if command else None,
                     reply + b"\r\n" if reply else None, delay)

    def send(self, command: bytes) -> None:
        self.tl.add(self.ctl.client_sends(command + b"\r\n"))

    def reply(self, reply: bytes, delay: float = 0.002) -> None:
        self.exchange(None, reply, delay)

    def quit(self) -> None:
        self.exchange(b"QUIT", b"221 Goodbye.")
        self.tl.add(*self.ctl.close())

    def report(self, tmp_path: Path, options: Options | None = None) -> Report:
        return analyze([write_pcap(tmp_path / "s.pcap", ETHERNET, self.tl)], options)


def codes(report: Report) -> list[str]:
    return sorted(f.code for f in report.findings)


def only(report: Report, code: str):  # type: ignore[no-untyped-def]
    (finding,) = [f for f in report.findings if f.code == code]
    return finding


def test_active_syn_unanswered_is_the_issue_example(tmp_path: Path) -> None:
    s = Scenario()
    s.exchange(b"PORT 198,18,1,2,156,65", b"200 PORT command successful. Consider using PASV.")
    s.send(b"RETR welcome.msg")
    data = Tcp("198.19.1.2", 20, "198.18.1.2", 40001)
    for gap in (0.01, 1, 2, 4):
        s.tl.add(data.syn(), gap=gap)
    s.reply(b"425 Failed to establish connection.", delay=8)
    s.quit()
    report = s.report(tmp_path)
    (t,) = report.sessions[0].transfers
    assert (t.method, str(t.announced), t.computation) == ("PORT", "198.18.1.2:40001", "156*256+65 = 40001")
    assert t.fate == "syn-unanswered" and t.final[0] == 425
    conn = t.connection
    assert (str(conn.initiator), str(conn.responder), conn.retransmissions) == ("198.19.1.2:20", "198.18.1.2:40001", 3)
    assert codes(report) == ["data-syn-unanswered", "transfer-failed"]
    f = only(report, "data-syn-unanswered")
    assert f.params["source"] == "198.19.1.2:20" and f.params["retransmissions"] == "3"
    assert f.summary("en") == ("PORT data connection: 198.19.1.2:20 sent SYN to 198.18.1.2:40001 and got no answer "
                               "(3 retransmissions).")
    assert only(report, "transfer-failed").params == {"command": "RETR welcome.msg",
                                                      "reply": "425 Failed to establish connection."}
    assert report.exit_code == 1


PASSIVE_ONLY = ("passive port range", "パッシブ用ポート範囲")
ACTIVE_ONLY = ("Use passive mode", "パッシブモードを使う")


def test_advice_for_an_unanswered_syn_follows_the_mode_that_failed(tmp_path: Path) -> None:
    active = Scenario()
    active.exchange(b"PORT 198,18,1,2,156,65", b"200 PORT command successful.")
    active.send(b"RETR a")
    data = Tcp("198.19.1.2", 20, "198.18.1.2", 40001)
    active.tl.add(data.syn(), data.syn(), gap=1)
    active.reply(b"425 Failed to establish connection.", delay=3)
    active.quit()
    passive = Scenario()
    passive.exchange(b"PASV", b"227 Entering Passive Mode (198,19,1,2,195,80).")
    data = Tcp("198.18.1.2", 40002, "198.19.1.2", 50000)
    passive.tl.add(data.syn(), data.syn(), gap=1)
    passive.send(b"RETR a")
    passive.reply(b"425 Failed to establish connection.", delay=3)
    passive.quit()
    (tmp_path / "a").mkdir()
    (tmp_path / "p").mkdir()
    found_active = only(active.report(tmp_path / "a"), "data-syn-unanswered")
    found_passive = only(passive.report(tmp_path / "p"), "data-syn-unanswered")
    for lang in ("en", "ja"):
        advice_active = found_active.advice(lang)
        advice_passive = found_passive.advice(lang)
        assert [side for side, _ in advice_active] == ["client"]
        assert [side for side, _ in advice_passive] == ["server", "client"]
        text_active = " ".join(text for _, text in advice_active)
        text_passive = " ".join(text for _, text in advice_passive)
        assert "198.18.1.2:40001" in text_active
        assert not any(words in text_active for words in PASSIVE_ONLY), text_active
        assert not any(words in text_passive for words in ACTIVE_ONLY), text_passive
        assert any(words in text_passive for words in PASSIVE_ONLY)
    assert (found_active.params["mode"], found_passive.params["mode"]) == ("active", "passive")


def test_active_refused_by_rst(tmp_path: Path) -> None:
    s = Scenario()
    s.exchange(b"EPRT |1|198.18.1.2|40002|", b"200 EPRT command successful.")
    s.send(b"LIST")
    data = Tcp("198.19.1.2", 44444, "198.18.1.2", 40002)
    s.tl.add(data.syn(), data.rst_to_syn())
    s.reply(b"425 Failed to establish connection.")
    s.quit()
    report = s.report(tmp_path)
    (t,) = report.sessions[0].transfers
    assert t.method == "EPRT" and t.computation is None and t.fate == "refused"
    assert t.connection.initiator.port == 44444
    assert codes(report) == ["data-refused", "transfer-failed"]
    assert only(report, "data-refused").params["target"] == "198.18.1.2:40002"
    failed = only(report, "transfer-failed")
    assert failed.params["command"] == "LIST" and "LIST" in failed.evidence  # no argument: not "LIST None"


def test_passive_never_opened(tmp_path: Path) -> None:
    s = Scenario()
    s.exchange(b"PASV", b"227 Entering Passive Mode (198,19,1,2,195,80).")
    s.send(b"RETR big.iso")
    s.reply(b"425 Failed to establish connection.", delay=5)
    s.quit()
    report = s.report(tmp_path)
    (t,) = report.sessions[0].transfers
    assert (t.method, t.announced.port, t.computation) == ("PASV", 50000, "195*256+80 = 50000")
    assert t.fate == "never-attempted"
    assert codes(report) == ["data-never-opened", "transfer-failed"]
    assert only(report, "data-never-opened").params == {"method": "PASV", "command": "RETR big.iso",
                                                        "announced": "198.19.1.2:50000"}


def test_data_connection_outside_the_capture_filter_is_not_a_problem(tmp_path: Path) -> None:
    s = Scenario()
    s.exchange(b"EPSV", b"229 Entering Extended Passive Mode (|||50010|)")
    s.send(b"RETR a")
    s.reply(b"150 Opening BINARY mode data connection.")
    s.reply(b"226 Transfer complete.")
    s.quit()
    report = s.report(tmp_path)
    assert report.sessions[0].transfers[0].fate == "not-captured"
    assert report.findings == [] and report.exit_code == 0


def test_passive_upload_with_bytes_duration_and_unused_announcement(tmp_path: Path) -> None:
    s = Scenario()
    s.exchange(b"PASV", b"227 Entering Passive Mode (198,19,1,2,195,80).")  # unused: replaced by the next
    s.exchange(b"PASV", b"227 Entering Passive Mode (198,19,1,2,195,81).")
    s.send(b"STOR up.bin")
    data = Tcp("198.18.1.2", 41999, "198.19.1.2", 50001)
    s.reply(b"150 Ok to send data.")
    data_transfer(s.tl, data, 100_000, from_initiator=True)
    s.reply(b"226 Transfer complete.")
    s.quit()
    report = s.report(tmp_path)
    unused, t = report.sessions[0].transfers
    assert unused.command is None and unused.connections == [] and unused.announced.port == 50000
    assert t.command == "STOR" and t.upload and t.fate == "established"
    assert (t.bytes_to_server(), t.bytes_to_client()) == (100_000, 0)
    assert t.connection.duration > 0 and report.exit_code == 0


def test_port_address_mismatch_nat_in_front_of_the_client(tmp_path: Path) -> None:
    """Captured at the server: the client is seen at 198.51.100.7, its PORT says 192.168.1.10."""
    s = Scenario(client="198.51.100.7", server="198.51.100.20")
    s.exchange(b"PORT 192,168,1,10,195,80", b"200 PORT command successful.")
    s.send(b"NLST")
    data = Tcp("198.51.100.20", 20, "192.168.1.10", 50000)
    for gap in (0.01, 1, 2):
        s.tl.add(data.syn(), gap=gap)
    s.reply(b"425 Failed to establish connection.")
    s.quit()
    report = s.report(tmp_path)
    assert codes(report) == ["data-syn-unanswered", "port-address-mismatch", "transfer-failed"]
    f = only(report, "port-address-mismatch")
    assert f.params == {"command": "PORT 192,168,1,10,195,80", "announced": "192.168.1.10:50000",
                        "client": "198.51.100.7"}
    assert "PORT 192,168,1,10,195,80   (195*256+80 = 50000)" in f.evidence


def test_port_bounce_attempt(tmp_path: Path) -> None:
    s = Scenario(client="1.1.1.1", server="9.9.9.9")
    s.exchange(b"PORT 8,8,8,8,0,25", b"500 Illegal PORT command.")
    s.quit()
    report = s.report(tmp_path)
    assert codes(report) == ["port-bounce-attempt"]
    assert only(report, "port-bounce-attempt").params["announced"] == "8.8.8.8:25"


def test_pasv_address_mismatch_client_substitutes_the_control_address(tmp_path: Path) -> None:
    s = Scenario(client="198.51.100.7", server="198.51.100.20")
    s.exchange(b"PASV", b"227 Entering Passive Mode (10,0,0,5,195,90).")
    s.send(b"LIST")
    data = Tcp("198.51.100.7", 45000, "198.51.100.20", 50010)  # curl connects to the control address
    data_transfer(s.tl, data, 700)
    s.reply(b"150 Here comes the directory listing.")
    s.reply(b"226 Directory send OK.")
    s.quit()
    report = s.report(tmp_path)
    (t,) = report.sessions[0].transfers
    assert t.fate == "established" and str(t.connection.responder) == "198.51.100.20:50010"
    assert codes(report) == ["pasv-address-mismatch"]
    assert only(report, "pasv-address-mismatch").params == {"announced": "10.0.0.5:50010", "server": "198.51.100.20"}
    assert report.exit_code == 1


def test_control_encrypted_after_auth_tls(tmp_path: Path) -> None:
    tl = Timeline()
    ctl = Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")
    ftp_exchange(tl, ctl, b"AUTH TLS\r\n", b"234 Proceed with negotiation.\r\n")
    ftp_exchange(tl, ctl, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(200)),
                 b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76" + bytes(100))
    report = analyze([write_pcap(tmp_path / "tls.pcap", ETHERNET, tl)])
    s = report.sessions[0]
    assert s.encrypted_at is not None
    assert [e.text for e in s.log if e.side != "note"] == ["220 hi", "AUTH TLS", "234 Proceed with negotiation."]
    assert [e.note for e in s.log if e.side == "note"] == ["encrypted"]
    assert codes(report) == ["control-encrypted"]


def test_login_failures_repeated_across_sessions(tmp_path: Path) -> None:
    tl = Timeline()
    for i in range(3):
        ctl = Tcp("10.0.0.9", 42000 + i, "10.0.0.2", 21)
        tl.add(*ctl.handshake())
        ftp_exchange(tl, ctl, None, b"220 hi\r\n")
        ftp_exchange(tl, ctl, b"USER admin\r\n", b"331 pw\r\n")
        ftp_exchange(tl, ctl, b"PASS a\r\n", b"530 Login incorrect.\r\n")
        if i == 2:
            ftp_exchange(tl, ctl, b"USER admin\r\n", b"331 pw\r\n")
            ftp_exchange(tl, ctl, b"PASS b\r\n", b"230 Login successful.\r\n")
    report = analyze([write_pcap(tmp_path / "login.pcap", ETHERNET, tl)])
    findings = [s.findings for s in report.sessions]
    assert [[f.code for f in fs] for fs in findings] == [["login-failed"]] * 3
    assert [fs[0].severity for fs in findings] == ["fail", "fail", "warn"]
    assert findings[0][0].params == {"user": "admin", "reply": "530 Login incorrect."}
    assert len([e for e in findings[0][0].evidence if "USER admin -> 530" in e]) == 3  # all three sessions


def test_slow_reply_and_threshold(tmp_path: Path) -> None:
    s = Scenario()
    s.exchange(b"CWD /archive", b"250 Directory successfully changed.", delay=7.5)
    s.quit()
    report = s.report(tmp_path)
    assert codes(report) == ["slow-reply"]
    assert only(report, "slow-reply").params == {"seconds": "7.5", "command": "CWD /archive"}
    assert s.report(tmp_path, Options(slow_reply=10)).findings == []


def test_duplicate_packets_from_two_interfaces_are_not_retransmissions(tmp_path: Path) -> None:
    """``tcpdump -i any`` on a router sees each packet twice; the SYN must not count as retransmitted."""
    s = Scenario()
    s.exchange(b"PORT 198,18,1,2,156,65", b"200 PORT command successful.")
    s.send(b"RETR x")
    data = Tcp("198.19.1.2", 20, "198.18.1.2", 40001)
    s.tl.add(data.syn(), data.syn(), gap=0.00001)
    s.reply(b"425 Failed to establish connection.", delay=1)
    report = s.report(tmp_path)
    assert report.sessions[0].transfers[0].connection.retransmissions == 0


def nat_frames(offset: float = 0.0) -> tuple[list[Frame], list[Frame]]:
    """One active session through a NAT with an FTP helper, seen inside (10.0.0.5) and outside (203.0.113.1)."""
    inside, outside = Timeline(), Timeline(start=1_700_000_000.0 + offset)
    cin = Tcp("10.0.0.5", 40000, "198.51.100.9", 21)
    cout = Tcp("203.0.113.1", 61000, "198.51.100.9", 21)
    for command, reply in [(None, b"220 hi"), (b"USER a", b"331 pw"), (b"PASS b", b"230 ok"),
                           (b"PORT 10,0,0,5,156,65", b"200 PORT ok"), (b"RETR f", b"150 go")]:
        if command is not None:
            sent = command if not command.startswith(b"PORT") else b"PORT 203,0,113,1,238,75"
            inside.add(cin.client_sends(command + b"\r\n"))
            outside.add(cout.client_sends(sent + b"\r\n"), gap=0.0005)
        outside.add(cout.server_sends(reply + b"\r\n"))
        inside.add(cin.server_sends(reply + b"\r\n"), gap=0.0015)
    data_transfer(outside, Tcp("198.51.100.9", 20, "203.0.113.1", 61003), 3000, from_initiator=True)
    data_transfer(inside, Tcp("198.51.100.9", 20, "10.0.0.5", 40001), 3000, from_initiator=True)
    outside.add(cout.server_sends(b"226 done\r\n"))
    inside.add(cin.server_sends(b"226 done\r\n"), gap=0.0005)
    return inside.frames, outside.frames


def check_nat(report: Report) -> None:
    assert len(report.sessions) == 2 and len(report.nat_pairs) == 1
    pair = report.nat_pairs[0]
    assert pair.inside.client.ip == "10.0.0.5" and pair.outside.client.ip == "203.0.113.1"
    assert pair.rewrites == [("PORT 10,0,0,5,156,65", "PORT 203,0,113,1,238,75")]
    assert sorted(f.code for f in pair.findings) == ["alg-rewrote-port", "nat-detected"]
    assert [f.code for s in report.sessions for f in s.findings] == []  # the helper made active mode work
    for s in report.sessions:
        assert s.transfers[0].fate == "established" and s.transfers[0].bytes_to_client() == 3000


def test_nat_both_sides_in_one_pcapng(tmp_path: Path) -> None:
    inside, outside = nat_frames()
    for f in outside:
        f.iface = 1
        f.data = link_frame(LINUX_SLL2, f.data[14:])
    frames = sorted(inside + outside, key=lambda f: f.ts)
    check_nat(analyze([write_pcapng(tmp_path / "both.pcapng", [ETHERNET, LINUX_SLL2], frames)]))


def test_nat_two_files_with_clock_offset(tmp_path: Path) -> None:
    """The outside capture's clock is 40 s ahead; timing lags still tell the client's side."""
    inside, outside = nat_frames(offset=40.0)
    a = write_pcap(tmp_path / "outside.pcap", ETHERNET, outside)
    b = write_pcap(tmp_path / "inside.pcap", ETHERNET, inside)
    report = analyze([a, b])
    check_nat(report)
    assert report.nat_pairs[0].inside.file == str(b)


def test_rst_from_initiator_is_not_refused(tmp_path: Path) -> None:
    s = Scenario()
    s.exchange(b"PASV", b"227 Entering Passive Mode (198,19,1,2,195,80).")
    s.send(b"RETR f")
    data = Tcp("198.18.1.2", 41999, "198.19.1.2", 50000)
    s.tl.add(*data.handshake())
    s.tl.add(data.server_sends(b"x" * 1000))
    s.tl.add(data._ip(True, RST, b""))  # the client aborts
    s.reply(b"426 Failure writing network stream.")
    report = s.report(tmp_path)
    t = report.sessions[0].transfers[0]
    assert t.fate == "established" and t.connection.rst_by == "initiator"
    assert codes(report) == ["transfer-failed"]


def test_nat_helper_in_front_of_the_server_rewrites_227(tmp_path: Path) -> None:
    """DNAT with a helper: the server (10.0.0.9) says 227 (10,0,0,9,...), the client receives (198,51,100,9,...)."""
    inside, outside = Timeline(), Timeline()  # inside: the server's side; outside: the client's side
    cin = Tcp("203.0.113.7", 40000, "10.0.0.9", 21)
    cout = Tcp("203.0.113.7", 40000, "198.51.100.9", 21)
    for command, reply, seen in [(None, b"220 hi", None), (b"USER a", b"230 ok", None),
                                 (b"PASV", b"227 Entering Passive Mode (10,0,0,9,195,80).",
                                  b"227 Entering Passive Mode (198,51,100,9,195,80).")]:
        if command is not None:
            outside.add(cout.client_sends(command + b"\r\n"))
            inside.add(cin.client_sends(command + b"\r\n"), gap=0.0015)
        inside.add(cin.server_sends(reply + b"\r\n"))
        outside.add(cout.server_sends((seen or reply) + b"\r\n"), gap=0.0015)
    a = write_pcap(tmp_path / "client-side.pcap", ETHERNET, outside)
    b = write_pcap(tmp_path / "server-side.pcap", ETHERNET, inside)
    report = analyze([b, a])
    (pair,) = report.nat_pairs
    assert pair.inside.file == str(a) and pair.outside.file == str(b)  # the client's side is "inside"
    assert pair.rewrites == [("227 Entering Passive Mode (10,0,0,9,195,80).",
                              "227 Entering Passive Mode (198,51,100,9,195,80).")]
    (finding,) = pair.findings
    assert finding.code == "alg-rewrote-port" and finding.params["command"] == "227"
    server_side = next(s for s in report.sessions if s.file == str(b))
    assert [f.code for f in server_side.findings] == []  # the server is seen at its own address on its side


def test_reused_addresses_and_ports_are_a_new_connection(tmp_path: Path) -> None:
    """Two transfers whose data connections have the same four-tuple (a passive range of one port)."""
    s = Scenario()
    for name, size in ((b"a", 3000), (b"b", 5000)):
        s.exchange(b"PASV", b"227 Entering Passive Mode (198,19,1,2,195,80).")
        s.send(b"RETR " + name)
        data = Tcp("198.18.1.2", 41999, "198.19.1.2", 50000, cseq=10_000 * size)
        s.reply(b"150 Opening BINARY mode data connection.")
        data_transfer(s.tl, data, size)
        s.reply(b"226 Transfer complete.")
    s.quit()
    report = s.report(tmp_path)
    first, second = report.sessions[0].transfers
    assert (first.bytes_to_client(), second.bytes_to_client()) == (3000, 5000)
    assert first.fate == second.fate == "established" and report.exit_code == 0


def test_implicit_ftps_on_port_990_is_encrypted_from_the_first_byte(tmp_path: Path) -> None:
    tl = Timeline()
    ctl = Tcp("10.0.0.1", 40000, "10.0.0.2", 990)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(160), b"\x16\x03\x03" + bytes(90))
    report = analyze([write_pcap(tmp_path / "ftps.pcap", ETHERNET, tl)])
    (s,) = report.sessions
    assert s.tls_from_start and [e.note for e in s.log] == ["encrypted"]
    assert [f.code for f in s.findings] == ["control-encrypted"]


def test_nat_pairs_look_alike_sessions_by_the_clients_initial_sequence_number(tmp_path: Path) -> None:
    """Two identical sessions start a millisecond apart; timing alone would pair A's inside with B's outside.
    The client's ISN, which NAT keeps, pairs them right."""
    inside, outside = Timeline(step=0.0001), Timeline(start=1_700_000_000.0, step=0.0001)
    sessions = []
    for n, isn in ((0, 1000), (1, 7000)):
        cin = Tcp("10.0.0.5", 40000 + n, "198.51.100.9", 21, cseq=isn)
        cout = Tcp("203.0.113.1", 61000 + n, "198.51.100.9", 21, cseq=isn)
        sessions.append((cin, cout, n))
    # inside: A then B; outside: B then A (the NAT forwarded B's SYN first)
    inside.add(*sessions[0][0].handshake())
    outside.add(*sessions[1][1].handshake())
    inside.add(*sessions[1][0].handshake())
    outside.add(*sessions[0][1].handshake())
    for cin, cout, n in sessions:
        for command, reply in [(None, b"220 hi"), (b"USER a", b"331 pw"), (b"PASS b", b"230 ok"),
                               (f"PORT 10,0,0,5,156,{65 + n}".encode(), b"200 PORT ok")]:
            if command is not None:
                sent = command if not command.startswith(b"PORT") else f"PORT 203,0,113,1,238,{75 + n}".encode()
                inside.add(cin.client_sends(command + b"\r\n"))
                outside.add(cout.client_sends(sent + b"\r\n"))
            outside.add(cout.server_sends(reply + b"\r\n"))
            inside.add(cin.server_sends(reply + b"\r\n"))
    report = analyze([write_pcap(tmp_path / "inside.pcap", ETHERNET, inside.frames),
                      write_pcap(tmp_path / "outside.pcap", ETHERNET, outside.frames)])
    rewrites = sorted(r for pair in report.nat_pairs for r in pair.rewrites)
    assert rewrites == [("PORT 10,0,0,5,156,65", "PORT 203,0,113,1,238,75"),
                        ("PORT 10,0,0,5,156,66", "PORT 203,0,113,1,238,76")]
