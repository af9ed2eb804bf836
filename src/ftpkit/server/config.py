"""The server's configuration: one frozen, typed object, validated once at start-up and passed down.

It is built from a TOML file (``--config``) and command-line flags with the same names (``passive_ports`` in the
file is ``--passive-ports`` on the command line; flags win). Every problem is reported as one
:class:`ConfigError` naming the field and what is allowed.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ftpkit.protocol.portrange import PortRangeError, parse_port_range


class ConfigError(ValueError):
    """A configuration value that is not allowed; ``str()`` is the one line shown to the user."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.field = name


@dataclass(frozen=True, slots=True)
class QuickUser:
    """A read-write user from ``--user NAME:PASSWORD``, whose home is the served root."""

    name: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    root: Path = field(default_factory=Path.cwd)
    host: str = "127.0.0.1"
    port: int = 2121
    passive_ports: tuple[int, int] = (50000, 50100)
    masquerade_address: str | None = None
    masquerade_map: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = ()
    allow_foreign_addresses: bool = False
    active_from_port_20: bool = False
    anonymous: bool = True
    anonymous_write: bool = False
    users_file: Path | None = None
    users: tuple[QuickUser, ...] = ()
    max_sessions: int = 512
    max_sessions_per_ip: int = 32
    idle_timeout: float = 300.0
    data_accept_timeout: float = 30.0
    data_connect_timeout: float = 15.0
    data_idle_timeout: float = 300.0
    login_fail_delay: float = 1.0
    max_login_failures: int = 3
    max_line: int = 4096
    io_threads: int = 32
    listen_backlog: int = 1024
    shutdown_grace: float = 10.0
    banner: str = "ftpkit FTP server ready."
    tls: str = "off"  # off | optional | required | implicit (RFC 4217 FTPS)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_implicit_port: int | None = None  # an implicit-TLS listener beside the main one (990 style)
    tls_required_for_anonymous: bool = False
    require_session_reuse: bool = True
    allow_ccc: bool = False
    tls_handshake_timeout: float = 10.0
    tls_max_version: str = "1.2"  # "1.3" opts in (see ftpkit.tls.server_context for why 1.2 is the default)
    log_level: str = "info"
    log_format: str = "text"
    xferlog: Path | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ftp://{host}:{self.port}/"


FIELD_NAMES = frozenset(f.name for f in fields(ServerConfig))
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
TLS_MODES = ("off", "optional", "required", "implicit")


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ConfigError(name, f"{value!r} is not true or false")


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(name, f"{value!r} is not a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"{value!r} is not a whole number from {low} to {high}") from None
    if not low <= number <= high:
        raise ConfigError(name, f"{number} is not within {low}-{high}")
    return number


def _seconds(name: str, value: Any, low: float = 0.001, high: float = 86400.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"{value!r} is not a number of seconds") from None
    if not low <= number <= high:
        raise ConfigError(name, f"{value!r} is not within {low:g}-{high:g} seconds")
    return number


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).lower()
    if text not in allowed:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(allowed)}")
    return text


