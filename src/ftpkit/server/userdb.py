"""Users from a PostgreSQL database (``users_db = "postgresql://..."``), shared by every node of a cluster.

Every login looks the user up (one primary-key SELECT through a pool of connections), so a user added, changed,
disabled or deleted with ``ftpkit user ... --db URL`` is seen by every node at its next login, without a restart.
A disabled or deleted user is refused even while its password is in the verifier's cache: the lookup comes first
and the cache is keyed by the stored hash (a new password is a new hash, a miss).

Faults: at start-up (:meth:`PostgresUsers.open`) an unreachable database, refused credentials or a missing schema is
a :class:`~ftpkit.server.config.ConfigError` naming ``users_db``. Later, a lookup that cannot reach the database
raises :class:`~ftpkit.server.accounts.UsersUnavailable` (the login gets 421, not 530); the pool drops its broken
connections and opens new ones at the next lookup, so logins work again as soon as the database is back.

The schema is versioned (:data:`MIGRATIONS`); :func:`init_schema` (``ftpkit user init --db URL``) applies what is
missing under an advisory lock, so running it twice, or on two nodes at once, is harmless. Driver: asyncpg (see the
README's design notes for the measurement).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ftpkit.server.accounts import UserEntry, UsersUnavailable
from ftpkit.server.config import ConfigError, redact_url
from ftpkit.server.passwords import scheme_of

log = logging.getLogger("ftpkit.server")

SCHEMA_VERSION = 1
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
        CREATE TABLE ftpkit_users (
            name          text PRIMARY KEY CHECK (name <> '' AND length(name) <= 255),
            password_hash text NOT NULL,
            home          text NOT NULL DEFAULT '.',
            write         boolean NOT NULL DEFAULT false,
            enabled       boolean NOT NULL DEFAULT true,
            created       timestamptz NOT NULL DEFAULT now(),
            changed       timestamptz NOT NULL DEFAULT now()
        )
    """),
)
"""(version, SQL) in order; a released migration is never edited, a change is a new one."""

SCHEMA_LOCK = 0x66747069  # pg_advisory_xact_lock key: one `ftpkit user init` at a time
LOOKUP_SQL = "SELECT name, password_hash, home, write FROM ftpkit_users WHERE name = $1 AND enabled"
CONNECT_TIMEOUT = 5.0  # seconds to open a connection
QUERY_TIMEOUT = 3.0  # seconds for a query (a lookup takes about a millisecond); a silent connection costs twice this
DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class UserDbError(Exception):
    """A database error for ``ftpkit user``; ``str()`` is one line."""


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's text is "Connect call failed (...)"
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


async def connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT, command_timeout=QUERY_TIMEOUT * 10)
    except DB_ERRORS as exc:
        raise UserDbError(f"cannot connect to {redact_url(url)}: {describe_error(exc)}") from None
    except ValueError as exc:  # a malformed URL (asyncpg's parser)
        raise UserDbError(f"{redact_url(url)}: {exc}") from None


async def schema_version(conn: asyncpg.Connection | PoolConnectionProxy) -> int:
    """The schema version applied in this database (0: none)."""
    exists = await conn.fetchval("SELECT to_regclass('ftpkit_schema') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM ftpkit_schema"))


async def init_schema(url: str) -> tuple[int, int]:
    """Create or upgrade ftpkit's tables; ``(version before, version after)``. Idempotent."""
    conn = await connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS ftpkit_schema (version integer PRIMARY KEY, "
                               "applied timestamptz NOT NULL DEFAULT now())")
            before = await schema_version(conn)
            if before > SCHEMA_VERSION:
                raise UserDbError(f"the database's schema is version {before}, newer than this ftpkit's "
                                  f"({SCHEMA_VERSION}): upgrade ftpkit")
            for version, sql in MIGRATIONS:
                if version > before:
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO ftpkit_schema (version) VALUES ($1)", version)
        return before, SCHEMA_VERSION
    except asyncpg.PostgresError as exc:
        raise UserDbError(f"{redact_url(url)}: {describe_error(exc)}") from None
    finally:
        await conn.close()


