"""Users from PostgreSQL (``--users-db``, ``ftpkit user ... --db``) against a real PostgreSQL server: a throwaway
cluster initialised in a temp folder (tests/pgcluster.py), one database per test."""

from __future__ import annotations

import asyncio
import ftplib
import io
import itertools
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import RunningServer, ServerThread, free_port
from pgcluster import PgCluster
from test_cli_serve import FTPKIT, start_serve, stop

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster.create()
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        cluster.remove()


@pytest.fixture
def db(pg: PgCluster) -> str:
    """A fresh database with ftpkit's schema (made by `ftpkit user init`), as a URL with the password."""
    name = f"ftpkit_t{next(_databases)}"
    pg.psql(f"CREATE DATABASE {name}")
    url = pg.url(name)
    result = user_cli("init", "--db", url)
    assert result.returncode == 0, result.stderr
    return url


def user_cli(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*FTPKIT, "user", *args]
    if password is not None:
        argv.append("--password-stdin")
    return subprocess.run(argv, input=f"{password}\n" if password is not None else None, capture_output=True,
                          text=True, timeout=60)


def add(url: str, name: str, password: str, *options: str) -> None:
    result = user_cli("add", name, "--db", url, *options, password=password)
    assert result.returncode == 0, result.stderr


def login(server: RunningServer, user: str, password: str) -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", server.port, timeout=10)
    ftp.login(user, password)
    return ftp


def login_reply(server: RunningServer, user: str, password: str) -> str:
    """The reply to PASS (230, 530, 421 ...), as text."""
    try:
        ftp = login(server, user, password)
    except ftplib.Error as exc:
        return str(exc)
    ftp.quit()
    return "230"


# --- schema and the command line ------------------------------------------------------------------------------
def test_user_init_creates_the_schema_once(pg):
    pg.psql("CREATE DATABASE ftpkit_init")
    url = pg.url("ftpkit_init")
    first = user_cli("init", "--db", url)
    assert first.returncode == 0 and "schema version 0 -> 1" in first.stdout, first.stderr
    assert pg.psql("SELECT version FROM ftpkit_schema", "ftpkit_init").split() == ["1"]
    again = user_cli("init", "--db", url)
    assert again.returncode == 0 and "already has ftpkit's schema version 1" in again.stdout
    assert pg.psql("SELECT count(*) FROM ftpkit_schema", "ftpkit_init").strip() == "1"
    assert pg.password not in first.stdout + again.stdout  # the URL is shown without its password


def test_user_commands_manage_the_database(db, pg):
    add(db, "alice", "secret", "--home", "alice")
    add(db, "bob", "pw", "--read-only")
    listing = user_cli("list", "--db", db)
    assert listing.returncode == 0
    assert listing.stdout.splitlines() == ["alice\tread-write\tenabled\talice", "bob\tread-only\tenabled\t."]
    database = db.rsplit("/", 1)[1]
    stored = pg.psql("SELECT password_hash FROM ftpkit_users WHERE name = 'alice'", database).strip()
    assert stored.startswith("$argon2id$") and "secret" not in stored
    assert user_cli("passwd", "alice", "--db", db, password="new").returncode == 0
    assert pg.psql("SELECT password_hash FROM ftpkit_users WHERE name = 'alice'", database).strip() != stored
    assert user_cli("disable", "bob", "--db", db).returncode == 0
    assert "bob\tread-only\tdisabled\t." in user_cli("list", "--db", db).stdout
    assert user_cli("enable", "bob", "--db", db).returncode == 0
    assert user_cli("del", "bob", "--db", db).returncode == 0
    assert user_cli("list", "--db", db).stdout.splitlines() == ["alice\tread-write\tenabled\talice"]
    missing = user_cli("del", "bob", "--db", db)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("NAME: no user 'bob' in "
                                                                       f"{db.replace(pg.password, '***')}")


def test_user_commands_on_a_database_without_schema_or_unreachable(pg):
    pg.psql("CREATE DATABASE ftpkit_bare")
    bare = user_cli("list", "--db", pg.url("ftpkit_bare"))
    assert bare.returncode == 2 and len(bare.stderr.strip().splitlines()) == 1
    assert "has no ftpkit tables: create them with `ftpkit user init --db URL`" in bare.stderr
    down = user_cli("list", "--db", f"postgresql://postgres:x@127.0.0.1:{free_port()}/postgres")
    assert down.returncode == 2 and len(down.stderr.strip().splitlines()) == 1
    assert "ftpkit user list: --db: cannot connect to postgresql://postgres:***@127.0.0.1:" in down.stderr
    wrong = user_cli("list", "--db", "mysql://localhost/x")
    assert wrong.returncode == 2 and "is not a postgresql://" in wrong.stderr