def _ip(name: str, value: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ConfigError(name, f"{value!r} is not an IP address") from None


def _host(name: str, value: Any) -> str:
    text = str(value).strip().strip("[]")
    if text in ("", "*"):
        raise ConfigError(name, f"{value!r}: give an address to bind, e.g. 127.0.0.1, 0.0.0.0 or ::")
    return _ip(name, text)


def _port_range(name: str, value: Any) -> tuple[int, int]:
    try:
        return parse_port_range(value)
    except PortRangeError as exc:
        raise ConfigError(name, str(exc)) from None


def _masquerade_map(name: str, value: Any) -> tuple[tuple[Any, str], ...]:
    if not isinstance(value, Mapping):
        raise ConfigError(name, 'must be a table of networks to addresses: {"198.18.0.0/15" = "203.0.113.10"}')
    out = []
    for network, address in value.items():
        try:
            net = ipaddress.ip_network(str(network), strict=False)
        except ValueError:
            raise ConfigError(name, f"{network!r} is not a network such as 198.18.0.0/15") from None
        out.append((net, _ip(f"{name}.{network}", address)))
    # most specific network first
    out.sort(key=lambda item: item[0].prefixlen, reverse=True)
    return tuple(out)


def _users(name: str, value: Any) -> tuple[QuickUser, ...]:
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if isinstance(item, QuickUser):
            out.append(item)
            continue
        user, colon, password = str(item).partition(":")
        if not colon or not user or not password:
            raise ConfigError(name, f"{str(item).split(':')[0]!r}... is not NAME:PASSWORD")
        if user.lower() in ("anonymous", "ftp") or not user.isprintable() or " " in user:
            raise ConfigError(name, f"{user!r} is not allowed as a user name")
        out.append(QuickUser(user, password))
    return tuple(out)


def _root(name: str, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise ConfigError(name, f"{str(value)!r} is not a directory")
    return path.resolve()


def _file(name: str, value: Any, must_exist: bool) -> Path:
    path = Path(str(value)).expanduser()
    if must_exist and not path.is_file():
        raise ConfigError(name, f"{str(value)!r} does not exist or is not a file")
    return path


def validate(values: Mapping[str, Any]) -> ServerConfig:
    """Build a :class:`ServerConfig` from raw values (from TOML and flags); raise :class:`ConfigError`."""
    for key in values:
        if key not in FIELD_NAMES:
            raise ConfigError(key, f"unknown setting; known settings are {', '.join(sorted(FIELD_NAMES))}")
    v: dict[str, Any] = {}
    for key, raw in values.items():
        if raw is None:
            continue
        match key:
            case "root":
                v[key] = _root(key, raw)
            case "host":
                v[key] = _host(key, raw)
            case "port":
                v[key] = _int(key, raw, 0, 65535)
            case "passive_ports":
                v[key] = _port_range(key, raw)
            case "masquerade_address":
                v[key] = _ip(key, raw)
            case "masquerade_map":
                v[key] = _masquerade_map(key, raw)
            case "users":
                v[key] = _users(key, raw)
            case "users_file" | "tls_cert" | "tls_key":
                v[key] = _file(key, raw, must_exist=True)
            case "tls":
                v[key] = _choice(key, raw, TLS_MODES)
            case "tls_max_version":
                v[key] = _choice(key, raw, ("1.2", "1.3"))
            case "tls_implicit_port":
                v[key] = _int(key, raw, 0, 65535)
            case "tls_handshake_timeout":
                v[key] = _seconds(key, raw)
            case "xferlog":
                v[key] = _file(key, raw, must_exist=False)
            case "max_sessions" | "max_sessions_per_ip" | "io_threads" | "max_login_failures":
                v[key] = _int(key, raw, 1, 100000)
            case "listen_backlog":
                v[key] = _int(key, raw, 1, 65535)
            case "max_line":
                v[key] = _int(key, raw, 64, 65536)
            case "idle_timeout" | "data_accept_timeout" | "data_connect_timeout" | "data_idle_timeout":
                v[key] = _seconds(key, raw)
            case "login_fail_delay" | "shutdown_grace":
                v[key] = _seconds(key, raw, 0.0, 3600.0)
            case "log_level":
                v[key] = _choice(key, raw, LOG_LEVELS)
            case "log_format":
                v[key] = _choice(key, raw, LOG_FORMATS)
            case "banner":
                text = str(raw)
                if "\r" in text or "\n" in text or len(text) > 200:
                    raise ConfigError(key, "must be one line of at most 200 characters")
                v[key] = text
            case _:
                v[key] = _bool(key, raw)
    cfg = ServerConfig(**v)
    if cfg.masquerade_address and ":" in cfg.masquerade_address:
        raise ConfigError("masquerade_address", "must be an IPv4 address (it is announced in 227 replies)")
    if (cfg.tls != "off" or cfg.tls_implicit_port is not None) and (cfg.tls_cert is None or cfg.tls_key is None):
        raise ConfigError("tls", f"{cfg.tls!r} needs tls_cert and tls_key (PEM files; `ftpkit cert` writes a pair)")
    if cfg.active_from_port_20 and cfg.port < 2:
        raise ConfigError("active_from_port_20", "needs a control port above 1")
    return cfg


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML configuration file into raw values (validated later by :func:`validate`)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", f"{str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError("config", f"{path}: {exc.strerror}") from None
    data = dict(data.get("server", data))
    if isinstance(data.get("root"), str) and not Path(data["root"]).is_absolute():
        data["root"] = str((path.parent / data["root"]).resolve())
    return data
