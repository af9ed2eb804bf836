"""Session-level behaviour: greeting, limits, idle timeout, informational commands, IPv6, listings over the
control connection."""

from __future__ import annotations

import ftplib
import socket

import pytest

from ftpkit.protocol.features import parse_features
from ftpkit.protocol.listing import parse_facts
from rawftp import Raw, read_all


def test_greeting_and_info_commands(server):
    c = Raw(server.host, server.port)
    assert c.greeting.code == 220
    assert c.cmd("SYST").text == "UNIX Type: L8"
    feat = c.cmd("FEAT")
    assert feat.code == 211
    features = parse_features(feat)
    expected = {"EPRT": "", "EPSV": "", "PASV": "", "MDTM": "", "SIZE": "", "UTF8": "", "REST": "STREAM", "TVFS": ""}
    assert expected.items() <= features.items()
    assert features["MLST"].startswith("type*;size*;modify*;perm*;unique*;")
    assert "AUTH" not in features  # no TLS configured
    assert c.cmd("OPTS UTF8 ON").code == 200
    help_reply = c.cmd("HELP")
    assert help_reply.code == 214 and "RETR" in help_reply.text and "EPSV" in help_reply.text
    assert c.cmd("HELP retr").text == "Syntax: RETR path"
    c.login()
    assert c.cmd("SITE HELP").code == 214
    assert c.cmd("SITE CHMOD 777 x").code == 550  # no such file
    assert c.cmd("SITE FROBNICATE x").code == 501
    assert c.cmd("ALLO 100").code == 202
    assert c.cmd("MODE S").code == 200 and c.cmd("STRU F").code == 200
    assert c.cmd("TYPE L 8").code == 200 and c.cmd("TYPE A N").code == 200
    assert c.cmd("QUIT").code == 221
    assert c.closed_by_server()


def test_size_mdtm_mlst_stat(server):
    c = Raw(server.host, server.port)
    c.login()
    assert c.cmd("SIZE random.bin").text == str(1 << 20)
    assert c.cmd("SIZE sub").code == 550
    mdtm = c.cmd("MDTM hello.txt")
    assert mdtm.code == 213 and len(mdtm.text) == 14 and mdtm.text.isdigit()
    mlst = c.cmd("MLST 日本語ファイル.txt")
    assert mlst.code == 250
    facts, name = parse_facts(mlst.lines[1].lstrip(" "))
    assert name == "/日本語ファイル.txt" and facts["type"] == "file" and facts["perm"] == "rawdf"
    assert facts["size"] == str(len("こんにちは\n".encode()))
    status = c.cmd("STAT")
    assert status.code == 211 and "Logged in as alice" in status.text
    listing = c.cmd("STAT sub")
    assert listing.code == 213 and listing.lines[1].endswith(" inner.txt")
    assert c.cmd("STAT nowhere").code == 550


def test_anonymous_perm_fact_is_read_only(server):
    ftp = ftplib.FTP()
    ftp.connect(server.host, server.port, timeout=10)
    ftp.login()
    facts = dict(ftp.mlsd())
    assert facts["hello.txt"]["perm"] == "r"
    assert facts["sub"]["perm"] == "el"


def test_opts_mlst_selects_the_facts_of_mlsd_and_mlst(server):
    ftp = ftplib.FTP(encoding="utf-8")
    ftp.connect(server.host, server.port, timeout=10)
    ftp.login("alice", "secret")
    entries = dict(ftp.mlsd(facts=["Size", "type", "colour"]))  # ftplib sends OPTS MLST Size;type;colour;
    assert entries["hello.txt"] == {"type": "file", "size": "12"}
    assert entries["sub"]["type"] == "dir" and set(entries["sub"]) <= {"type", "size"}
    ftp.quit()

    c = Raw(server.host, server.port)
    c.login()
    assert c.cmd("OPTS MLST size;TYPE;colour;").text == "MLST OPTS type;size;"
    feat = {line.strip() for line in c.cmd("FEAT").lines[1:-1]}
    assert "MLST type*;size*;modify;perm;unique;" in feat
    assert c.cmd("MLST hello.txt").lines[1] == " type=file;size=12; /hello.txt"
    reply = c.cmd("OPTS MLST")  # no argument: no facts
    assert reply.code == 200 and reply.text == "MLST OPTS"
    assert c.cmd("MLST hello.txt").lines[1] == "  /hello.txt"
    assert "MLST type;size;modify;perm;unique;" in {line.strip() for line in c.cmd("FEAT").lines[1:-1]}
    assert c.cmd("OPTS MLST modify;perm").text == "MLST OPTS modify;perm;"
    facts, name = parse_facts(c.cmd("MLST sub").lines[1].lstrip(" "))
    assert set(facts) == {"modify", "perm"} and name == "/sub"

    other = Raw(server.host, server.port)  # the choice is the session's own
    other.login()
    facts, _ = parse_facts(other.cmd("MLST hello.txt").lines[1].lstrip(" "))
    assert set(facts) == {"type", "size", "modify", "perm", "unique"}


