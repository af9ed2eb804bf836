"""Real FTP servers for integration tests: vsftpd, proftpd, pure-ftpd, pyftpdlib and ``ftpkit serve``, each started as
a process of its own on 127.0.0.1 (a free control port, a passive range of its own), serving a given directory to a
real user with a password and (unless told otherwise) read-only to anonymous, and stopped by PID afterwards.

    with real_server("vsftpd", root) as srv:          # a context manager ...
        Client(...).connect(srv.host, srv.port); ...login(srv.user, srv.password)

    def test_x(real_servers, served_root):            # ... or the pytest fixtures (import them into the test module)
        srv = real_servers.start("proftpd", served_root, anonymous=False, pasv_address="127.0.0.3")

Options every server takes (a server that cannot do one skips the test with the reason):

- ``anonymous`` (default True): anonymous login, read-only where the server can say so. pure-ftpd always serves
  anonymous from the ``ftp`` user's home; when a private mount namespace is available (root, ``unshare``) the served
  directory is bind-mounted there for pure-ftpd alone, else ``anon_root`` is ``/srv/ftp``.
- ``pasv_address``: the address announced in 227 replies (vsftpd ``pasv_address``, proftpd ``MasqueradeAddress``,
  pure-ftpd ``-P``, pyftpdlib ``masquerade_address``, ftpkit ``--masquerade-address``).
- ``active`` (default True): False refuses PORT/EPRT (vsftpd ``port_enable=NO``, proftpd ``<Limit PORT EPRT>``,
  pyftpdlib 502 replies); pure-ftpd and ftpkit serve cannot turn active mode off.
- ``extra``: more configuration: lines appended to the configuration file (vsftpd, proftpd), more command-line
  arguments (pure-ftpd, ``ftpkit serve``), or Python statements run with ``handler`` (the FTPHandler class) and
  ``authorizer`` in scope before the server starts (pyftpdlib).
- ``port`` (default: a free port), ``passive_ports`` (default: :func:`conftest.passive_range`), ``writable`` (default
  True: the served directory is handed to the user's uid so uploads work).

Directory permissions: vsftpd (a real system user, through PAM) and proftpd enter the served directory as an
unprivileged user, so every parent directory must be traversable by others (o+x). pytest's ``tmp_path`` lives under
a 0700 directory; use :func:`served_dir` / the ``served_root`` fixture (a 0755 directory under /tmp) instead. The
check is made at start-up, with a clear error.

vsftpd users are system users: a throwaway ``ftpkit-test-NNNNN`` is created with ``useradd`` + ``chpasswd`` (home =
the served directory, shell /bin/sh) and removed with ``userdel`` when the server is stopped. Everything here runs
as root (as CI does); without root the servers that need it skip.

Readiness: the port must accept a connection *and* send a 220 greeting, polled in a bounded loop (the wait between
polls is ``Popen.wait`` on the server, which also notices a server that exits). Stopping: SIGTERM (or SIGKILL with
:meth:`RealServer.kill`) to the process group we started and to every descendant process, then ``wait``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import IN_CI, free_port, passive_range, require_peer

SERVER_NAMES = ("vsftpd", "proftpd", "pure-ftpd", "pyftpdlib", "ftpkit")
HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
PURE_ANON_HOME = Path("/srv/ftp")
NOBODY = 65534


class Unsupported(Exception):
    """The server cannot be started with the options asked for (the test is skipped with this reason)."""


class ServerStartError(RuntimeError):
    """The server did not start or did not greet with 220 in time; the message carries its log."""


@dataclass(frozen=True)
class ServerOptions:
    anonymous: bool = True
    pasv_address: str | None = None
    active: bool = True
    extra: tuple[str, ...] = ()
    host: str = HOST
    port: int | None = None
    passive_ports: tuple[int, int] | None = None
    user: str | None = None
    password: str | None = None
    writable: bool = True


@dataclass
class RealServer:
    """A running real server. ``root`` is the user's served directory on disk; ``anon_root`` anonymous's one (None
    when anonymous is off)."""

    name: str
    host: str
    port: int
    user: str
    password: str
    root: Path
    anon_root: Path | None
    passive_ports: tuple[int, int]
    options: ServerOptions
    workdir: Path
    log: Path
    argv: list[str]
    stdin_is_log: bool = False
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_fh: Any = field(default=None, repr=False)

    # --- addresses ---------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str = "", anonymous: bool = False) -> str:
        """``ftp://user:password@host:port/path`` (the path as given; it is relative to the login directory, which
        is the served root for every server here)."""
        cred = "" if anonymous else f"{self.user}:{self.password}@"
        return f"ftp://{cred}{self.host}:{self.port}/{path.lstrip('/')}"

    def log_text(self, limit: int = 4000) -> str:
        """The tail of the server's output and of the log files it writes in its work directory."""
        parts = []
        for path in [self.log, *sorted(self.workdir.glob("*.log"))]:
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                if text:
                    parts.append(f"[{path.name}]\n{text[-limit:]}")
        return "\n".join(parts)

    # --- life cycle ----------------------------------------------------------------------------------------------
    def start(self) -> RealServer:
        """Start the process (again, on the same port and root) and wait for its 220 greeting."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running as PID {self.proc.pid}")
        self._log_fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=self._log_fh if self.stdin_is_log else subprocess.DEVNULL,  # vsftpd writes its errors to fd 0
            stdout=self._log_fh,
            stderr=self._log_fh,
            cwd=self.workdir,
            env=self.env,
            start_new_session=True,  # its own process group: stop() reaches the session processes it forks
        )
        try:
            wait_ready(self.host, self.port, self.proc, lambda: f"{self.name} ({' '.join(self.argv)}):\n"
                                                                 f"{self.log_text()}")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the server's process group and all its descendants, and reap it. Returns its exit status."""
        proc = self.proc
        if proc is None:
            return None
        code = None
        try:
            if proc.poll() is None:
                family = descendants(proc.pid)
                signal_processes(proc.pid, family, sig)
                try:
                    code = proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    signal_processes(proc.pid, family, signal.SIGKILL)
                    code = proc.wait(STOP_TIMEOUT)
                # Session processes must not outlive the server (they would hold its ports and files).
                leftovers = [pid for pid in family if _alive(pid)]
                if leftovers:
                    signal_processes(proc.pid, leftovers, signal.SIGKILL)
            else:
                code = proc.returncode
        finally:
            if self._log_fh is not None:
                self._log_fh.close()
                self._log_fh = None
        return code

    def kill(self) -> None:
        """SIGKILL the server and every process it forked (a crash, as far as clients can tell)."""
        self.stop(signal.SIGKILL)

    def restart(self) -> RealServer:
        self.stop()
        return self.start()


