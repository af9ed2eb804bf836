"""``ftpkit user add NAME``: write a user with an argon2 password hash into a users file."""

from __future__ import annotations

import sys

import click

from ftpkit.server.accounts import add_user


@click.group("user")
def user_group() -> None:
    """Manage the users file of `ftpkit serve --users-file`."""


@user_group.command("add")
@click.argument("name")
@click.option("--file", "path", default="users.toml", show_default=True, type=click.Path(dir_okay=False),
              help="users file to create or update")
@click.option("--home", default=".", show_default=True, help="home (absolute, or relative to the served root)")
@click.option("--read-only", is_flag=True, help="no uploads or changes")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
def add(name: str, path: str, home: str, read_only: bool, password_stdin: bool) -> None:
    """Add (or replace) user NAME; the password is asked for, or read from stdin."""
    from pathlib import Path

    if name.lower() in ("anonymous", "ftp") or " " in name or not name.isprintable():
        click.echo(f"ftpkit user add: NAME: {name!r} is not allowed as a user name", err=True)
        sys.exit(2)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        click.echo("ftpkit user add: password: must not be empty", err=True)
        sys.exit(2)
    add_user(Path(path), name, password, home, write=not read_only)
    click.echo(f"ftpkit: user {name} written to {path} ({'read-only' if read_only else 'read-write'}, home {home})")