def test_list_forms(server):
    c = Raw(server.host, server.port)
    c.login()

    def listing(line: str) -> list[str]:
        host, port = c.pasv()
        data = socket.create_connection((host, port), timeout=10)
        c.send(line)
        text = read_all(data).decode()
        assert c.reply().code == 150 and c.reply().code == 226
        return [row for row in text.split("\r\n") if row]

    assert listing("NLST sub") == ["inner.txt"]
    assert listing("NLST *.txt") == ["hello.txt", "日本語ファイル.txt"]
    assert listing("NLST sub/*.txt") == ["sub/inner.txt"]
    rows = listing("LIST -la")
    assert len(rows) == 5 and all(len(row.split(None, 8)) == 9 for row in rows)
    assert listing("LIST hello.txt")[0].endswith(" hello.txt")
    c.pasv()
    assert c.cmd("LIST nowhere").code == 550
    c.pasv()
    assert c.cmd("MLSD hello.txt").code == 501


def test_max_sessions_per_ip(servers, tree):
    server = servers.start(tree, max_sessions_per_ip=2)
    first, second = Raw(server.host, server.port), Raw(server.host, server.port)
    assert first.greeting.code == second.greeting.code == 220
    third = Raw(server.host, server.port)
    assert third.greeting.code == 421
    first.cmd("QUIT")
    assert first.closed_by_server()
    # the slot is free again once the first session has ended (bounded retry while the server notices)
    for _ in range(50):
        again = Raw(server.host, server.port)
        if again.greeting.code == 220:
            break
        again.close()
    assert again.greeting.code == 220


def test_max_sessions_total(servers, tree):
    server = servers.start(tree, max_sessions=1)
    first = Raw(server.host, server.port)
    assert first.greeting.code == 220
    assert Raw(server.host, server.port).greeting.code == 421


def test_idle_timeout(servers, tree):
    server = servers.start(tree, idle_timeout=0.3)
    c = Raw(server.host, server.port)
    reply = c.reply()  # nothing sent: the server speaks first after the idle timeout
    assert reply.code == 421 and "Timeout" in reply.text
    assert c.closed_by_server()


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_available(), reason="IPv6 loopback ::1 is not available on this machine")
def test_ipv6_epsv_eprt_and_pasv_refusal(servers, tree):
    server = servers.start(tree, host="::1", users=["alice:secret"])
    c = Raw("::1", server.port)
    c.login()
    reply = c.cmd("PASV")
    assert reply.code == 522 and "EPSV" in reply.text
    assert c.cmd("PORT 127,0,0,1,156,64").code == 522
    assert c.cmd("EPRT |1|127.0.0.1|40000|").code == 522
    port = c.epsv()
    data = socket.create_connection(("::1", port), timeout=10)
    c.send("RETR hello.txt")
    assert read_all(data) == b"hello\r\nworld\r\n"
    assert c.reply().code == 150 and c.reply().code == 226
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen(1)
        lport = listener.getsockname()[1]
        assert c.cmd(f"EPRT |2|::1|{lport}|").code == 200
        c.send("NLST sub")
        conn, _ = listener.accept()
        assert read_all(conn) == b"inner.txt\r\n"
    assert c.reply().code == 150 and c.reply().code == 226
    # ftplib chooses EPSV on IPv6 by itself
    ftp = ftplib.FTP()
    ftp.connect("::1", server.port, timeout=10)
    ftp.login("alice", "secret")
    assert "hello.txt" in ftp.nlst()
