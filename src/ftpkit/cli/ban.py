"""``ftpkit ban list|lift``: the defender's bans, in the file a running ``ftpkit serve`` keeps them in.

The server notices a lifted ban by the file's modification time, at the source's next connection: no restart.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

_FILE_HELP = "the server's defender_file (default: /var/lib/ftpkit/bans.json as root, else ~/.local/state/ftpkit)"


def _path(path: str | None) -> Path:
    from ftpkit.server.app import default_defender_file

    return Path(path) if path else default_defender_file()


@click.group("ban")
def ban_group() -> None:
    """The defender's bans of sources with too many failed logins, protocol errors or limit hits."""


@ban_group.command("list")
@click.option("--file", "path", default=None, help=_FILE_HELP)
def list_bans(path: str | None) -> None:
    """The bans in force, one line each: source, until (UTC), how many bans so far, why."""
    from ftpkit.server.defender import read_bans

    now = time.time()
    bans = sorted((b for b in read_bans(_path(path)).values() if b.until > now), key=lambda b: b.until)
    if not bans:
        click.echo("no bans in force")
        return
    for b in bans:
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(b.until))
        click.echo(f"{b.source}  until {until} UTC ({b.until - now:.0f} s)  ban {b.count}  {b.reason}")


@ban_group.command("lift")
@click.argument("source")
@click.option("--file", "path", default=None, help=_FILE_HELP)
def lift(source: str, path: str | None) -> None:
    """Lift the ban of SOURCE (an address, or an IPv6 /64)."""
    from ftpkit.server.defender import read_bans, source_of, write_bans

    file = _path(path)
    bans = read_bans(file)
    key = source if "/" in source else source_of(source)
    if key not in bans:
        click.echo(f"ftpkit ban lift: SOURCE: {source} is not banned (in {file})", err=True)
        sys.exit(1)
    del bans[key]
    try:
        write_bans(file, bans.values())
    except OSError as exc:
        click.echo(f"ftpkit ban lift: --file: cannot write {file}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    click.echo(f"ftpkit: lifted the ban of {key}; the server notices it at the next connection")
