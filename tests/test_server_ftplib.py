"""The server driven by Python's ftplib (a real client), both modes, byte-exact transfers."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os

import pytest


def connect(server, user="alice", password="secret", passive=True) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=10, encoding="utf-8")
    ftp.connect(server.host, server.port)
    ftp.login(user, password)
    ftp.set_pasv(passive)
    return ftp


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_download_upload_byte_exact(server, passive):
    ftp = connect(server, passive=passive)
    original = (server.root / "random.bin").read_bytes()
    got = io.BytesIO()
    ftp.retrbinary("RETR random.bin", got.write)
    assert hashlib.sha256(got.getvalue()).digest() == hashlib.sha256(original).digest()
    payload = os.urandom((1 << 20) + 17)
    ftp.storbinary("STOR up.bin", io.BytesIO(payload))
    assert (server.root / "up.bin").read_bytes() == payload
    assert ftp.size("up.bin") == len(payload)
    ftp.quit()


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_listing_with_japanese_names(server, passive):
    ftp = connect(server, passive=passive)
    names = ftp.nlst()
    assert "日本語ファイル.txt" in names and "フォルダ" in names
    lines: list[str] = []
    ftp.retrlines("LIST", lines.append)
    assert any(line.startswith("-rw") and line.endswith(" 日本語ファイル.txt") for line in lines)
    assert any(line.startswith("d") and line.endswith(" フォルダ") for line in lines)
    facts = dict(ftp.mlsd())
    assert facts["random.bin"]["type"] == "file" and facts["random.bin"]["size"] == str(1 << 20)
    assert facts["フォルダ"]["type"] == "dir"
    ftp.quit()


def test_file_management(server):
    ftp = connect(server)
    assert ftp.mkd("新しい") == "/新しい"
    ftp.cwd("新しい")
    assert ftp.pwd() == "/新しい"
    ftp.storbinary("STOR a.txt", io.BytesIO(b"x"))
    ftp.rename("a.txt", "b.txt")
    assert ftp.nlst() == ["b.txt"]
    ftp.delete("b.txt")
    ftp.cwd("..")
    ftp.rmd("新しい")
    assert not (server.root / "新しい").exists()
    ftp.quit()


def test_ascii_mode_converts_line_endings(server):
    ftp = connect(server)
    lines: list[str] = []
    ftp.retrlines("RETR hello.txt", lines.append)
    assert lines == ["hello", "world"]
    raw = io.BytesIO()
    ftp.sendcmd("TYPE A")
    with ftp.transfercmd("RETR hello.txt") as conn:
        while chunk := conn.recv(65536):
            raw.write(chunk)
    ftp.voidresp()
    assert raw.getvalue() == b"hello\r\nworld\r\n"
    ftp.storlines("STOR text.txt", io.BytesIO(b"one\r\ntwo\r\n"))
    assert (server.root / "text.txt").read_bytes() == b"one\ntwo\n"
    ftp.quit()


def test_anonymous_is_read_only(server):
    ftp = connect(server, "anonymous", "guest@example.com")
    assert "random.bin" in ftp.nlst()
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.storbinary("STOR evil.txt", io.BytesIO(b"x"))
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.mkd("evil")
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.delete("hello.txt")
    assert not (server.root / "evil.txt").exists()
    ftp.quit()
