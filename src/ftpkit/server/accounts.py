"""Accounts: anonymous, users from user sources (a TOML users file, a PostgreSQL database), and quick ``--user``
users.

Users file::

    [users.alice]
    password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # or $6$ / $y$ / $2b$ from another server
    home = "/srv/ftp/alice"      # absolute, or relative to the served root
    write = true
    enabled = true               # false: refused (the entry is kept)

Verification costs CPU on purpose; :class:`~ftpkit.server.passwords.PasswordVerifier` runs it off the event loop,
bounded and fair between sources, and caches successes. An unknown name costs the same as a known one, so timing
does not reveal which names exist.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import tomli_w

from ftpkit.server.config import ConfigError, ServerConfig
from ftpkit.server.passwords import HashSettings, PasswordVerifier, check_hash, hash_password

if TYPE_CHECKING:
    from ftpkit.server.userdb import PostgresUsers

ANONYMOUS_NAMES = frozenset({"anonymous", "ftp"})


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    home: Path
    write: bool
    anonymous: bool = False


@dataclass(frozen=True, slots=True)
class UserEntry:
    name: str
    password_hash: str
    home: Path
    write: bool


class UsersUnavailable(Exception):
    """A user source cannot answer now (its database is unreachable): the login gets 421, not 530."""


class UserSource(Protocol):
    """Where named users come from (a TOML file, a database); the session never knows which one. ``lookup`` returns
    ``None`` for a name that does not exist or is disabled, and raises :class:`UsersUnavailable` when it cannot
    tell."""

    async def lookup(self, name: str) -> UserEntry | None: ...


class StaticUsers:
    """Users loaded once at start-up (the users file and ``--user``)."""

    def __init__(self, users: Mapping[str, UserEntry]) -> None:
        self.users = dict(users)

    async def lookup(self, name: str) -> UserEntry | None:
        return self.users.get(name)


class ChainedUsers:
    """Asks each source in turn: quick users and the users file before the database."""

    def __init__(self, *sources: UserSource) -> None:
        self.sources = sources

    async def lookup(self, name: str) -> UserEntry | None:
        for source in self.sources:
            entry = await source.lookup(name)
            if entry is not None:
                return entry
        return None


class Accounts:
    """Checks credentials. Build once at start-up with :meth:`from_config`, then :meth:`open` it."""

    def __init__(self, root: Path, anonymous: bool, anonymous_write: bool, source: UserSource,
                 verifier: PasswordVerifier | None = None, settings: HashSettings | None = None,
                 database: PostgresUsers | None = None) -> None:
        self.root = root
        self.anonymous = anonymous
        self.anonymous_write = anonymous_write
        self._anonymous = Account("anonymous", root, anonymous_write, anonymous=True)
        self.source = source
        self.database = database  # opened and closed with the server; also part of ``source``
        self.verifier = verifier or PasswordVerifier()
        self._dummy_hash = hash_password("not a real password", settings)
        self._database_homes: list[str] = []

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> Accounts:
        settings = HashSettings(cfg.hash_memory_kib, cfg.hash_time_cost, cfg.hash_parallelism)
        users: dict[str, UserEntry] = {}
        if cfg.users_file is not None:
            users.update(load_users_file(cfg.users_file, cfg.root, local_homes=cfg.storage is None))
        for quick in cfg.users:
            users[quick.name] = UserEntry(quick.name, hash_password(quick.password, settings), cfg.root, True)
        verifier = PasswordVerifier(cfg.hash_concurrency, cfg.password_cache_ttl)
        static = StaticUsers(users)
        if cfg.users_db is None:
            return cls(cfg.root, cfg.anonymous, cfg.anonymous_write, static, verifier, settings)
        from ftpkit.server.userdb import PostgresUsers

        database = PostgresUsers(cfg.users_db, cfg.root)
        return cls(cfg.root, cfg.anonymous, cfg.anonymous_write, ChainedUsers(static, database), verifier, settings,
                   database)

    async def open(self) -> None:
        """Connect to the user database, if any (:class:`ConfigError` naming ``users_db`` when that fails)."""
        if self.database is not None:
            await self.database.open()
            self._database_homes = await self.database.homes()

    async def aclose(self) -> None:
        self.close()
        if self.database is not None:
            await self.database.close()

    def close(self) -> None:
        self.verifier.close()

    def homes(self) -> list[str]:
        """The homes known at start (for housekeeping such as removing stale partial uploads)."""
        sources = self.source.sources if isinstance(self.source, ChainedUsers) else (self.source,)
        users = [u for s in sources if isinstance(s, StaticUsers) for u in s.users.values()]
        return sorted({str(self.root), *(str(u.home) for u in users), *self._database_homes})

    def is_anonymous_name(self, name: str) -> bool:
        return name.lower() in ANONYMOUS_NAMES

    async def authenticate(self, name: str, password: str, source: str = "") -> Account | None:
        """The account, or ``None`` when the login is refused. ``source``: the client's address. Raises
        :class:`UsersUnavailable` when the user source cannot answer. The lookup comes before the password check,
        so a user disabled or deleted a moment ago is refused even while its password is in the verifier's cache."""
        if self.is_anonymous_name(name):
            if not self.anonymous:
                return None
            return self._anonymous  # one for all anonymous sessions (frozen)
        entry = await self.source.lookup(name)
        ok = await self.verifier.verify(entry.password_hash if entry else self._dummy_hash, password, source)
        if entry is None or not ok:
            return None
        return Account(entry.name, entry.home, entry.write)