# --- processes ---------------------------------------------------------------------------------------------------

def _ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2:].split()
        if len(rest) > 1:
            out[int(entry)] = int(rest[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...)."""
    parents = _ppids()
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def signal_processes(leader: int, others: Sequence[int], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    for pid in others:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def read_greeting(sock: socket.socket) -> bytes:
    """The greeting up to its last line (``220 ...``; a multi-line one starts with ``220-``)."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        for line in data.split(b"\r\n")[:-1]:
            if re.match(rb"^\d{3} ", line):
                return data
        if len(data) > 65536:
            return data


def wait_ready(host: str, port: int, proc: subprocess.Popen[bytes], describe: Callable[[], str],
               timeout: float = READY_TIMEOUT) -> bytes:
    """Poll until ``host:port`` accepts a connection and greets with 220; fail fast if the process exits."""
    deadline = time.monotonic() + timeout
    last = "no connection yet"
    for _ in range(100000):  # bounded: the deadline ends it far sooner
        code = proc.poll()
        if code is not None:
            raise ServerStartError(f"exited with status {code} before greeting: {describe()}")
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                sock.settimeout(max(0.5, min(10.0, deadline - time.monotonic())))
                greeting = read_greeting(sock)
                if greeting.startswith(b"220"):
                    with contextlib.suppress(OSError):
                        sock.sendall(b"QUIT\r\n")
                    return greeting
                last = f"greeting {greeting[:200]!r}"
                if greeting[:3] in (b"421", b"500", b"530"):
                    raise ServerStartError(f"refused the probe with {greeting[:200]!r}: {describe()}")
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.01)  # the pause between polls, which also notices an exit at once
    raise ServerStartError(f"no 220 greeting on {host}:{port} within {timeout:g} s ({last}): {describe()}")