def test_the_users_file_has_the_same_commands(tmp_path):
    users = tmp_path / "users.toml"
    assert user_cli("add", "carol", "--file", str(users), password="pw").returncode == 0
    assert user_cli("disable", "carol", "--file", str(users)).returncode == 0
    assert user_cli("list", "--file", str(users)).stdout.splitlines() == ["carol\tread-write\tdisabled\t."]
    assert user_cli("passwd", "carol", "--file", str(users), password="pw2").returncode == 0
    assert user_cli("enable", "carol", "--file", str(users)).returncode == 0
    assert user_cli("del", "carol", "--file", str(users)).returncode == 0
    assert user_cli("list", "--file", str(users)).stdout == ""


def test_a_disabled_user_in_the_users_file_is_refused(servers: ServerThread, tree, tmp_path):
    users = tmp_path / "users.toml"
    for name in ("carol", "dave"):
        assert user_cli("add", name, "--file", str(users), password="pw").returncode == 0
    assert user_cli("disable", "dave", "--file", str(users)).returncode == 0
    server = servers.start(tree, users_file=str(users), anonymous=False)
    assert login_reply(server, "carol", "pw") == "230"
    assert login_reply(server, "dave", "pw").startswith("530")


# --- serving from the database ---------------------------------------------------------------------------------
def test_logins_from_the_database_with_home_and_write_permission(servers: ServerThread, tree, db):
    (tree / "sub" / "mine.txt").write_bytes(b"mine\n")
    add(db, "alice", "secret", "--home", "sub")
    add(db, "reader", "pw", "--read-only")
    server = servers.start(tree, users_db=db, anonymous=False)
    ftp = login(server, "alice", "secret")
    assert sorted(ftp.nlst()) == ["inner.txt", "mine.txt"]  # home: sub, relative to the root
    ftp.storbinary("STOR up.bin", io.BytesIO(b"x" * 1000))
    assert (tree / "sub" / "up.bin").read_bytes() == b"x" * 1000
    ftp.quit()
    ftp = login(server, "reader", "pw")
    assert "hello.txt" in ftp.nlst()
    with pytest.raises(ftplib.error_perm, match=r"^550 Permission denied: this account is read-only"):
        ftp.storbinary("STOR x", io.BytesIO(b"x"))
    ftp.quit()
    assert login_reply(server, "alice", "wrong").startswith("530")
    assert login_reply(server, "nobody-here", "secret").startswith("530")


def test_changes_are_seen_by_every_node_at_the_next_login(servers: ServerThread, tree, db):
    nodes = [servers.start(tree, users_db=db, anonymous=False) for _ in range(2)]
    add(db, "alice", "one")  # added after both nodes started
    for node in nodes:
        for _ in range(2):  # the second login is served from the password cache
            assert login_reply(node, "alice", "one") == "230"
        assert node.server.shared.accounts.verifier.cache_hits >= 1
    assert user_cli("passwd", "alice", "--db", db, password="two").returncode == 0
    for node in nodes:
        assert login_reply(node, "alice", "one").startswith("530")  # the cached old password is not enough
        assert login_reply(node, "alice", "two") == "230"
    assert user_cli("disable", "alice", "--db", db).returncode == 0
    for node in nodes:
        assert login_reply(node, "alice", "two").startswith("530")  # refused although its password is cached
    assert user_cli("enable", "alice", "--db", db).returncode == 0
    assert all(login_reply(node, "alice", "two") == "230" for node in nodes)
    assert user_cli("del", "alice", "--db", db).returncode == 0
    assert all(login_reply(node, "alice", "two").startswith("530") for node in nodes)


def test_quick_users_and_the_database_together(servers: ServerThread, tree, db):
    add(db, "alice", "from-db")
    server = servers.start(tree, users_db=db, users=["bob:quick"], anonymous=False)
    assert login_reply(server, "alice", "from-db") == "230"
    assert login_reply(server, "bob", "quick") == "230"