def _schema_problem(version: int) -> str | None:
    if version == 0:
        return "has no ftpkit tables: create them with `ftpkit user init --db URL`"
    if version < SCHEMA_VERSION:
        return f"has schema version {version}, this ftpkit needs {SCHEMA_VERSION}: run `ftpkit user init --db URL`"
    if version > SCHEMA_VERSION:
        return f"has schema version {version}, newer than this ftpkit's ({SCHEMA_VERSION}): upgrade ftpkit"
    return None


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A lookup changes no session state, so a connection goes back to the pool without asyncpg's reset query
    (``RESET ALL; UNLISTEN *; ...``: one more round trip for every lookup)."""


class PostgresUsers:
    """A :class:`~ftpkit.server.accounts.UserSource` on a PostgreSQL database, through a pool of connections."""

    def __init__(self, url: str, root: Path, pool_size: int = 10) -> None:
        self.url = url
        self.root = root
        self.pool_size = pool_size
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        """Connect and check the schema; :class:`ConfigError` (``users_db``) when that fails."""
        where = redact_url(self.url)
        try:
            pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size, timeout=CONNECT_TIMEOUT,
                                             command_timeout=QUERY_TIMEOUT, reset=_keep_session)
        except DB_ERRORS as exc:
            raise ConfigError("users_db", f"cannot connect to {where}: {describe_error(exc)}") from None
        except ValueError as exc:
            raise ConfigError("users_db", f"{where}: {exc}") from None
        try:
            async with pool.acquire() as conn:
                problem = _schema_problem(await schema_version(conn))
        except DB_ERRORS as exc:
            await pool.close()
            raise ConfigError("users_db", f"{where}: {describe_error(exc)}") from None
        if problem is not None:
            await pool.close()
            raise ConfigError("users_db", f"{where} {problem}")
        self.pool = pool

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                await asyncio.wait_for(pool.close(), QUERY_TIMEOUT)
            except (TimeoutError, *DB_ERRORS):
                pool.terminate()

    async def homes(self) -> list[str]:
        """Every enabled user's home (for housekeeping at start)."""
        assert self.pool is not None
        rows = await self.pool.fetch("SELECT DISTINCT home FROM ftpkit_users WHERE enabled")
        return [str(self._home(row["home"])) for row in rows]

    def _home(self, home: str) -> Path:
        path = Path(home)
        return path if path.is_absolute() else self.root / path

    async def lookup(self, name: str) -> UserEntry | None:
        if self.pool is None:
            raise UsersUnavailable("the user database is not open")
        for attempt in (1, 2):
            try:
                row = await self.pool.fetchrow(LOOKUP_SQL, name)
                break
            except DB_ERRORS as exc:
                if attempt == 2:
                    raise UsersUnavailable(f"user database: {describe_error(exc)}") from None
                # The database may have restarted: connections opened before are dead. Drop them all and try
                # once more on a fresh one.
                await self.pool.expire_connections()
        if row is None:
            return None
        stored = row["password_hash"]
        if scheme_of(stored) is None:
            log.warning("users_db: user %r has no password hash this server verifies: login refused", name)
        return UserEntry(row["name"], stored, self._home(row["home"]), row["write"])


# --- administration (`ftpkit user ... --db URL`) --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UserRow:
    name: str
    home: str
    write: bool
    enabled: bool
    changed: datetime


async def _admin(url: str, sql: str, *args: Any, fetch: bool = False) -> Any:
    conn = await connect(url)
    try:
        problem = _schema_problem(await schema_version(conn))
        if problem is not None:
            raise UserDbError(f"{redact_url(url)} {problem}")
        if fetch:
            return await conn.fetch(sql, *args)
        return await conn.execute(sql, *args)
    except asyncpg.PostgresError as exc:
        raise UserDbError(f"{redact_url(url)}: {describe_error(exc)}") from None
    finally:
        await conn.close()


def _count(status: str) -> int:
    """The row count of a command status such as ``UPDATE 1``."""
    return int(status.rsplit(" ", 1)[-1])


async def add_user(url: str, name: str, password_hash: str, home: str, write: bool) -> bool:
    """Add or replace a user (enabled); ``True`` when it was new."""
    rows = await _admin(
        url, "INSERT INTO ftpkit_users (name, password_hash, home, write) VALUES ($1, $2, $3, $4) "
             "ON CONFLICT (name) DO UPDATE SET password_hash = EXCLUDED.password_hash, home = EXCLUDED.home, "
             "write = EXCLUDED.write, enabled = true, changed = now() RETURNING (xmax = 0) AS inserted",
        name, password_hash, home, write, fetch=True)
    return bool(rows[0]["inserted"])


async def update_user(url: str, name: str, password_hash: str | None = None, enabled: bool | None = None) -> bool:
    """Set a user's password hash and/or enabled flag; ``False`` when there is no such user."""
    status = await _admin(
        url, "UPDATE ftpkit_users SET password_hash = coalesce($2, password_hash), enabled = coalesce($3, enabled), "
             "changed = now() WHERE name = $1", name, password_hash, enabled)
    return _count(status) == 1


async def delete_user(url: str, name: str) -> bool:
    return _count(await _admin(url, "DELETE FROM ftpkit_users WHERE name = $1", name)) == 1


async def list_users(url: str) -> list[UserRow]:
    rows = await _admin(url, "SELECT name, home, write, enabled, changed FROM ftpkit_users ORDER BY name",
                        fetch=True)
    return [UserRow(r["name"], r["home"], r["write"], r["enabled"], r["changed"]) for r in rows]
