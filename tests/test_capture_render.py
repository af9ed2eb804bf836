"""The three renderings of one analysis: the terminal report with its sequence diagram, JSON with Wireshark's field
names, and a self-contained HTML page with SVG diagrams; in English and Japanese; and the CLI's exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from pcapbuild import ETHERNET, Tcp, Timeline, data_transfer, ftp_exchange, write_pcap


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    """The issue's example (active, SYN unanswered, 425), then a passive download that works."""
    tl = Timeline()
    ctl = Tcp("198.18.1.2", 41872, "198.19.1.2", 21)
    tl.add(*ctl.handshake())
    for command, reply in [(None, b"220 (vsFTPd 3.0.3)"), (b"USER anonymous", b"331 Please specify the password."),
                           (b"PASS hunter2", b"230 Login successful."),
                           (b"PORT 198,18,1,2,156,65", b"200 PORT command successful")]:
        ftp_exchange(tl, ctl, command + b"\r\n" if command else None, reply + b"\r\n")
    tl.add(ctl.client_sends(b"RETR welcome.msg\r\n"))
    data = Tcp("198.19.1.2", 20, "198.18.1.2", 40001)
    for gap in (0.01, 1, 2, 4):
        tl.add(data.syn(), gap=gap)
    ftp_exchange(tl, ctl, None, b"425 Failed to establish connection.\r\n", delay=1)
    ftp_exchange(tl, ctl, b"PASV\r\n", b"227 Entering Passive Mode (198,19,1,2,195,80).\r\n")
    tl.add(ctl.client_sends(b"RETR welcome.msg\r\n"))
    data_transfer(tl, Tcp("198.18.1.2", 41900, "198.19.1.2", 50000), 4000)
    ftp_exchange(tl, ctl, None, b"150 Opening BINARY mode data connection\r\n")
    ftp_exchange(tl, ctl, None, b"226 Transfer complete.\r\n")
    return write_pcap(tmp_path / "example.pcap", ETHERNET, tl)


def ftpkit(*args: str, env_lang: str = "C.UTF-8") -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": env_lang, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ftpkit", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def test_text_report_draws_the_textbook_diagram(capture: Path) -> None:
    proc = ftpkit("analyze", str(capture))
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    lines = [re.sub(r"^\s*\d+\.\d{3}\s+", "", line).rstrip() for line in out.splitlines()]
    start = lines.index("---> PORT 198,18,1,2,156,65   (156*256+65 = 40001)")
    assert lines[start + 1].startswith("<--- 200 PORT command successful")
    assert lines[start + 2] == "---> RETR welcome.msg"
    assert lines[start + 3] == ("<=== SYN from 198.19.1.2:20 to 198.18.1.2:40001   no SYN-ACK, 3 retransmissions")
    assert lines[start + 4].startswith("<--- 425 Failed to establish connection.")
    assert "===> SYN from 198.18.1.2:41900 to 198.19.1.2:50000   3.9 KiB" in out
    assert "client 198.18.1.2:41872" in out and "server 198.19.1.2:21" in out
    assert "PASS ****" in out and "hunter2" not in out
    assert "[data-syn-unanswered]" in out and "[transfer-failed]" in out


def test_show_passwords(capture: Path) -> None:
    assert "PASS hunter2" in ftpkit("analyze", "--show-passwords", str(capture)).stdout


def test_json_schema_and_wireshark_names(capture: Path) -> None:
    proc = ftpkit("analyze", "--json", str(capture))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["schema"] == 1 and doc["summary"]["exit_code"] == 1 and doc["summary"]["sessions"] == 1
    (s,) = doc["sessions"]
    assert s["client"] == {"ip": "198.18.1.2", "port": 41872} and s["user"] == "anonymous"
    commands = [e["ftp.request.command"] for e in s["log"] if e["side"] == "client"]
    assert commands == ["USER", "PASS", "PORT", "RETR", "PASV", "RETR"]
    assert [e["ftp.request.arg"] for e in s["log"] if e["side"] == "client"][1] == "****"
    codes = [e["ftp.response.code"] for e in s["log"] if e["side"] == "server"]
    assert codes == [220, 331, 230, 200, 425, 227, 150, 226]
    active, passive = s["transfers"]
    assert active["ftp.active.port"] == 40001 and active["ftp.active.cip"] == "198.18.1.2"
    assert active["ftp.active.nat"] is False and active["computation"] == "156*256+65 = 40001"
    assert active["fate"] == "syn-unanswered" and active["data"]["retransmissions"] == 3
    assert active["data"]["from_port_20"] is True and active["final"]["ftp.response.code"] == 425
    assert passive["ftp.passive.port"] == 50000 and passive["bytes_to_client"] == 4000
    assert passive["fate"] == "established" and passive["final"]["ftp.response.code"] == 226
    assert {f["code"] for f in s["findings"]} == {"data-syn-unanswered", "transfer-failed"}
    assert all(f["advice"] and f["summary"] for f in s["findings"])


def test_japanese_report(capture: Path) -> None:
    doc = json.loads(ftpkit("analyze", "--json", "--lang", "ja", str(capture)).stdout)
    summaries = [f["summary"] for f in doc["sessions"][0]["findings"]]
    assert any("SYN に応答がありません" in text for text in summaries)
    text = ftpkit("analyze", str(capture), env_lang="ja_JP.UTF-8").stdout  # the language from LANG
    assert "セッション 1" in text and "クライアント 198.18.1.2:41872" in text


def test_html_page_is_self_contained_with_svg(capture: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    proc = ftpkit("analyze", "--html", str(page), str(capture))
    assert proc.returncode == 1
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) == 1
    root = ElementTree.fromstring(svgs[0])  # well-formed
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "PORT 198,18,1,2,156,65 · (156*256+65 = 40001)" in texts
    assert any(t.startswith("SYN from 198.19.1.2:20 to 198.18.1.2:40001") for t in texts)
    assert "data-syn-unanswered" in html and "156*256+65 = 40001" in html


def test_healthy_capture_exits_0(tmp_path: Path) -> None:
    tl = Timeline()
    ctl = Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")
    ftp_exchange(tl, ctl, b"QUIT\r\n", b"221 bye\r\n")
    proc = ftpkit("analyze", str(write_pcap(tmp_path / "ok.pcap", ETHERNET, tl)))
    assert proc.returncode == 0 and "No problem found." in proc.stdout


def test_usage_errors_are_one_line_exit_2() -> None:
    proc = ftpkit("analyze")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = ftpkit("analyze", "--ftp-port", "0", "x.pcap")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