# --- faults ---------------------------------------------------------------------------------------------------
def one_line_exit_2(args: list[str], cwd: Path) -> str:
    result = subprocess.run([*FTPKIT, "serve", "--port", "0", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip()


def test_serve_with_a_database_it_cannot_use_says_so_in_one_line(pg, tree):
    refused = one_line_exit_2(["--users-db", pg.url(password="wrong-password")], tree)
    assert refused.startswith("ftpkit serve: users_db: cannot connect to postgresql://postgres:***@127.0.0.1:")
    assert 'password authentication failed for user "postgres"' in refused and "wrong-password" not in refused
    port = free_port()
    down = one_line_exit_2(["--users-db", f"postgresql://postgres:pw@127.0.0.1:{port}/postgres"], tree)
    assert down.startswith(f"ftpkit serve: users_db: cannot connect to postgresql://postgres:***@127.0.0.1:{port}/")
    assert "refused" in down.lower()
    pg.psql("CREATE DATABASE ftpkit_noschema")
    bare = one_line_exit_2(["--users-db", pg.url("ftpkit_noschema")], tree)
    assert bare.endswith("has no ftpkit tables: create them with `ftpkit user init --db URL`")
    assert one_line_exit_2(["--users-db", "sqlite:///x.db"], tree) == (
        "ftpkit serve: users_db: 'sqlite:///x.db' is not a postgresql://USER@HOST[:PORT]/DATABASE URL")


def test_serve_names_the_database_without_its_password(pg, db, tree):
    proc, _, line = start_serve(["--users-db", db], tree)
    try:
        assert f"users from {db.replace(pg.password, '***')}" in line and pg.password not in line
    finally:
        assert stop(proc) == 0


def test_a_database_outage_fails_logins_with_421_and_recovers_by_itself(servers: ServerThread, tree):
    cluster = PgCluster.create()  # a cluster of its own: this test stops it
    try:
        cluster.start()
        url = cluster.url()
        assert user_cli("init", "--db", url).returncode == 0
        add(url, "alice", "secret")
        server = servers.start(tree, users_db=url, anonymous=True)
        assert login_reply(server, "alice", "secret") == "230"
        cluster.stop("immediate")  # as a crash: the backends send nothing, the pool's connections look alive
        for _ in range(3):  # not 530 (the password is not wrong), and no crash
            reply = login_reply(server, "alice", "secret")
            assert reply.startswith("421 Login service unavailable (user database); try again later."), reply
        assert login_reply(server, "anonymous", "a@b") == "230"  # the server goes on
        cluster.start()
        assert login_reply(server, "alice", "secret") == "230"  # no restart: the pool reconnects
        assert login_reply(server, "alice", "wrong") == "530 Login incorrect."
    finally:
        cluster.stop()
        cluster.remove()


class Relay:
    """A TCP relay to the database on a loopback port of its own, in a thread. :meth:`freeze` makes the connections
    open so far go silent without closing (a database host that vanished, a failover behind the same address);
    new connections pass."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.frozen: set[asyncio.StreamWriter] = set()
        self.live: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.server: asyncio.Server
        ready = threading.Event()

        async def start() -> None:
            self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()),
                                       daemon=True)
        self.thread.start()
        assert ready.wait(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *ends: asyncio.StreamWriter) \
            -> None:
        while data := await reader.read(65536):
            if any(end in self.frozen for end in ends):
                continue  # swallowed: the peer waits for an answer that never comes
            writer.write(data)
            await writer.drain()
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.live.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer, writer, up_writer),
                             self._pipe(up_reader, writer, writer, up_writer), return_exceptions=True)

    def freeze(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.frozen.update(self.live))

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for writer in self.live:
                writer.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_connections_gone_silent_are_replaced_at_the_next_login(servers: ServerThread, tree, pg, db):
    add(db, "alice", "secret")
    relay = Relay(pg.port)
    try:
        server = servers.start(tree, users_db=db.replace(f":{pg.port}/", f":{relay.port}/"), anonymous=False)
        assert login_reply(server, "alice", "secret") == "230"
        relay.freeze()
        # The lookup on the silent connection times out; the pool drops its connections and asks a fresh one.
        assert login_reply(server, "alice", "secret") == "230"
    finally:
        relay.close()