# --- directories and users ---------------------------------------------------------------------------------------

def served_dir(prefix: str = "ftpkit-served-") -> Path:
    """A fresh directory under /tmp with mode 0755 (every parent traversable): servable by every server here."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def check_traversable(path: Path, server: str) -> None:
    """Every parent of ``path`` must be o+x, and ``path`` itself o+rx, for servers that enter it unprivileged."""
    path = path.resolve()
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        needed = stat.S_IXOTH | (stat.S_IROTH if parent == path else 0)
        if mode & needed != needed:
            raise ServerStartError(
                f"{server} enters {path} as an unprivileged user, but {parent} is mode {stat.S_IMODE(mode):04o} "
                "(needs o+x on every parent); serve a directory from served_dir() / the served_root fixture")


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(base, name), uid, gid)


def _need_root(name: str) -> None:
    if os.geteuid() != 0:
        message = f"{name} needs root here (system users, chroot, privilege dropping)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _hash_password(password: str) -> str:
    openssl = require_peer("openssl")
    out = subprocess.run([openssl, "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                         check=True, timeout=30)
    return out.stdout.strip()


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kw)
    if result.returncode != 0:
        raise ServerStartError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def system_user(home: Path, password: str) -> Iterator[tuple[str, int, int]]:
    """A throwaway system user (for PAM logins) whose home is ``home``; deleted afterwards."""
    _need_root("a system user")
    useradd, chpasswd, userdel = (require_peer(p) for p in ("useradd", "chpasswd", "userdel"))
    name = ""
    for _ in range(20):
        candidate = f"ftpkit-test-{secrets.randbelow(90000) + 10000}"
        result = subprocess.run([useradd, "-M", "-d", str(home), "-s", "/bin/sh", candidate], capture_output=True,
                                text=True, timeout=60, check=False)
        if result.returncode == 0:
            name = candidate
            break
        if result.returncode != 9:  # 9: the name is taken
            raise ServerStartError(f"useradd {candidate} failed ({result.returncode}): {result.stderr.strip()}")
    if not name:
        raise ServerStartError("useradd: no free ftpkit-test-NNNNN name in 20 tries")
    try:
        _run([chpasswd], input=f"{name}:{password}\n")
        entry = pwd.getpwnam(name)
        yield name, entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run([userdel, name], capture_output=True, timeout=60, check=False)


_unshare_ok: list[bool] = []


def can_bind_mount() -> bool:
    """Whether a private mount namespace with a bind mount works here (root with CAP_SYS_ADMIN)."""
    if not _unshare_ok:
        unshare = shutil.which("unshare")
        ok = False
        if unshare and os.geteuid() == 0:
            probe = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c",
                                    f"mount --bind /tmp {PURE_ANON_HOME}"],
                                   capture_output=True, timeout=30, check=False)
            ok = probe.returncode == 0
        _unshare_ok.append(ok)
    return _unshare_ok[0]


# --- the five servers ----------------------------------------------------------------------------------------------

def _range(options: ServerOptions) -> tuple[int, int]:
    if options.passive_ports is not None:
        return options.passive_ports
    low, high = passive_range().split("-")
    return int(low), int(high)


def _vsftpd(root: Path, options: ServerOptions, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    exe = require_peer("vsftpd")
    _need_root("vsftpd")
    check_traversable(root, "vsftpd")
    if options.user is not None:
        raise Unsupported("vsftpd users are throwaway system users; the name cannot be chosen")
    password = options.password or "s3cret-" + secrets.token_hex(4)
    Path("/var/run/vsftpd/empty").mkdir(mode=0o755, parents=True, exist_ok=True)  # secure_chroot_dir
    user, uid, gid = stack.enter_context(system_user(root, password))
    if options.writable:
        chown_tree(root, uid, gid)
    port, (low, high) = options.port or free_port(), _range(options)
    lines = [
        "listen=YES", "listen_ipv6=NO", "background=NO", f"listen_address={options.host}", f"listen_port={port}",
        "seccomp_sandbox=NO", "secure_chroot_dir=/var/run/vsftpd/empty",
        f"anonymous_enable={'YES' if options.anonymous else 'NO'}", f"anon_root={root}", "no_anon_password=YES",
        "anon_upload_enable=NO", "anon_mkdir_write_enable=NO", "anon_other_write_enable=NO",
        "local_enable=YES", f"write_enable={'YES' if options.writable else 'NO'}", "local_umask=022",
        "chroot_local_user=YES", "allow_writeable_chroot=YES",
        "pam_service_name=vsftpd", "delay_failed_login=0",
        "pasv_enable=YES", f"pasv_min_port={low}", f"pasv_max_port={high}",
        f"port_enable={'YES' if options.active else 'NO'}", "connect_from_port_20=NO",
        "xferlog_enable=YES", f"vsftpd_log_file={workdir / 'vsftpd.log'}", "log_ftp_protocol=YES",
    ]
    if options.pasv_address:
        lines.append(f"pasv_address={options.pasv_address}")
    lines += options.extra
    conf = workdir / "vsftpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    return dict(argv=[exe, str(conf)], stdin_is_log=True, port=port, passive_ports=(low, high), user=user,
                password=password, anon_root=root if options.anonymous else None)


def _proftpd_modules(exe: str) -> list[str]:
    """Debian 13 builds mod_xfer, mod_ls and mod_delay as loadable modules (Debian 12 compiles them in): load the
    first two from beside the binary when they are not built in; no mod_delay, so no delay on failed logins."""
    lines = [f"ModulePath {Path(exe).resolve().parent.parent / 'lib' / 'proftpd'}"]
    for module in ("mod_xfer.c", "mod_ls.c"):
        lines += [f"<IfModule !{module}>", f"  LoadModule {module}", "</IfModule>"]
    return [*lines, "<IfModule mod_delay.c>", "  DelayEngine off", "</IfModule>"]


def _proftpd(root: Path, options: ServerOptions, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    exe = require_peer("proftpd")
    _need_root("proftpd")
    check_traversable(root, "proftpd")
    user = options.user or "ftpkit"
    password = options.password or "s3cret-" + secrets.token_hex(4)
    if options.writable:
        chown_tree(root, NOBODY, NOBODY)
    port, (low, high) = options.port or free_port(), _range(options)
    run = workdir / "run"
    run.mkdir()
    auth = workdir / "auth"
    auth.mkdir(mode=0o700)
    passwd, group = auth / "passwd", auth / "group"
    passwd.write_text(f"{user}:{_hash_password(password)}:{NOBODY}:{NOBODY}::{root}:/bin/sh\n")
    group.write_text(f"nogroup:x:{NOBODY}:\n")
    passwd.chmod(0o600)
    group.chmod(0o600)
    deny_active = ["<Limit PORT EPRT>", "  DenyAll", "</Limit>"] if not options.active else []
    lines = [
        'ServerName "ftpkit-proftpd"', "ServerType standalone", f"DefaultAddress {options.host}", f"Port {port}",
        "SocketBindTight on", "UseIPv6 off", "User nobody", "Group nogroup", "Umask 022",
        f"PassivePorts {low} {high}", "UseReverseDNS off", f"PidFile {run / 'proftpd.pid'}",
        f"ScoreboardFile {run / 'proftpd.scoreboard'}", *_proftpd_modules(exe), "WtmpLog off", "TransferLog none",
        f"SystemLog {workdir / 'proftpd.log'}", "AuthPAM off", "AuthOrder mod_auth_file.c mod_auth_unix.c",
        f"AuthUserFile {passwd}", f"AuthGroupFile {group}", "RequireValidShell off",
        f"AllowOverwrite {'on' if options.writable else 'off'}", "MaxInstances 50", "DefaultRoot ~",
        *deny_active,
    ]
    if not options.writable:
        lines += ["<Limit WRITE>", "  DenyAll", "</Limit>"]
    if options.pasv_address:
        lines.append(f"MasqueradeAddress {options.pasv_address}")
    if options.anonymous:
        lines += [f"<Anonymous {root}>", "  User ftp", "  Group nogroup", "  UserAlias anonymous ftp",
                  "  RequireValidShell off", "  <Limit WRITE>", "    DenyAll", "  </Limit>",
                  *("  " + line for line in deny_active), "</Anonymous>"]
    lines += options.extra
    conf = workdir / "proftpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    check = subprocess.run([exe, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=60, check=False)
    if check.returncode != 0:
        raise ServerStartError(f"proftpd -t rejects {conf}: {check.stderr.strip()}\n{conf.read_text()}")
    return dict(argv=[exe, "-n", "-c", str(conf)], port=port, passive_ports=(low, high), user=user,
                password=password, anon_root=root if options.anonymous else None)


def _pure_ftpd(root: Path, options: ServerOptions, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    exe = require_peer("pure-ftpd")
    pure_pw = require_peer("pure-pw")
    _need_root("pure-ftpd")
    if not options.active:
        raise Unsupported("pure-ftpd cannot refuse active mode (it has no such option)")
    user = options.user or "ftpkit"
    password = options.password or "s3cret-" + secrets.token_hex(4)
    if options.writable:
        chown_tree(root, NOBODY, NOBODY)
    port, (low, high) = options.port or free_port(), _range(options)
    # The line pure-pw useradd writes, with a SHA-512 crypt hash (~10 ms per login) instead of pure-pw's default
    # argon2 (~3 s per login, and as long to compute here). "/./" chroots the user to the home.
    pw_file, pdb = workdir / "pureftpd.passwd", workdir / "pureftpd.pdb"
    pw_file.write_text(f"{user}:{_hash_password(password)}:{NOBODY}:{NOBODY}::{root}/./" + ":" * 12 + "\n")
    pw_file.chmod(0o600)
    _run([pure_pw, "mkdb", str(pdb), "-f", str(pw_file)])
    argv = [exe, "-S", f"{options.host},{port}", "-p", f"{low}:{high}", "-l", f"puredb:{pdb}", "-A", "-H", "-4",
            "-g", str(workdir / "pure-ftpd.pid")]
    anon_root: Path | None = None
    if options.anonymous:
        argv.append("-i")  # no anonymous uploads
        if can_bind_mount():
            # A private mount namespace for pure-ftpd alone: /srv/ftp (the ftp user's home) is the served root
            # there. unshare and sh exec, so the PID we signal is pure-ftpd's.
            argv = [shutil.which("unshare") or "unshare", "--mount", "--propagation", "private", "sh", "-c",
                    'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(root), str(PURE_ANON_HOME), *argv]
            anon_root = root
        else:
            anon_root = PURE_ANON_HOME
    else:
        argv.append("-E")
    if options.pasv_address:
        argv += ["-P", options.pasv_address]
    argv += options.extra
    return dict(argv=argv, port=port, passive_ports=(low, high), user=user, password=password, anon_root=anon_root)


PYFTPDLIB_MAIN = r"""
import json, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

