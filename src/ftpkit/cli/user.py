"""``ftpkit user add|passwd|enable|disable|del|list``: users in a users file (``--file``) or in a PostgreSQL
database shared by several nodes (``--db URL``; ``ftpkit user init --db URL`` creates its tables)."""

from __future__ import annotations

import asyncio
import sys
import tomllib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

T = TypeVar("T")

FILE_OPTION = click.option("--file", "path", default="users.toml", show_default=True,
                           type=click.Path(dir_okay=False), help="users file to create or update")
DB_OPTION = click.option("--db", "db", metavar="URL", envvar="FTPKIT_USERS_DB",
                         help="postgresql://USER@HOST[:PORT]/DATABASE instead of a file (env FTPKIT_USERS_DB; the "
                              "password may come from PGPASSWORD or ~/.pgpass)")


def _fail(command: str, message: str) -> NoReturn:
    click.echo(f"ftpkit user {command}: {message}", err=True)
    sys.exit(2)


def _check_name(command: str, name: str) -> None:
    if name.lower() in ("anonymous", "ftp") or " " in name or not name.isprintable() or not 0 < len(name) <= 255:
        _fail(command, f"NAME: {name!r} is not allowed as a user name")


def _password(command: str, password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        _fail(command, "password: must not be empty")
    return password


def _db(command: str, url: str, job: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run one database job; a database problem is one line and exit 2."""
    from ftpkit.server.config import SETTINGS, ConfigError
    from ftpkit.server.userdb import UserDbError

    try:
        SETTINGS["users_db"].check("--db", url)  # the same check as `ftpkit serve --users-db`
    except ConfigError as exc:
        _fail(command, str(exc))
    try:
        return asyncio.run(job())
    except UserDbError as exc:
        _fail(command, f"--db: {exc}")


def _file(command: str, job: Callable[[], T]) -> T:
    try:
        return job()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        _fail(command, f"--file: {exc}")


def _where(path: str, db: str | None) -> str:
    if db is None:
        return path
    from ftpkit.server.config import redact_url

    return redact_url(db)


@click.group("user")
def user_group() -> None:
    """Manage the users of `ftpkit serve --users-file` or `--users-db`."""


@user_group.command("init")
@click.option("--db", "db", metavar="URL", envvar="FTPKIT_USERS_DB", required=True,
              help="postgresql://USER@HOST[:PORT]/DATABASE (env FTPKIT_USERS_DB)")
def init(db: str) -> None:
    """Create (or upgrade) ftpkit's tables in a PostgreSQL database; running it again changes nothing."""
    from ftpkit.server.userdb import init_schema

    before, after = _db("init", db, lambda: init_schema(db))
    where = _where("", db)
    if before == after:
        click.echo(f"ftpkit: {where} already has ftpkit's schema version {after}")
    else:
        click.echo(f"ftpkit: {where}: schema version {before} -> {after}")


@user_group.command("add")
@click.argument("name")
@FILE_OPTION
@DB_OPTION
@click.option("--home", default=".", show_default=True,
              help="home: absolute, or relative to the served root (a prefix on object storage)")
@click.option("--read-only", is_flag=True, help="no uploads or changes")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
def add(name: str, path: str, db: str | None, home: str, read_only: bool, password_stdin: bool) -> None:
    """Add (or replace) user NAME; the password is asked for, or read from stdin."""
    from ftpkit.server import accounts
    from ftpkit.server.passwords import hash_password

    _check_name("add", name)
    password = _password("add", password_stdin)
    if db is not None:
        from ftpkit.server import userdb

        url = db
        _db("add", url, lambda: userdb.add_user(url, name, hash_password(password), home, not read_only))
    else:
        _file("add", lambda: accounts.add_user(Path(path), name, password, home, write=not read_only))
    click.echo(f"ftpkit: user {name} written to {_where(path, db)} ({'read-only' if read_only else 'read-write'}, "
               f"home {home})")


@user_group.command("passwd")
@click.argument("name")
@FILE_OPTION
@DB_OPTION
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
def passwd(name: str, path: str, db: str | None, password_stdin: bool) -> None:
    """Set user NAME's password (every node uses it from the next login)."""
    from ftpkit.server.passwords import hash_password

    password = _password("passwd", password_stdin)
    _update("passwd", name, path, db, password_hash=hash_password(password))
    click.echo(f"ftpkit: password of {name} changed in {_where(path, db)}")


@user_group.command("disable")
@click.argument("name")
@FILE_OPTION
@DB_OPTION
def disable(name: str, path: str, db: str | None) -> None:
    """Refuse user NAME's logins (kept, for `ftpkit user enable`)."""
    _update("disable", name, path, db, enabled=False)
    click.echo(f"ftpkit: user {name} disabled in {_where(path, db)}")


@user_group.command("enable")
@click.argument("name")
@FILE_OPTION
@DB_OPTION
def enable(name: str, path: str, db: str | None) -> None:
    """Accept user NAME's logins again."""
    _update("enable", name, path, db, enabled=True)
    click.echo(f"ftpkit: user {name} enabled in {_where(path, db)}")


def _update(command: str, name: str, path: str, db: str | None, **change: Any) -> None:
    from ftpkit.server import accounts

    if db is not None:
        from ftpkit.server import userdb

        url = db
        found = _db(command, url, lambda: userdb.update_user(url, name, **change))
    else:
        found = _file(command, lambda: accounts.update_user(Path(path), name, **change))
    if not found:
        _fail(command, f"NAME: no user {name!r} in {_where(path, db)}")


@user_group.command("del")
@click.argument("name")
@FILE_OPTION
@DB_OPTION
def delete(name: str, path: str, db: str | None) -> None:
    """Delete user NAME."""
    from ftpkit.server import accounts

    if db is not None:
        from ftpkit.server import userdb

        url = db
        found = _db("del", url, lambda: userdb.delete_user(url, name))
    else:
        found = _file("del", lambda: accounts.delete_user(Path(path), name))
    if not found:
        _fail("del", f"NAME: no user {name!r} in {_where(path, db)}")
    click.echo(f"ftpkit: user {name} deleted from {_where(path, db)}")


@user_group.command("list")
@FILE_OPTION
@DB_OPTION
def list_(path: str, db: str | None) -> None:
    """List the users: name, access, enabled, home (never the hashes)."""
    from ftpkit.server import accounts

    if db is not None:
        from ftpkit.server import userdb

        url = db
        rows = [(r.name, r.home, r.write, r.enabled) for r in _db("list", url, lambda: userdb.list_users(url))]
    else:
        rows = _file("list", lambda: accounts.list_users(Path(path)))
    for name, home, write, enabled in rows:
        click.echo(f"{name}\t{'read-write' if write else 'read-only'}\t{'enabled' if enabled else 'disabled'}\t"
                   f"{home}")
