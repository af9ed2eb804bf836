"""Password logins: hashes from other servers (made by real tools), bounded and fair verification, the cache."""

from __future__ import annotations

import asyncio
import ftplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import RunningServer, ServerThread, require_peer
from ftpkit.server.accounts import load_users_file
from ftpkit.server.config import ConfigError
from ftpkit.server.passwords import FairGate, HashSettings, PasswordVerifier, check_hash, hash_password, verify_hash
from rawftp import Raw, read_all


def _openssl(flag: str, password: str) -> str:
    openssl = require_peer("openssl")
    out = subprocess.run([openssl, "passwd", flag, "-stdin"], input=password, capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.strip()


def _mkpasswd(method: str, password: str) -> str:
    mkpasswd = require_peer("mkpasswd")
    out = subprocess.run([mkpasswd, "-m", method, "--stdin"], input=password, capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.strip()


HASHERS = {
    "sha512crypt": lambda pw: _openssl("-6", pw),
    "sha256crypt": lambda pw: _openssl("-5", pw),
    "yescrypt": lambda pw: _mkpasswd("yescrypt", pw),
    "bcrypt": lambda pw: _mkpasswd("bcrypt", pw),
    "argon2id": lambda pw: hash_password(pw),
}


@pytest.mark.parametrize("scheme", sorted(HASHERS))
def test_hashes_of_other_servers_verify(scheme: str) -> None:
    stored = HASHERS[scheme]("s3cret-パス")
    assert check_hash(stored) is None
    assert verify_hash(stored, "s3cret-パス")
    assert not verify_hash(stored, "s3cret-パ")
    assert not verify_hash(stored, "")


@pytest.mark.parametrize("bad", ["secret", "$1$abc$def", "$6$", "$argon2id$v=19$broken", "$y$garbage"])
def test_unusable_hashes_are_refused_with_a_reason(bad: str) -> None:
    assert check_hash(bad) is not None


def test_users_file_with_a_plaintext_password_is_one_line_error(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text('[users.bob]\npassword_hash = "hunter2"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_users_file(users, tmp_path)
    assert "users.bob" in str(info.value) and "plaintext" in str(info.value) and "\n" not in str(info.value)


def test_users_migrated_from_vsftpd_log_in(servers: ServerThread, tree: Path, tmp_path: Path) -> None:
    """A users file with the $6$ and $y$ hashes that vsftpd/pure-ftpd/PAM keep: real logins with ftplib."""
    users = tmp_path / "users.toml"
    users.write_text(
        f'[users.carol]\npassword_hash = "{HASHERS["sha512crypt"]("carol-pw")}"\nwrite = true\n'
        f'[users.dave]\npassword_hash = "{HASHERS["yescrypt"]("dave-pw")}"\n', encoding="utf-8")
    running = servers.start(tree, users_file=str(users))
    for name, password in (("carol", "carol-pw"), ("dave", "dave-pw")):
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", running.port, timeout=10)
            assert ftp.login(name, password).startswith("230")
    with ftplib.FTP() as ftp:
        ftp.connect("127.0.0.1", running.port, timeout=10)
        with pytest.raises(ftplib.error_perm, match="530"):
            ftp.login("carol", "dave-pw")


def _login(running: RunningServer, name: str, password: str) -> str:
    with ftplib.FTP() as ftp:
        ftp.connect("127.0.0.1", running.port, timeout=20)
        try:
            return ftp.login(name, password)[:3]
        except ftplib.error_perm as exc:
            return str(exc)[:3]


def test_a_reconnecting_client_pays_the_hash_once(server: RunningServer) -> None:
    verifier = server.server.shared.accounts.verifier
    before = verifier.hashed
    assert [_login(server, "alice", "secret") for _ in range(5)] == ["230"] * 5
    assert verifier.hashed - before == 1
    assert verifier.cache_hits >= 4
    # a wrong password is never answered from the cache, and costs a full verification each time
    assert _login(server, "alice", "wrong") == "530"
    assert verifier.hashed - before == 2


def test_the_cache_can_be_turned_off(servers: ServerThread, tree: Path) -> None:
    running = servers.start(tree, users=["alice:secret"], password_cache_ttl=0)
    verifier = running.server.shared.accounts.verifier
    assert [_login(running, "alice", "secret") for _ in range(3)] == ["230"] * 3
    assert verifier.hashed == 3


def test_a_login_storm_runs_at_most_the_bound_of_hashes_at_once(servers: ServerThread, tree: Path) -> None:
    running = servers.start(tree, users=["alice:secret"], password_cache_ttl=0, hash_concurrency=2,
                            max_sessions_per_ip=64)
    verifier = running.server.shared.accounts.verifier
    results: list[str] = []
    threads = [threading.Thread(target=lambda i=i: results.append(_login(running, "alice", "secret" if i % 2
                                                                                            else "wrong")))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["230"] * 8 + ["530"] * 8
    assert verifier.hashed == 16
    assert 1 <= verifier.peak <= 2


def test_gate_serves_sources_in_turn() -> None:
    async def main() -> list[str]:
        gate = FairGate(1)
        order: list[str] = []
        await gate.acquire("holder")

        async def waiter(source: str) -> None:
            await gate.acquire(source)
            order.append(source)
            await asyncio.sleep(0)
            gate.release()

        storm = [asyncio.create_task(waiter("attacker")) for _ in range(10)]
        await asyncio.sleep(0)
        honest = asyncio.create_task(waiter("honest"))
        await asyncio.sleep(0)
        gate.release()
        await asyncio.wait_for(asyncio.gather(*storm, honest), 10)
        return order

    order = asyncio.run(main())
    assert len(order) == 11
    assert order.index("honest") <= 1, order  # one attacker turn at most before the honest source


def test_cancelled_waiter_gives_its_turn_away() -> None:
    async def main() -> bool:
        gate = FairGate(1)
        await gate.acquire("a")
        gone = asyncio.create_task(gate.acquire("b"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        gate.release()
        await asyncio.wait_for(gate.acquire("c"), 5)
        return gate.free == 0 and not gate.waiting

    assert asyncio.run(main())


def test_wrong_passwords_from_one_source_do_not_starve_another() -> None:
    stored = hash_password("right", HashSettings(memory_kib=8192, time_cost=1))

    async def main() -> int:
        verifier = PasswordVerifier(concurrency=1, cache_ttl=0)
        try:
            storm = [asyncio.create_task(verifier.verify(stored, "wrong", "198.51.100.7")) for _ in range(12)]
            await asyncio.sleep(0)
            honest = asyncio.create_task(verifier.verify(stored, "right", "192.0.2.1"))
            assert await asyncio.wait_for(honest, 30)
            done_before = sum(1 for t in storm if t.done())
            assert not any(await asyncio.gather(*storm))
            return done_before
        finally:
            verifier.close()

    assert asyncio.run(main()) <= 2


def test_the_failed_login_delay_holds_no_thread(servers: ServerThread, tree: Path) -> None:
    """One I/O worker, one hashing thread, a 30 s delay before a wrong password is answered: while session A waits
    for that answer, session B logs in (a hash: the hashing thread) and downloads a file (the I/O worker) to its
    226. Had the delay held either thread, B would wait for it (and time out)."""
    running = servers.start(tree, users=["alice:secret"], io_threads=1, hash_concurrency=1, password_cache_ttl=0,
                            login_fail_delay=30)
    registry = running.server.metrics.registry
    failed = {"result": "failed", "reason": "credentials"}
    a = Raw(running.host, running.port)
    assert a.cmd("USER alice").code == 331
    a.send("PASS wrong")
    deadline = time.monotonic() + 10
    for _ in range(1000):  # until the server has checked the password and started the delay
        if registry.get_sample_value("ftpkit_logins_total", failed) or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # polling the server's counter, bounded
    assert registry.get_sample_value("ftpkit_logins_total", failed) == 1
    b = Raw(running.host, running.port)
    b.login()
    assert b.cmd("TYPE I").code == 200
    host, port = b.pasv()
    data = socket.create_connection((host, port), timeout=10)
    b.send("RETR hello.txt")
    assert b.reply().code == 150
    assert read_all(data) == (tree / "hello.txt").read_bytes()
    assert b.reply().code == 226
    b.close()
    a.sock.setblocking(False)  # a look, not a wait: A's answer has not come yet, it is still in its delay
    with pytest.raises(BlockingIOError):
        a.sock.recv(1, socket.MSG_PEEK)
    assert not a.pending
    a.close()
