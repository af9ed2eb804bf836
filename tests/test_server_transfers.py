"""Transfers and their replies: sendfile, resume, STOU/APPE, ABOR and STAT during a transfer, 425 when the data
connection cannot be opened, and a slow disk that must not stall other sessions."""

from __future__ import annotations

import ftplib
import io
import os
import socket
import threading
import time

import pytest

from conftest import passive_range
from ftpkit.server.storage import LocalStorage
from rawftp import Raw, read_all


def connect(server, passive=True) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=10, encoding="utf-8")
    ftp.connect(server.host, server.port)
    ftp.login("alice", "secret")
    ftp.set_pasv(passive)
    return ftp


def test_downloads_use_sendfile(server, monkeypatch):
    sent = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd, in_fd, offset, count):
        n = real_sendfile(out_fd, in_fd, offset, count)
        sent.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    ftp = connect(server)
    got = io.BytesIO()
    ftp.retrbinary("RETR random.bin", got.write)
    assert got.getvalue() == (server.root / "random.bin").read_bytes()
    assert sum(sent) == 1 << 20  # every byte went through sendfile(2)


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_resume_download_and_upload(server, passive):
    ftp = connect(server, passive)
    original = (server.root / "random.bin").read_bytes()
    got = io.BytesIO()
    ftp.retrbinary("RETR random.bin", got.write, rest=1000)
    assert got.getvalue() == original[1000:]
    (server.root / "part.bin").write_bytes(original[:5000])
    ftp.storbinary("STOR part.bin", io.BytesIO(original[5000:]), rest=5000)
    assert (server.root / "part.bin").read_bytes() == original
    ftp.storbinary("APPE part.bin", io.BytesIO(b"tail"))
    assert (server.root / "part.bin").read_bytes() == original + b"tail"


def test_stou_creates_unique_names(server):
    ftp = connect(server)
    first = ftp.storbinary("STOU hello.txt", io.BytesIO(b"new"))
    assert first.startswith("226") and "hello.txt.1" in first
    assert (server.root / "hello.txt.1").read_bytes() == b"new"
    assert (server.root / "hello.txt").read_bytes() == b"hello\nworld\n"


def test_stat_and_abor_during_transfer(servers, tree):
    big = tree / "big.bin"
    with big.open("wb") as fh:
        fh.truncate(256 << 20)  # 256 MiB, sparse: the loopback buffers cannot swallow it
    server = servers.start(tree, users=["alice:secret"])
    c = Raw(server.host, server.port)
    c.login()
    c.cmd("TYPE I")
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send("RETR big.bin")
    assert c.reply().code == 150
    data.recv(65536)  # the transfer is flowing; we stop reading so it stalls
    stat = c.cmd("STAT")
    assert stat.code == 213 and "bytes so far" in stat.text and "RETR /big.bin" in stat.text
    c.send("ABOR")
    assert c.reply().code == 426
    assert c.reply().code == 226
    assert c.cmd("NOOP").code == 200
    data.close()


def test_abor_without_transfer(server):
    c = Raw(server.host, server.port)
    c.login()
    assert c.cmd("ABOR").code == 225


def test_commands_wait_for_the_transfer(server):
    """Commands pipelined behind a transfer are answered after its 226, in order."""
    c = Raw(server.host, server.port)
    c.login()
    c.cmd("TYPE I")
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send(b"RETR random.bin\r\nNOOP\r\nPWD\r\n")
    assert c.reply().code == 150
    assert read_all(data) == (server.root / "random.bin").read_bytes()
    assert [c.reply().code for _ in range(3)] == [226, 200, 257]


def test_425_when_active_target_refuses(server):
    c = Raw(server.host, server.port)
    c.login()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert c.cmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}").code == 200
    reply = c.cmd("RETR hello.txt")
    assert reply.code == 425 and f"127.0.0.1:{port}" in reply.text
    assert c.cmd("NOOP").code == 200


