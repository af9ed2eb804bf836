"""The client's fast paths against the in-process ftpkit server: a binary download into a regular file is spliced in
the kernel (byte-exact with a file several splice chunks long, through REST resume too), everything else falls back
to ``recv_into`` one buffer (standard output as a pipe, a file object without a descriptor, an appending file, TLS
under PROT P), uploads from a file go by sendfile to another host and by one buffer to this host and under TLS
(resuming too), progress is told in steps and adds up, a stalled
spliced connection times out, and ``ftpkit get``'s imports leave out what a plain get does not use."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ftpkit.client import Client, ClientOptions
from ftpkit.client import data as dc

SIZE = 5 * dc.SPLICE_CHUNK + 12345  # several splice chunks and progress steps, and not a multiple of either
FTPKIT = [sys.executable, "-m", "ftpkit"]


@pytest.fixture
def big(server) -> bytes:
    payload = os.urandom(SIZE)
    (server.root / "big.bin").write_bytes(payload)
    return payload


def recorded(lines: list[str], **kw: object) -> ClientOptions:
    return ClientOptions(timeout=10, transcript=lambda d, t: lines.append(f"{d} {t}"), **kw)  # type: ignore[arg-type]


def how_moved(lines: list[str]) -> list[str]:
    """The ``how`` of each transfer in a transcript: ``=== N bytes in T s (R MB/s, how)``."""
    return [line.rsplit(", ", 1)[1].rstrip(")") for line in lines if line.startswith("===") and " bytes in " in line]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_download_into_a_file_is_spliced_and_byte_exact(server, big, tmp_path, passive):
    lines: list[str] = []
    told: list[int] = []
    with Client(recorded(lines, passive=passive)) as ftp:
        ftp.connect("127.0.0.1", server.port)
        ftp.login("alice", "secret")
        assert ftp.download("big.bin", tmp_path / "got.bin", progress=told.append) == SIZE
    assert sha((tmp_path / "got.bin").read_bytes()) == sha(big)
    assert how_moved(lines) == ["splice"]
    assert sum(told) == SIZE  # every byte told, in steps: not once per chunk
    assert len(told) <= SIZE // dc.PROGRESS_STEP + 1


def test_resume_goes_through_the_splice_path(server, big, tmp_path):
    local = tmp_path / "part.bin"
    cut = 2 * dc.SPLICE_CHUNK + 777
    local.write_bytes(big[:cut])
    lines: list[str] = []
    with Client(recorded(lines)) as ftp:
        ftp.connect("127.0.0.1", server.port)
        ftp.login("alice", "secret")
        assert ftp.download("big.bin", local, resume=True) == SIZE - cut
    assert f"--> REST {cut}" in lines
    assert how_moved(lines) == ["splice"]
    assert sha(local.read_bytes()) == sha(big)


def test_cli_resume_and_verify_through_the_fast_path(server, big, tmp_path):
    (tmp_path / "big.bin").write_bytes(big[:SIZE // 3])
    url = f"ftp://alice:secret@127.0.0.1:{server.port}/big.bin"
    result = subprocess.run([*FTPKIT, "get", "-v", "-c", "--verify", url], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"--> REST {SIZE // 3}" in result.stderr and ", splice)" in result.stderr
    assert "verified big.bin: SHA-256" in result.stderr
    assert sha((tmp_path / "big.bin").read_bytes()) == sha(big)


def test_download_to_stdout_as_a_pipe_falls_back_and_is_byte_exact(server, big, tmp_path):
    url = f"ftp://alice:secret@127.0.0.1:{server.port}/big.bin"
    result = subprocess.run([*FTPKIT, "get", "-v", "-o", "-", url], cwd=tmp_path, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sha(result.stdout) == sha(big)
    assert b", recv_into)" in result.stderr


def test_download_to_stdout_redirected_to_a_file_is_spliced(server, big, tmp_path):
    url = f"ftp://alice:secret@127.0.0.1:{server.port}/big.bin"
    with (tmp_path / "out.bin").open("wb") as out:
        result = subprocess.run([*FTPKIT, "get", "-v", "-o", "-", url], cwd=tmp_path, stdout=out,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ", splice)" in result.stderr
    assert sha((tmp_path / "out.bin").read_bytes()) == sha(big)


def test_file_objects_the_kernel_cannot_splice_into_get_recv_into(server, big, tmp_path):
    lines: list[str] = []
    memory = io.BytesIO()
    appended = tmp_path / "appended.bin"
    appended.write_bytes(b"head")
    with Client(recorded(lines)) as ftp, appended.open("ab") as fh:
        ftp.connect("127.0.0.1", server.port)
        ftp.login("alice", "secret")
        assert ftp.retrieve_file("big.bin", memory) == SIZE  # no file descriptor
        assert ftp.retrieve_file("big.bin", fh) == SIZE  # O_APPEND: splice(2) refuses it
    assert how_moved(lines) == ["recv_into", "recv_into"]
    assert sha(memory.getvalue()) == sha(big)
    assert sha(appended.read_bytes()) == sha(b"head" + big)


def test_ascii_download_keeps_converting(server, tmp_path):
    (server.root / "lines.txt").write_bytes(b"one\ntwo\n" * 200000)
    lines: list[str] = []
    with Client(recorded(lines, ascii=True)) as ftp:
        ftp.connect("127.0.0.1", server.port)
        ftp.login("alice", "secret")
        ftp.download("lines.txt", tmp_path / "lines.txt")
    assert (tmp_path / "lines.txt").read_bytes() == b"one\ntwo\n" * 200000
    assert "--> TYPE A" in lines


def test_upload_to_this_host_is_buffered_and_resumes(server, big, tmp_path):
    (tmp_path / "up.bin").write_bytes(big)
    (server.root / "resumed.bin").write_bytes(big[:SIZE // 3])
    lines: list[str] = []
    with Client(recorded(lines)) as ftp:
        ftp.connect("127.0.0.1", server.port)
        ftp.login("alice", "secret")
        assert ftp.upload(tmp_path / "up.bin", "up.bin") == SIZE
        assert ftp.upload(tmp_path / "up.bin", "resumed.bin", resume=True) == SIZE - SIZE // 3
        assert ftp.write_bytes("mem.bin", big[:1000]) == 1000
    assert how_moved(lines) == ["readinto+sendall"] * 3
    assert f"--> REST {SIZE // 3}" in lines
    assert sha((server.root / "up.bin").read_bytes()) == sha(big) == sha((server.root / "resumed.bin").read_bytes())
    assert (server.root / "mem.bin").read_bytes() == big[:1000]


def test_upload_to_another_host_goes_by_sendfile(tmp_path):
    """Not this host (here: the other end of a Unix socket pair, not an IP peer): sendfile, from the file's
    position, byte-exact."""
    payload = os.urandom(SIZE)
    path = tmp_path / "up.bin"
    path.write_bytes(payload)
    mine, theirs = socket.socketpair()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_to_end(theirs)))
    reader.start()
    with path.open("rb") as fh:
        fh.seek(7)
        assert not dc.same_host(mine)
        assert dc.send(mine, fh, False, None, 10) == (SIZE - 7, "sendfile")
    reader.join()
    theirs.close()
    assert sha(got[0]) == sha(payload[7:])


def read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def test_same_host_is_loopback_or_the_connection_s_own_address():
    with tcp_pair() as (sender, receiver):
        assert dc.same_host(sender) and dc.same_host(receiver)


def test_under_prot_p_transfers_stay_in_tls(tls_server, cert, tmp_path):
    payload = os.urandom(SIZE)
    (tls_server.root / "big.bin").write_bytes(payload)
    lines: list[str] = []
    with Client(recorded(lines, tls="explicit", ca_file=str(cert[0]))) as ftp:
        ftp.connect("127.0.0.1", tls_server.port)
        ftp.login("alice", "secret")
        assert ftp.protected
        assert ftp.download("big.bin", tmp_path / "got.bin") == SIZE
        assert ftp.upload(tmp_path / "got.bin", "copy.bin") == SIZE
    assert how_moved(lines) == ["recv_into", "readinto+sendall"]
    assert sum("data connection TLS" in line for line in lines) == 2
    assert sha((tmp_path / "got.bin").read_bytes()) == sha(payload) == sha((tls_server.root / "copy.bin").read_bytes())


@pytest.fixture
def cert(tmp_path_factory) -> tuple[Path, Path]:
    from ftpkit.cli.cert import write_self_signed

    directory = tmp_path_factory.mktemp("cert")
    cert, key = directory / "cert.pem", directory / "key.pem"
    write_self_signed("127.0.0.1", cert, key, days=2)
    return cert, key


@pytest.fixture
def tls_server(servers, tree, cert):
    return servers.start(tree, users=["alice:secret"], tls="required", tls_cert=str(cert[0]), tls_key=str(cert[1]))


# --- the data layer on a real TCP connection ------------------------------------------------------------------------

@contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname()[:2], timeout=10)
    receiver, _ = listener.accept()
    listener.close()
    try:
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()


def test_a_stalled_spliced_connection_times_out_keeping_what_arrived(tmp_path):
    release = threading.Event()
    with tcp_pair() as (sender, receiver), (tmp_path / "got.bin").open("wb") as out:
        sender.sendall(b"x" * 100000)
        stalled = threading.Thread(target=release.wait, args=(30,))  # the sender keeps the connection open
        stalled.start()
        try:
            with pytest.raises(TimeoutError):
                dc.receive_file(receiver, out, None, timeout=0.3)
        finally:
            release.set()
            stalled.join()
    assert (tmp_path / "got.bin").read_bytes() == b"x" * 100000


def test_a_file_that_refuses_splice_midway_loses_nothing(tmp_path):
    """The kernel refuses to splice into an O_APPEND file (EINVAL) after the socket's bytes reached the pipe: they
    are written by read and write, and the rest of the connection by recv_into."""
    payload = os.urandom(3 * dc.SPLICE_CHUNK + 5)
    path = tmp_path / "appended.bin"
    with tcp_pair() as (sender, receiver), path.open("ab", buffering=0) as out:
        feeder = threading.Thread(target=lambda: (sender.sendall(payload), sender.shutdown(socket.SHUT_WR)))
        feeder.start()
        receiver.settimeout(10)
        counter = dc._Counter(None)
        assert dc._splice_into(receiver, out.fileno(), counter, 10) is False
        assert 0 < counter.total < len(payload)
        dc._receive_into(receiver, out, counter)
        feeder.join()
    assert counter.total == len(payload)
    assert path.read_bytes() == payload


def test_a_plain_get_does_not_import_what_it_does_not_use(tmp_path):
    code = ("import sys\nfrom ftpkit.cli import cli\ncli.get_command(None, 'get'); cli.get_command(None, 'put')\n"
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=60).stdout.split())
    assert "ftpkit.client.core" in loaded  # the client itself
    unused = {"rich", "ftpkit.client.mirror", "ftpkit.client.verify", "ftpkit.client.sync", "ftpkit.protocol.hashes",
              "ftpkit.protocol.listparse", "ftpkit.protocol.modify", "ftpkit.server", "ftpkit.capture",
              "ftpkit.lab", "ftpkit.doctor", "cryptography", "argon2", "asyncpg", "prometheus_client", "hashlib",
              "netrc"}
    assert sorted(unused & loaded) == []
