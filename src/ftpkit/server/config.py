"""The server's configuration: one frozen, typed object, validated when it is built and passed down.

It is built from a TOML file (``--config``) and command-line flags with the same names (``passive_ports`` in the
file is ``--passive-ports`` on the command line; flags win), or directly by library code: ``ServerConfig(...)``
checks and normalises every field on construction through :data:`SETTINGS`, one table of field -> checker and
one-line help (``ftpkit serve --help`` shows the help). Every problem is one :class:`ConfigError` naming the field
and what is allowed, the same text for library and command-line users.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from ftpkit.logs import LogFormat, LogLevel
from ftpkit.protocol.portrange import PortRangeError, parse_port_range
from ftpkit.server.hooks import HookError, HookSpec, parse_hook
from ftpkit.server.uploads import UploadMode
from ftpkit.tls import TLSMaxVersion

TLSMode = Literal["off", "optional", "required", "implicit"]
"""FTPS (RFC 4217). off: plain FTP; optional: AUTH TLS offered; required: TLS needed for login and data (anonymous
users too with tls_required_for_anonymous); implicit: TLS from the first byte (port 990 style)."""


ProxyMode = Literal["off", "optional", "required"]
"""PROXY protocol on the control listener. off: never read; optional: read from proxy_allowed sources, others
connect directly; required: only proxy_allowed sources may connect, and they must send a header."""


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
    storage: str | None = None  # None: the local folder root; "s3://BUCKET[/PREFIX]": object storage
    aws_endpoint_url: str | None = None
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 2121
    passive_ports: tuple[int, int] = (50000, 50100)
    passive_ports_per_ip: int = 0
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
    login_timeout: float = 60.0
    max_prelogin_per_ip: int = 16
    data_accept_timeout: float = 30.0
    data_connect_timeout: float = 15.0
    data_idle_timeout: float = 300.0
    login_fail_delay: float = 1.0
    max_login_failures: int = 3
    hash_concurrency: int = 0
    password_cache_ttl: float = 600.0
    hash_memory_kib: int = 19456
    hash_time_cost: int = 2
    hash_parallelism: int = 1
    upload_mode: UploadMode = "atomic"
    partial_ttl: float = 86400.0
    partial_sweep_interval: float = 3600.0
    defender: bool = True
    defender_threshold: int = 15
    defender_observation_time: float = 600.0
    defender_ban_time: float = 1800.0
    defender_ban_increment: float = 100.0
    defender_score_login_failed: int = 3
    defender_score_protocol_error: int = 1
    defender_score_limit_exceeded: int = 3
    defender_score_tls_failed: int = 2
    defender_allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    defender_file: Path | None = None
    hash_enabled: bool = True
    hash_max_size: int = 4 << 30
    max_line: int = 4096
    io_threads: int = 32
    listen_backlog: int = 1024
    shutdown_grace: float = 10.0
    banner: str = "ftpkit FTP server ready."
    tls: TLSMode = "off"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_implicit_port: int | None = None  # an implicit-TLS listener beside the main one (990 style)
    tls_required_for_anonymous: bool = False
    require_session_reuse: bool = True
    allow_ccc: bool = False
    tls_handshake_timeout: float = 10.0
    tls_max_version: TLSMaxVersion = "1.2"  # "1.3" opts in (see ftpkit.tls.server_context for why 1.2 is the default)
    tls_strict_sni: bool = False  # a client's SNI must be one of the certificate's names (none at all is accepted)
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    xferlog: Path | None = None
    metrics_address: tuple[str, int] | None = None  # /metrics and /healthz over HTTP
    diagnosis_summary_interval: float = 60.0
    hooks: tuple[HookSpec, ...] = ()
    hook_concurrency: int = 4
    # --- several nodes: shared accounts, behind a load balancer (issue 16) ---
    users_db: str | None = field(default=None, repr=False)  # postgresql://... (may hold a password)
    proxy_protocol: ProxyMode = "off"
    proxy_allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    proxy_header_timeout: float = 3.0

    def __post_init__(self) -> None:
        for f in fields(self):
            setting = SETTINGS.get(f.name)
            if setting is None:
                raise ConfigError(f.name, "has no entry in ftpkit.server.config.SETTINGS (checker and help text)")
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue  # an optional setting left out
            object.__setattr__(self, f.name, setting.check(f.name, value))
        _check_together(self)

    @property
    def sweep_period(self) -> float:
        """Seconds between sweeps of stale partials (S3: multipart uploads): never longer than they are kept."""
        return min(self.partial_sweep_interval, self.partial_ttl)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ftp://{host}:{self.port}/"


FIELD_NAMES = frozenset(f.name for f in fields(ServerConfig))
AWS_NAMES = frozenset({"AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"})
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
TLS_MODES: tuple[str, ...] = get_args(TLSMode)
TLS_MAX_VERSIONS: tuple[str, ...] = get_args(TLSMaxVersion)
UPLOAD_MODES: tuple[str, ...] = get_args(UploadMode)
PROXY_MODES: tuple[str, ...] = get_args(ProxyMode)


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
    if isinstance(value, tuple) and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        value = dict(value)  # already built: ((network, address), ...)
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


def _percent(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"{value!r} is not a percentage") from None
    if not 0 <= number <= 10000:
        raise ConfigError(name, f"{value!r} is not within 0-10000 percent")
    return number


def _networks(name: str, value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(item)
            continue
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ConfigError(name, f"{item!r} is not a network such as 192.0.2.0/24 or 2001:db8::/32") from None
    return tuple(out)


def _host_port(name: str, value: Any) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1)."""
    if isinstance(value, tuple) and len(value) == 2:
        host, port = value
    else:
        text = str(value).strip()
        host, colon, port = text.rpartition(":")
        if not colon:
            host, port = "", text
        if ":" in host and not host.startswith("["):
            raise ConfigError(name, f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9100")
    host = str(host).strip().strip("[]") or "127.0.0.1"
    return _ip(name, host), _int(name, port, 0, 65535)


def _hooks(name: str, value: Any) -> tuple[HookSpec, ...]:
    items = [value] if isinstance(value, str | Mapping) else list(value)
    try:
        return tuple(parse_hook(i, item) for i, item in enumerate(items))
    except HookError as exc:
        raise ConfigError(exc.field, str(exc)) from None


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


def _banner(name: str, value: Any) -> str:
    text = str(value)
    if "\r" in text or "\n" in text or len(text) > 200:
        raise ConfigError(name, "must be one line of at most 200 characters")
    return text


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _byte_size(name: str, value: Any) -> int:
    """Bytes: a whole number, or one with a binary suffix (``512M``, ``4G``, ``1T``; ``KiB``/``GB`` read alike)."""
    if isinstance(value, bool):
        raise ConfigError(name, f"{value!r} is not a number of bytes")
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*", str(value), re.IGNORECASE)
    if not match:
        raise ConfigError(name, f"{value!r} is not a number of bytes (e.g. 4294967296, 512M or 4G)")
    number = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if not 1 <= number <= 1 << 60:
        raise ConfigError(name, f"{value!r} is not within 1 byte to 2**60 bytes")
    return number


def redact_url(url: str) -> str:
    """A database URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def _users_db(name: str, value: Any) -> str:
    text = str(value).strip()
    if not text.startswith(("postgresql://", "postgres://")):
        raise ConfigError(name, f"{redact_url(text)!r} is not a postgresql://USER@HOST[:PORT]/DATABASE URL")
    return text


S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$")


def _storage(name: str, value: Any) -> str:
    """``s3://BUCKET[/PREFIX]``, normalised: ``s3://bucket`` or ``s3://bucket/some/prefix`` (no trailing slash)."""
    text = str(value).strip()
    rest = text[5:] if text.lower().startswith("s3://") else None
    if rest is None:
        raise ConfigError(name, f"{text!r} is not s3://BUCKET[/PREFIX] (leave storage out to serve the local root)")
    bucket, _, prefix = rest.partition("/")
    if not S3_BUCKET.match(bucket):
        raise ConfigError(name, f"{bucket!r} is not a bucket name (3-63 of a-z 0-9 . - _, starting and ending "
                                "with a letter or digit)")
    parts = [part for part in prefix.split("/") if part]
    if any(part in (".", "..") for part in parts) or "\0" in prefix:
        raise ConfigError(name, f"{prefix!r}: the prefix may not contain . or .. segments or NUL")
    return "/".join([f"s3://{bucket}", *parts])


def _endpoint(name: str, value: Any) -> str:
    text = str(value).strip()
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(name, f"{text!r} is not an http:// or https:// URL such as http://127.0.0.1:8333")
    try:
        url.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ConfigError(name, f"{text!r} has a port that is not a number") from None
    return text.rstrip("/")


def _word(name: str, value: Any) -> str:
    text = str(value)
    if not text or not text.isprintable() or " " in text:
        raise ConfigError(name, "must be one word of printable characters")
    return text


def _whole(low: int, high: int) -> Callable[[str, Any], int]:
    return lambda name, value: _int(name, value, low, high)


def _secs(low: float = 0.001, high: float = 86400.0) -> Callable[[str, Any], float]:
    return lambda name, value: _seconds(name, value, low, high)


def _one_of(allowed: tuple[str, ...]) -> Callable[[str, Any], str]:
    return lambda name, value: _choice(name, value, allowed)


def _existing_file(name: str, value: Any) -> Path:
    return _file(name, value, must_exist=True)


def _any_file(name: str, value: Any) -> Path:
    return _file(name, value, must_exist=False)


@dataclass(frozen=True, slots=True)
class Setting:
    """How one :class:`ServerConfig` field is checked (raw value -> typed value, or :class:`ConfigError`) and
    what it means, in one line (``ftpkit serve --help``; the README's settings table says the same)."""

    check: Callable[[str, Any], Any]
    help: str


SETTINGS: dict[str, Setting] = {
    "root": Setting(_root, "served folder; the home of anonymous and of --user users"),
    "storage": Setting(_storage, "s3://BUCKET[/PREFIX]: serve S3-compatible object storage instead of the local "
                                 "root (homes become prefixes; see the README)"),
    "aws_endpoint_url": Setting(_endpoint, "S3 endpoint, e.g. http://127.0.0.1:8333 (default: $AWS_ENDPOINT_URL, "
                                           "else AWS itself)"),
    "aws_region": Setting(_word, "S3 region (default: $AWS_REGION, else us-east-1)"),
    "aws_access_key_id": Setting(_word, "S3 access key (default: $AWS_ACCESS_KEY_ID or the AWS SDK's other "
                                        "sources)"),
    "aws_secret_access_key": Setting(_word, "S3 secret key (default: $AWS_SECRET_ACCESS_KEY); prefer the "
                                            "environment or the config file: a flag shows in ps; never logged"),
    "host": Setting(_host, "address to listen on: one address (0.0.0.0 for all IPv4 addresses, :: for all IPv6 ones)"),
    "port": Setting(_whole(0, 65535), "control port (0: any free port)"),
    "passive_ports": Setting(_port_range, "passive port range LOW-HIGH; when every port is taken: 425 and a log "
                                          "line, never a port outside"),
    "passive_ports_per_ip": Setting(_whole(0, 65535), "passive ports one client address may hold at once (0: a "
                                                      "quarter of the range, at least 4)"),
    "masquerade_address": Setting(_ip, "IPv4 address announced in 227 replies (server behind NAT)"),
    "masquerade_map": Setting(_masquerade_map, "NETWORK=ADDRESS: announce ADDRESS in 227 to clients from NETWORK "
                                               "(repeatable; a table in TOML)"),
    "allow_foreign_addresses": Setting(_bool, "accept PORT/EPRT naming another host than the client (RFC 2577 "
                                              "bounce: careful)"),
    "active_from_port_20": Setting(_bool, "active data connections leave from the control port minus one (needs "
                                          "the privilege)"),
    "anonymous": Setting(_bool, "allow anonymous login (anonymous/ftp, any password)"),
    "anonymous_write": Setting(_bool, "let anonymous upload and change files (read-only otherwise)"),
    "users_file": Setting(_existing_file, "TOML users file with argon2 hashes, per-user home and write (`ftpkit "
                                          "user add` writes it)"),
    "users": Setting(_users, "NAME:PASSWORD: a read-write user whose home is the root, hashed in memory at start "
                             "(repeatable)"),
    "max_sessions": Setting(_whole(1, 100000), "sessions at once; 421 when full"),
    "max_sessions_per_ip": Setting(_whole(1, 100000), "sessions at once from one client address; 421 when full"),
    "idle_timeout": Setting(_secs(), "seconds of control-connection silence before 421 and close"),
    "login_timeout": Setting(_secs(), "seconds from connect to a successful login, however the client trickles "
                                      "its bytes; then 421 and close"),
    "max_prelogin_per_ip": Setting(_whole(1, 100000), "connections not yet logged in from one client address; "
                                                      "421 when full"),
    "data_accept_timeout": Setting(_secs(), "seconds a passive listener waits for the client's data connection"),
    "data_connect_timeout": Setting(_secs(), "seconds an active data connection may take to reach the client"),
    "data_idle_timeout": Setting(_secs(), "seconds a transfer may stall before it is aborted"),
    "login_fail_delay": Setting(_secs(0.0, 3600.0), "seconds before a failed login is answered (slows guessing)"),
    "max_login_failures": Setting(_whole(1, 100000), "failed logins in a session before 421 and close"),
    "hash_concurrency": Setting(_whole(0, 64), "password verifications at once, in threads of their own; 0: the "
                                               "number of cores (at most 8)"),
    "password_cache_ttl": Setting(_secs(0.0, 86400.0), "seconds a successful password check is remembered (a "
                                                       "client that reconnects for every file hashes once); 0: off"),
    "hash_memory_kib": Setting(_whole(1024, 4 << 20), "argon2id memory of new password hashes in KiB (OWASP: 19456)"),
    "hash_time_cost": Setting(_whole(1, 100), "argon2id passes of new password hashes (OWASP: 2)"),
    "hash_parallelism": Setting(_whole(1, 64), "argon2id lanes of new password hashes (OWASP: 1)"),
    "upload_mode": Setting(_one_of(UPLOAD_MODES), "atomic: an upload replaces the file whole when complete, an "
                                                  "interrupted one keeps it and can be resumed; in-place: written "
                                                  "directly"),
    "partial_ttl": Setting(_secs(60.0, 365 * 86400.0), "seconds an interrupted upload's partial file is kept for "
                                                       "a resume"),
    "partial_sweep_interval": Setting(_secs(1.0, 86400.0), "seconds between the removals of partials (S3: "
                                                           "multipart uploads) older than partial_ttl, the first at "
                                                           "start; partial_ttl when that is shorter"),
    "defender": Setting(_bool, "ban sources whose failed logins, protocol errors and limit hits reach "
                                "defender_threshold within defender_observation_time"),
    "defender_threshold": Setting(_whole(1, 100000), "score that bans a source: the sum of its events' "
                                                     "defender_score_* within defender_observation_time"),
    "defender_observation_time": Setting(_secs(1.0, 86400.0), "seconds over which a source's scores add up"),
    "defender_ban_time": Setting(_secs(1.0, 365 * 86400.0), "seconds of a first ban"),
    "defender_ban_increment": Setting(_percent, "percent longer each further ban of the same source"),
    "defender_score_login_failed": Setting(_whole(0, 1000), "defender score of a failed login (0: not counted)"),
    "defender_score_protocol_error": Setting(_whole(0, 1000), "defender score of a malformed command line: not a "
                                                              "verb, or too long (0: not counted)"),
    "defender_score_limit_exceeded": Setting(_whole(0, 1000), "defender score of a connection refused by "
                                                              "max_sessions_per_ip, max_prelogin_per_ip or "
                                                              "max_sessions (0: not counted)"),
    "defender_score_tls_failed": Setting(_whole(0, 1000), "defender score of a failed TLS handshake on the control "
                                                          "connection (0: not counted)"),
    "defender_allow": Setting(_networks, "networks never banned (repeatable; default loopback)"),
    "defender_file": Setting(_any_file, "where bans are kept across restarts (`ftpkit ban list|lift` reads it); "
                                        "default /var/lib/ftpkit/bans.json as root, else ~/.local/state/ftpkit"),
    "hash_enabled": Setting(_bool, "answer HASH and XSHA1/XSHA256/XSHA512/XMD5/XCRC (file digests, read in worker "
                                   "threads; FEAT lists them only when on)"),
    "hash_max_size": Setting(_byte_size, "largest byte range HASH and the X commands digest (4G style suffixes "
                                         "allowed); larger ones get 556/550, so a digest is never a denial of "
                                         "service"),
    "max_line": Setting(_whole(64, 65536), "longest command line in bytes; longer ones get 500 and the session "
                                           "goes on"),
    "io_threads": Setting(_whole(1, 100000), "worker threads for file I/O (the event loop never blocks on the "
                                             "disk)"),
    "listen_backlog": Setting(_whole(1, 65535), "connections the kernel queues before accept, so a burst of "
                                                "hundreds of connects is served, not dropped"),
    "shutdown_grace": Setting(_secs(0.0, 3600.0), "seconds running transfers get at shutdown"),
    "banner": Setting(_banner, "the text of the 220 greeting (one line, at most 200 characters)"),
    "tls": Setting(_one_of(TLS_MODES), "FTPS: off, optional, required, or implicit (the main port speaks TLS at "
                                       "once)"),
    "tls_cert": Setting(_existing_file, "PEM certificate for FTPS (`ftpkit cert` writes a pair)"),
    "tls_key": Setting(_existing_file, "PEM private key for FTPS"),
    "tls_implicit_port": Setting(_whole(0, 65535), "also listen for implicit TLS on this port (990 style)"),
    "tls_required_for_anonymous": Setting(_bool, "with tls required: anonymous must use TLS too (otherwise it may "
                                                 "stay in clear)"),
    "require_session_reuse": Setting(_bool, "a protected data connection must resume the control connection's TLS "
                                            "session, else 522"),
    "allow_ccc": Setting(_bool, "allow CCC: a clear control connection again after login (for NAT helpers)"),
    "tls_handshake_timeout": Setting(_secs(), "seconds a client gets to finish its TLS handshake"),
    "tls_max_version": Setting(_one_of(TLS_MAX_VERSIONS), "highest TLS version: 1.2 or 1.3 (see the README's "
                                                          "design notes)"),
    "tls_strict_sni": Setting(_bool, "refuse a TLS client whose SNI names none of the certificate's names "
                                     "(unrecognized_name alert); a client without SNI is served"),
    "log_level": Setting(_one_of(LOG_LEVELS), "debug (the control conversation, passwords masked), info, warning, "
                                              "error"),
    "log_format": Setting(_one_of(LOG_FORMATS), "text or json"),
    "xferlog": Setting(_any_file, "also write transfers to this xferlog-format file"),
    "metrics_address": Setting(_host_port, "HOST:PORT to serve /metrics (Prometheus) and /healthz over HTTP; off "
                                           "by default; HOST 127.0.0.1 unless given"),
    "diagnosis_summary_interval": Setting(_secs(0.0, 86400.0), "seconds between the one-line summaries of "
                                                              "repeated data-connection problems (0: off)"),
    "hooks": Setting(_hooks, "EVENT:COMMAND or EVENT:URL run on upload, download, delete, rename, mkdir, rmdir, "
                             "login-failed, pre-upload (repeatable; [[hooks]] tables in TOML)"),
    "hook_concurrency": Setting(_whole(1, 1000), "event hooks running at once (more wait; never the FTP session)"),
    # --- several nodes (issue 16) ---
    "users_db": Setting(_users_db, "postgresql://USER@HOST/DB: users from a PostgreSQL database shared by every "
                                   "node, looked up at each login (`ftpkit user init --db` creates its tables)"),
    "proxy_protocol": Setting(_one_of(PROXY_MODES), "PROXY protocol v1/v2 from a load balancer on the control port: "
                                                    "off, optional (proxy_allowed sources may send it), required "
                                                    "(only they may connect)"),
    "proxy_allowed": Setting(_networks, "NETWORK: a load balancer's address or network allowed to send a PROXY "
                                        "header (repeatable; a list in TOML)"),
    "proxy_header_timeout": Setting(_secs(0.01, 60.0), "seconds a proxy_allowed source gets to send its PROXY "
                                                       "header, before the 220 greeting"),
}


def _check_together(cfg: ServerConfig) -> None:
    """What no single field can check."""
    if cfg.masquerade_address and ":" in cfg.masquerade_address:
        raise ConfigError("masquerade_address", "must be an IPv4 address (it is announced in 227 replies)")
    if (cfg.tls != "off" or cfg.tls_implicit_port is not None) and (cfg.tls_cert is None or cfg.tls_key is None):
        raise ConfigError("tls", f"{cfg.tls!r} needs tls_cert and tls_key (PEM files; `ftpkit cert` writes a pair)")
    if cfg.proxy_protocol != "off" and not cfg.proxy_allowed:
        raise ConfigError("proxy_allowed", f"proxy_protocol {cfg.proxy_protocol!r} needs the load balancers' "
                                           "addresses: --proxy-allowed 10.0.0.5/32 (repeatable)")
    aws = [name for name in ("aws_endpoint_url", "aws_region", "aws_access_key_id", "aws_secret_access_key")
           if getattr(cfg, name) is not None]
    if aws and cfg.storage is None:
        raise ConfigError(aws[0], "is only used with storage = \"s3://BUCKET[/PREFIX]\"")
    if (cfg.aws_access_key_id is None) != (cfg.aws_secret_access_key is None):
        missing = "aws_secret_access_key" if cfg.aws_secret_access_key is None else "aws_access_key_id"
        raise ConfigError(missing, "is needed too when the other half of the S3 credentials is set")
    if cfg.active_from_port_20 and cfg.port < 2:
        raise ConfigError("active_from_port_20", "needs a control port above 1")


def validate(values: Mapping[str, Any]) -> ServerConfig:
    """Build a :class:`ServerConfig` from raw values (from TOML and flags; ``None`` is left out); raise
    :class:`ConfigError` for an unknown setting or a value that is not allowed."""
    for key in values:
        if key not in FIELD_NAMES:
            raise ConfigError(key, f"unknown setting; known settings are {', '.join(sorted(FIELD_NAMES))}")
    return ServerConfig(**{key: raw for key, raw in values.items() if raw is not None})


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
    server = data.get("server")
    if isinstance(server, dict):
        if "hooks" in data and "hooks" not in server:  # [[hooks]] after a [server] table
            server = {**server, "hooks": data["hooks"]}
        data = server
    data = dict(data)
    # the AWS SDK's names are accepted as they are written in the environment, too
    data = {(key.lower() if key.upper() in AWS_NAMES else key): value for key, value in data.items()}
    if isinstance(data.get("root"), str) and not Path(data["root"]).is_absolute():
        data["root"] = str((path.parent / data["root"]).resolve())
    return data