def test_425_when_nobody_connects_to_passive_port(servers, tree):
    server = servers.start(tree, users=["alice:secret"], data_accept_timeout=0.3)
    c = Raw(server.host, server.port)
    c.login()
    _, port = c.pasv()
    reply = c.cmd("RETR hello.txt")
    assert reply.code == 425 and str(port) in reply.text
    assert c.cmd("NOOP").code == 200


def test_426_when_data_connection_breaks(servers, tree):
    with (tree / "big.bin").open("wb") as fh:
        fh.truncate(256 << 20)
    server = servers.start(tree, users=["alice:secret"])
    c = Raw(server.host, server.port)
    c.login()
    c.cmd("TYPE I")
    host, port = c.pasv()
    data = socket.create_connection((host, port), timeout=10)
    c.send("RETR big.bin")
    assert c.reply().code == 150
    data.recv(65536)
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    data.close()  # linger 0: the client resets the data connection mid-transfer
    reply = c.reply()
    assert reply.code == 426, reply
    assert c.cmd("NOOP").code == 200


@pytest.mark.parametrize("mode", ["passive", "active"])
def test_data_connection_reset_during_sendfile_gets_426_every_time(servers, tree, mode):
    """A client that resets the data connection in the middle of a sendfile download gets its 426 at once,
    every time (the transport may already be closing when the next sendfile starts)."""
    with (tree / "big.bin").open("wb") as fh:
        fh.truncate(256 << 20)
    server = servers.start(tree, users=["alice:secret"])
    c = Raw(server.host, server.port)
    c.login()
    c.cmd("TYPE I")
    for _ in range(6):
        if mode == "passive":
            host, port = c.pasv()
            data = socket.create_connection((host, port), timeout=10)
            c.send("RETR big.bin")
        else:
            listener = socket.create_server(("127.0.0.1", 0))
            lport = listener.getsockname()[1]
            assert c.cmd(f"PORT 127,0,0,1,{lport >> 8},{lport & 255}").code == 200
            c.send("RETR big.bin")
            data, _ = listener.accept()
            listener.close()
        assert c.reply().code == 150
        data.recv(65536)
        data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        data.close()
        reply = c.reply()
        assert reply.code == 426, reply
    assert c.cmd("NOOP").code == 200
    assert c.cmd("SIZE big.bin").code == 213


def test_passive_range_exhausted_gives_425(servers, tree):
    passive = passive_range(2)  # a range of its own: runs in parallel never share it
    low, high = (int(p) for p in passive.split("-"))
    server = servers.start(tree, users=["alice:secret"], passive_ports=passive)
    clients = [Raw(server.host, server.port) for _ in range(3)]
    for c in clients:
        c.login()
    ports = {clients[0].pasv()[1], clients[1].pasv()[1]}
    assert ports == {low, high}
    reply = clients[2].cmd("PASV")
    assert reply.code == 425 and passive in reply.text
    clients[0].cmd("ABOR")  # frees its listener
    assert clients[2].pasv()[1] in (low, high)


def test_one_address_cannot_take_the_whole_passive_range(servers, tree):
    server = servers.start(tree, users=["alice:secret"], passive_ports=passive_range(20), max_sessions_per_ip=50)
    hog = [Raw(server.host, server.port) for _ in range(6)]
    for c in hog:
        c.login()
    for c in hog[:5]:  # a quarter of 20 ports
        c.pasv()
        assert c.cmd("PASV").code == 227  # announcing again replaces the last one: still one port each
    reply = hog[5].cmd("PASV")
    assert reply.code == 425 and "5 passive ports" in reply.text
    other = Raw(server.host, server.port, source="127.0.0.2")  # another client is not starved
    other.login()
    assert other.cmd("PASV").code == 227
    assert hog[0].cmd("ABOR").code == 225  # gives its announced port back
    assert hog[5].cmd("PASV").code == 227