def load_users_file(path: Path, root: Path, local_homes: bool = True) -> dict[str, UserEntry]:
    """``local_homes``: homes are folders that must exist (with object storage they are key prefixes)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("users_file", f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("users_file", f"{path}: {exc}") from None
    table = data.get("users", {})
    if not isinstance(table, dict):
        raise ConfigError("users_file", f"{path}: [users] must be a table of users")
    out: dict[str, UserEntry] = {}
    for name, entry in table.items():
        where = f"users_file: {path}: users.{name}"
        if not isinstance(entry, dict) or not isinstance(entry.get("password_hash"), str):
            raise ConfigError(where, "needs password_hash (write it with `ftpkit user add`)")
        problem = check_hash(entry["password_hash"])
        if problem is not None:
            raise ConfigError(where, f"password_hash {problem}")
        home = Path(str(entry.get("home", ".")))
        home = (root / home) if not home.is_absolute() else home
        if local_homes and not home.is_dir():
            raise ConfigError(where, f"home {str(home)!r} is not a directory")
        write, enabled = entry.get("write", False), entry.get("enabled", True)
        if not isinstance(write, bool) or not isinstance(enabled, bool):
            raise ConfigError(where, "write and enabled must be true or false")
        if not enabled:
            continue
        out[name] = UserEntry(name, entry["password_hash"], home.resolve(), write)
    return out


def _read_file(path: Path) -> dict:
    if not path.exists():
        return {}
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _write_file(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(tomli_w.dumps(data), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)


def add_user(path: Path, name: str, password: str, home: str, write: bool,
             settings: HashSettings | None = None) -> None:
    """Add or replace a user in a users file, keeping the others."""
    data = _read_file(path)
    entry = {"password_hash": hash_password(password, settings), "home": home, "write": write}
    data.setdefault("users", {})[name] = entry
    _write_file(path, data)


def update_user(path: Path, name: str, password_hash: str | None = None, enabled: bool | None = None) -> bool:
    """Set a user's password hash and/or enabled flag in a users file; ``False`` when there is no such user."""
    data = _read_file(path)
    entry = data.get("users", {}).get(name)
    if not isinstance(entry, dict):
        return False
    if password_hash is not None:
        entry["password_hash"] = password_hash
    if enabled is not None:
        entry.pop("enabled", None)
        if not enabled:
            entry["enabled"] = False
    _write_file(path, data)
    return True


def delete_user(path: Path, name: str) -> bool:
    data = _read_file(path)
    if name not in data.get("users", {}):
        return False
    del data["users"][name]
    _write_file(path, data)
    return True


def list_users(path: Path) -> list[tuple[str, str, bool, bool]]:
    """``(name, home, write, enabled)`` of each user in a users file, by name."""
    table = _read_file(path).get("users", {})
    return sorted((name, str(e.get("home", ".")), e.get("write", False) is True, e.get("enabled", True) is not False)
                  for name, e in table.items() if isinstance(e, dict))