cfg = json.loads(sys.argv[1])
authorizer = DummyAuthorizer()
authorizer.add_user(cfg["user"], cfg["password"], cfg["root"], perm="elradfmwMT" if cfg["writable"] else "elr")
if cfg["anonymous"]:
    authorizer.add_anonymous(cfg["root"], perm="elr")


class handler(FTPHandler):
    pass


if not cfg["active"]:
    def refuse(self, line):
        self.respond("502 Active mode (PORT/EPRT) is disabled on this server.")
    handler.ftp_PORT = handler.ftp_EPRT = refuse
handler.authorizer = authorizer
handler.passive_ports = list(range(cfg["low"], cfg["high"] + 1))
handler.masquerade_address = cfg["pasv_address"]
handler.auth_failed_timeout = 0.1
exec("\n".join(cfg["extra"]))
server = FTPServer((cfg["host"], cfg["port"]), handler)
server.serve_forever()
"""


def _pyftpdlib(root: Path, options: ServerOptions, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    try:
        import pyftpdlib  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pyftpdlib>=2.0"], capture_output=True,
                       timeout=300, check=False)
    probe = subprocess.run([sys.executable, "-c", "import pyftpdlib"], capture_output=True, timeout=60, check=False)
    if probe.returncode != 0:
        message = "pyftpdlib is not installed (pip install pyftpdlib, or the project's test extras)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    user = options.user or "ftpkit"
    password = options.password or "s3cret-" + secrets.token_hex(4)
    port, (low, high) = options.port or free_port(), _range(options)
    script = workdir / "pyftpdlib_main.py"
    script.write_text(PYFTPDLIB_MAIN)
    cfg = dict(user=user, password=password, root=str(root), writable=options.writable, anonymous=options.anonymous,
               active=options.active, low=low, high=high, pasv_address=options.pasv_address, host=options.host,
               port=port, extra=list(options.extra))
    return dict(argv=[sys.executable, str(script), json.dumps(cfg)], port=port, passive_ports=(low, high), user=user,
                password=password, anon_root=root if options.anonymous else None)


def _ftpkit(root: Path, options: ServerOptions, workdir: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    if not options.active:
        raise Unsupported("ftpkit serve has no setting that turns active mode off")
    user = options.user or "ftpkit"
    password = options.password or "s3cret-" + secrets.token_hex(4)
    port, (low, high) = options.port or free_port(), _range(options)
    argv = [sys.executable, "-m", "ftpkit", "serve", str(root), "--host", options.host, "--port", str(port),
            "--passive-ports", f"{low}-{high}", "--user", f"{user}:{password}", "--login-fail-delay", "0.05",
            "--shutdown-grace", "2", "--log-level", "debug"]
    argv.append("--anonymous" if options.anonymous else "--no-anonymous")
    if options.pasv_address:
        argv += ["--masquerade-address", options.pasv_address]
    if not options.writable:
        raise Unsupported("ftpkit serve --user users always have write access")
    argv += options.extra
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return dict(argv=argv, env=env, port=port, passive_ports=(low, high), user=user, password=password,
                anon_root=root if options.anonymous else None)


BUILDERS: dict[str, Callable[[Path, ServerOptions, Path, contextlib.ExitStack], dict[str, Any]]] = {
    "vsftpd": _vsftpd,
    "proftpd": _proftpd,
    "pure-ftpd": _pure_ftpd,
    "pyftpdlib": _pyftpdlib,
    "ftpkit": _ftpkit,
}


@contextlib.contextmanager
def real_server(name: str, root: Path, **settings: Any) -> Iterator[RealServer]:
    """Start the real server ``name`` serving ``root``; stop it (and remove what it needed) afterwards, also when the
    body fails. Options: see the module's docstring. Unsupported options skip the calling test."""
    if name not in BUILDERS:
        raise ValueError(f"unknown server {name!r}; one of {', '.join(SERVER_NAMES)}")
    if "extra" in settings:
        settings["extra"] = tuple(settings["extra"])
    options = ServerOptions(**settings)
    root = Path(root).resolve()
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix=f"ftpkit-{name}-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        try:
            built = BUILDERS[name](root, options, workdir, stack)
        except Unsupported as exc:
            pytest.skip(f"{name}: {exc}")
        server = RealServer(name=name, host=options.host, root=root, options=options, workdir=workdir,
                            log=workdir / "server.out", **built)
        stack.callback(server.stop)
        server.start()
        yield server


class RealServers:
    """Starts real servers for one test and stops them all when it ends (the ``real_servers`` fixture)."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self.started: list[RealServer] = []

    def start(self, name: str, root: Path, **settings: Any) -> RealServer:
        server = self._stack.enter_context(real_server(name, root, **settings))
        self.started.append(server)
        return server

    def close(self) -> None:
        self.started.clear()
        self._stack.close()


@pytest.fixture
def real_servers() -> Iterator[RealServers]:
    servers = RealServers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def served_root() -> Iterator[Path]:
    """A fresh 0755 directory under /tmp that every real server can serve; removed afterwards."""
    path = served_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
