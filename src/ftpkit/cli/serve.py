"""``ftpkit serve [DIR]``: flags are generated from :class:`ServerConfig` fields, so every setting has the same
name in the TOML file (``passive_ports``) and on the command line (``--passive-ports``)."""

from __future__ import annotations

import sys
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

import click

from ftpkit import logs
from ftpkit.server import serve
from ftpkit.server.config import SETTINGS, ConfigError, ServerConfig, load_toml, validate


def _default_text(f: Field[Any]) -> str:
    value = f.default
    if value is MISSING or value is None or value == ():
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, tuple):
        joiner = "-" if all(isinstance(part, int) for part in value) else ", "  # a port range, or a list
        text = joiner.join(str(part) for part in value)
    else:
        text = repr(value) if " " in str(value) else str(value)
    return f" (default {text})"


def _options(func: Any) -> Any:
    """One flag per :class:`ServerConfig` field, its help from :data:`SETTINGS` (the one source)."""
    for f in reversed(fields(ServerConfig)):
        if f.name == "root":
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = SETTINGS[f.name].help + _default_text(f)
        if f.type in ("bool", bool):
            func = click.option(f"{flag}/--no-{f.name.replace('_', '-')}", f.name, default=None,
                                help=help_text)(func)
        elif f.name == "users":
            func = click.option("--user", "users", multiple=True, metavar="NAME:PASSWORD", help=help_text)(func)
        elif f.name == "masquerade_map":
            func = click.option(flag, f.name, multiple=True, metavar="NET=ADDR", help=help_text)(func)
        elif f.name == "hooks":
            func = click.option("--hook", "hooks", multiple=True, metavar="EVENT:COMMAND|URL", help=help_text)(func)
        elif f.name in ("defender_allow", "proxy_allowed"):
            func = click.option(flag, f.name, multiple=True, metavar="NETWORK", help=help_text)(func)
        else:
            func = click.option(flag, f.name, default=None, metavar="VALUE", help=help_text)(func)
    return func


@click.command("serve")
@click.argument("root", required=False, metavar="[DIR]")
@click.option("--config", "config_file", metavar="FILE", help="TOML configuration file ([server] table or top level)")
@_options
def serve_command(root: str | None, config_file: str | None, **flags: Any) -> None:
    """Serve DIR (default: the current directory) over FTP.

    With no arguments: the current directory, read-only to anonymous, on 127.0.0.1:2121.
    """
    try:
        values: dict[str, Any] = load_toml(Path(config_file)) if config_file else {}
        for name, value in flags.items():
            if value is None or value == ():
                continue
            if name == "masquerade_map":
                value = _parse_map(value)
            values[name] = value
        if root is not None:
            values["root"] = root
        cfg: ServerConfig = validate(values)
    except ConfigError as exc:
        click.echo(f"ftpkit serve: {exc}", err=True)
        sys.exit(2)
    logs.setup(cfg.log_level, cfg.log_format)
    try:
        code = serve(cfg)
    except ConfigError as exc:  # found at start-up: a certificate, users_db or object storage that cannot be used
        click.echo(f"ftpkit serve: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        where = exc.filename or f"{cfg.host}:{cfg.port}"  # the metrics listener names itself
        click.echo(f"ftpkit serve: cannot listen on {where}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    sys.exit(code)


def _parse_map(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        net, eq, addr = item.partition("=")
        if not eq:
            raise ConfigError("masquerade_map", f"{item!r} is not NETWORK=ADDRESS")
        out[net] = addr
    return out