def test_epsv_all_refuses_other_announcements(server):
    c = Raw(server.host, server.port)
    c.login()
    assert c.cmd("EPSV ALL").code == 200
    assert c.cmd("PASV").code == 503
    assert c.cmd("PORT 127,0,0,1,156,64").code == 503
    assert c.cmd("EPSV 2").code == 522
    port = c.epsv()
    data = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.send("NLST")
    assert "hello.txt" in read_all(data).decode().split("\r\n")
    assert c.reply().code == 150 and c.reply().code == 226


def test_masquerade_address_and_map(servers, tree):
    server = servers.start(tree, users=["alice:secret"], masquerade_address="203.0.113.10",
                           masquerade_map={"127.0.0.0/24": "198.18.0.9"})
    c = Raw(server.host, server.port)
    c.login()
    assert c.pasv()[0] == "198.18.0.9"  # 127.0.0.1 is in the mapped network
    server2 = servers.start(tree, users=["alice:secret"], masquerade_address="203.0.113.10")
    c2 = Raw(server2.host, server2.port)
    c2.login()
    assert c2.pasv()[0] == "203.0.113.10"


class SlowStorage(LocalStorage):
    """Storage whose stat of names containing 'slow' blocks in its worker thread until released."""

    gate = threading.Event()
    entered = threading.Event()

    def _stat(self, vpath):
        if "slow" in vpath:
            self.entered.set()
            self.gate.wait(30)
        return super()._stat(vpath)


def test_slow_storage_does_not_stall_other_sessions(servers, tree):
    SlowStorage.gate.clear()
    SlowStorage.entered.clear()
    (tree / "slow.txt").write_bytes(b"12345")
    server = servers.start(tree, storage_factory=SlowStorage, users=["alice:secret"])
    a = Raw(server.host, server.port)
    a.login()
    b = Raw(server.host, server.port)
    b.login()
    a.send("SIZE slow.txt")
    assert SlowStorage.entered.wait(10)  # session a's file operation is now stuck in the disk
    try:
        assert b.cmd("NOOP").code == 200  # another session is served meanwhile
        assert b.cmd("SIZE hello.txt").text == "12"
        a.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            a.reply()  # a has no answer yet: its SIZE is still waiting for the disk
    finally:
        SlowStorage.gate.set()
    a.sock.settimeout(10)
    assert a.reply().text == "5"


def test_unused_passive_listener_closes_after_timeout(servers, tree):
    server = servers.start(tree, users=["alice:secret"], data_accept_timeout=0.3, passive_ports=passive_range(1))
    c = Raw(server.host, server.port)
    c.login()
    _, port = c.pasv()
    # Knock from another address (the server closes such connections while it listens) until the port is
    # closed: nobody connected and no transfer command came, so it goes back to the range after the timeout.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            knock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0))
        except ConnectionRefusedError:
            break
        with knock:
            try:
                assert read_all(knock) == b""  # waits for the server to close it: no sleep needed
            except ConnectionResetError:
                continue  # it waited in the backlog when the listener closed: the next knock is refused
    else:
        raise AssertionError(f"passive port {port} still listens after 5 s")
    reply = c.cmd("RETR hello.txt")
    assert reply.code == 425 and "within 0.3 s" in reply.text
    other = Raw(server.host, server.port)
    other.login()
    assert other.pasv()[1] == port  # the only port of the range is free again


def test_active_data_connections_leave_from_port_minus_one(servers, tree):
    for _ in range(20):  # find a control port whose neighbour below is free
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port - 1))
            except OSError:
                continue
        break
    server = servers.start(tree, users=["alice:secret"], port=port, active_from_port_20=True)
    c = Raw(server.host, server.port)
    c.login()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        lport = listener.getsockname()[1]
        assert c.cmd(f"PORT 127,0,0,1,{lport >> 8},{lport & 255}").code == 200
        c.send("NLST sub")
        conn, (_, source_port) = listener.accept()
        assert read_all(conn) == b"inner.txt\r\n"
    assert source_port == port - 1  # "port 20" for a server on port 21
    assert c.reply().code == 150 and c.reply().code == 226
