"""Accounts: anonymous, real users from a TOML users file (argon2 hashes), and quick ``--user`` users.

Users file::

    [users.alice]
    password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."
    home = "/srv/ftp/alice"      # absolute, or relative to the served root
    write = true

Verification costs CPU on purpose (argon2), so it runs in a worker thread; an unknown name costs the same as a
known one, so timing does not reveal which names exist.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ftpkit.server.config import ConfigError, ServerConfig

ANONYMOUS_NAMES = frozenset({"anonymous", "ftp"})
_hasher = PasswordHasher()


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


def hash_password(password: str) -> str:
    return _hasher.hash(password)


class Accounts:
    """Checks credentials. Build once at start-up with :meth:`from_config`."""

    def __init__(self, root: Path, anonymous: bool, anonymous_write: bool, users: Mapping[str, UserEntry]) -> None:
        self.root = root
        self.anonymous = anonymous
        self.anonymous_write = anonymous_write
        self.users = dict(users)
        self._dummy_hash = hash_password("not a real password")

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> Accounts:
        users: dict[str, UserEntry] = {}
        if cfg.users_file is not None:
            users.update(load_users_file(cfg.users_file, cfg.root))
        for quick in cfg.users:
            users[quick.name] = UserEntry(quick.name, hash_password(quick.password), cfg.root, True)
        return cls(cfg.root, cfg.anonymous, cfg.anonymous_write, users)

    def is_anonymous_name(self, name: str) -> bool:
        return name.lower() in ANONYMOUS_NAMES

    def check(self, name: str, password: str) -> Account | None:
        """Blocking (argon2): call from a worker thread. ``None`` when the login is refused."""
        if self.is_anonymous_name(name):
            if not self.anonymous:
                return None
            return Account("anonymous", self.root, self.anonymous_write, anonymous=True)
        entry = self.users.get(name)
        try:
            # bytes: a password that is not UTF-8 arrives with surrogate escapes, which argon2 cannot encode
            _hasher.verify(entry.password_hash if entry else self._dummy_hash,
                           password.encode("utf-8", "surrogateescape"))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if entry is None:
            return None
        return Account(entry.name, entry.home, entry.write)


def load_users_file(path: Path, root: Path) -> dict[str, UserEntry]:
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
        if not entry["password_hash"].startswith("$argon2"):
            raise ConfigError(where, "password_hash is not an argon2 hash (plaintext passwords are not stored)")
        home = Path(str(entry.get("home", ".")))
        home = (root / home) if not home.is_absolute() else home
        if not home.is_dir():
            raise ConfigError(where, f"home {str(home)!r} is not a directory")
        write = entry.get("write", False)
        if not isinstance(write, bool):
            raise ConfigError(where, "write must be true or false")
        out[name] = UserEntry(name, entry["password_hash"], home.resolve(), write)
    return out


def add_user(path: Path, name: str, password: str, home: str, write: bool) -> None:
    """Add or replace a user in a users file, keeping the others."""
    data: dict = {}
    if path.exists():
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    data.setdefault("users", {})[name] = {"password_hash": hash_password(password), "home": home, "write": write}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(tomli_w.dumps(data), encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
