"""The server benchmark of issue 11: ``ftpkit serve`` against vsftpd and pyftpdlib, every row in one run.

Rows (``--rows``, comma-separated; default: all):

- ``retr``, ``stor``: RETR / STOR of one big file (1 GiB; ``--quick``: 100 MiB) with curl (``-o /dev/null`` /
  ``-T``), as the password user; throughput of the transfer itself (curl's ``time_total - time_pretransfer``, so the
  login's hash is not in it). Every download is checked by its byte count and once per server by the SHA-256 of a
  downloaded copy; every upload by the SHA-256 of the file on the tmpfs.
- ``sessions16``: 500 sessions x (connect, anonymous login, TYPE I, PASV, RETR 1 MiB, QUIT), 16 at a time;
  ``sessions200``: 200 such sessions all connecting at once. Every 1 MiB is compared with the file.
- ``logins``: 200 logins (USER/PASS/QUIT) of one password user, 50 at a time, with the peak RSS of the server's whole
  process tree sampled from /proc. ftpkit's user is written by ``ftpkit user add`` (its default argon2 settings);
  vsftpd's and pyftpdlib's is a throwaway system user ``ftpbench`` whose /etc/shadow hash is yescrypt (vsftpd checks it
  through PAM, pyftpdlib through its UnixAuthorizer and ``crypt``).
- ``idle1k``, ``idle10k``: RSS of the server's process tree with 1,000 / 10,000 idle logged-in (anonymous) sessions,
  each on a fresh server, measured once (not per round). vsftpd forks two processes per session: it runs 1,000 only.
- ``ftps-retr``, ``ftps-stor``: the same transfers with AUTH TLS and PROT P against vsftpd with ``ssl_enable``, one
  cipher pinned on both servers' side and in curl (``--tls-max 1.2 --ciphers ECDHE-RSA-AES128-GCM-SHA256``; ftpkit has
  no cipher setting, so the client's single offer pins it there; the negotiated cipher is checked in curl's log).
- ``client``: ``ftpkit get`` / ``ftpkit put`` against curl and lftp, the same ftpkit server, anonymous with write
  allowed; whole commands (process start to exit), every transfer checked by SHA-256.

All servers: 127.0.0.1, a tmpfs root (mounted here for the run), session caps raised above the load, logging at warning
level (vsftpd: no xferlog, no protocol log), the same idle timeouts. Rows are measured in ``--rounds`` interleaved
rounds; the order of the servers rotates each round and every measurement starts after ``sync``; each figure is the
best round. Rows that write the whole file into the tmpfs (stor, ftps-stor, client-get, client-put) start each round
with one unmeasured transfer by that round's first participant (see ``WARMED``). Ratios: throughput ftpkit / best
anchor, times and memory best anchor / ftpkit (above 1: ftpkit ahead).

Writes its section of ``bench/results.md`` (``--section``, default ``server``). Run as root on Debian after
``./run test`` has installed the peers: ``.venv/bin/python bench/server_bench.py [--quick] [--rows retr,stor]``.
``--profile DIR`` also records ftpkit with py-spy under ``--profile-rows`` (default sessions16,stor; after the
measured rounds, each row three times), keeps the raw stacks in DIR and writes the top functions by self time to the
section ``SECTION-profile``; ``--profile-only`` skips the measured rounds. Everything is bounded in count and time;
every process it starts is stopped by its PID; the tmpfs is unmounted and the system user removed at the end, also on
failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import pwd
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyftpdlib

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(1, str(REPO / "src"))  # this tree's ftpkit: the one measured, and the codecs of the clients here

from results_file import write_section  # noqa: E402
from transfer_bench import client_commands, make_file, sha  # noqa: E402

from ftpkit.protocol.hostport import parse_pasv  # noqa: E402
from ftpkit.protocol.replies import Reply, ReplyReader  # noqa: E402
from realservers import ServerStartError, descendants, signal_processes, wait_ready  # noqa: E402

HOST = "127.0.0.1"
CIPHER = "ECDHE-RSA-AES128-GCM-SHA256"
BENCH_USER = "ftpbench"
BENCH_GECOS = "ftpkit server_bench throwaway user"
CAP = 20000  # session caps on every server: above every load here
NOFILE = 65536  # RLIMIT_NOFILE of the benchmark and of every server (10,000 idle sessions)
COMMAND_TIMEOUT = 600.0  # one curl / lftp / ftpkit command
ROW_TIMEOUT = 600.0  # one measurement of a session row
STOP_TIMEOUT = 10.0
PROFILE_RATE = 100  # py-spy samples per second (at 250 it fell seconds behind ftpkit's 33 threads)
PAGE = os.sysconf("SC_PAGE_SIZE")
# Passive ranges of their own, below the ephemeral range (32768-60999) and the test suite's (20000+).
PASSIVE = {"ftpkit": (10000, 10499), "vsftpd": (10500, 10999), "pyftpdlib": (11000, 11499),
           "ftpkit-tls": (11500, 11699), "vsftpd-tls": (11700, 11899), "ftpkit-client": (11900, 11999),
           "pyftpdlib-crypt": (12000, 12099), "idle": (12100, 12199)}


class Failed(Exception):
    """One measurement went wrong; the message says how (it is recorded, and the run goes on)."""


# --- processes -----------------------------------------------------------------------------------------------------

def raise_nofile() -> None:
    """RLIMIT_NOFILE to NOFILE (soft and hard): run in the benchmark and, through preexec_fn, in every server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(NOFILE, soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tree_pids(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc/PID/task/TID/children (descendants() scans all of /proc)."""
    found, frontier = [pid], [pid]
    for _ in range(200000):  # bounded: each step takes one process off the frontier
        if not frontier:
            break
        current = frontier.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as fh:
                    children = [int(c) for c in fh.read().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child not in found:
                    found.append(child)
                    frontier.append(child)
    return found


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants (the sum of their RSS)."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{p}/statm") as fh:
            total += int(fh.read().split()[1]) * PAGE
    return total


def tree_pss(pids: list[int]) -> int:
    """Proportional set size of these processes (shared pages divided among their sharers), in bytes."""
    total = 0
    for p in pids:
        with contextlib.suppress(OSError, ValueError):
            found = re.search(r"^Pss:\s+(\d+) kB", Path(f"/proc/{p}/smaps_rollup").read_text(), re.M)
            total += int(found.group(1)) * 1024 if found else 0
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` (with its reaped children) and of its living descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{p}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / ticks


class PeakSampler:
    """A thread that samples tree_rss(pid) every ``interval`` seconds until stopped; ``peak`` is the largest."""

    def __init__(self, pid: int, interval: float = 0.1, limit: float = ROW_TIMEOUT + 60) -> None:
        self.pid, self.interval, self.limit = pid, interval, limit
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        for _ in range(int(self.limit / self.interval) + 1):
            self.peak = max(self.peak, tree_rss(self.pid))
            self.samples += 1
            if self._stop.wait(self.interval) or time.monotonic() > deadline:
                break

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.peak = max(self.peak, tree_rss(self.pid))


@dataclass
class Server:
    """One server process of the benchmark, started in a process group of its own and stopped by its PID."""

    label: str  # ftpkit, vsftpd, pyftpdlib, ftpkit-tls, ...
    argv: list[str]
    port: int
    workdir: Path
    env: dict[str, str] | None = None
    stdin_is_log: bool = False  # vsftpd writes its start-up errors to fd 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self, limit: int = 3000) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            with contextlib.suppress(OSError):
                parts.append(f"[{path.name}] {path.read_text(errors='replace')[-limit:]}")
        return "\n".join(parts)

    def start(self) -> Server:
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - the child holds it; closed right after
        try:
            self.proc = subprocess.Popen(self.argv, stdin=log if self.stdin_is_log else subprocess.DEVNULL,
                                         stdout=log, stderr=log, cwd=self.workdir, env=self.env,
                                         start_new_session=True, preexec_fn=raise_nofile)
        finally:
            log.close()
        try:
            wait_ready(HOST, self.port, self.proc, lambda: f"{self.label} ({' '.join(self.argv)}):\n{self.log_text()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        family = descendants(proc.pid)
        signal_processes(proc.pid, family, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            signal_processes(proc.pid, family, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
        leftovers = [p for p in family if Path(f"/proc/{p}").exists()]
        if leftovers:  # session processes must not outlive the server
            signal_processes(proc.pid, leftovers, signal.SIGKILL)


# --- the workspace: tmpfs, files, the system user, the certificate ------------------------------------------------

@dataclass
class Workspace:
    base: Path  # the tmpfs mount point
    served: Path  # every server's root (and the password user's home)
    local: Path  # clients' downloads
    conf: Path
    big: Path
    digest: str
    small: bytes  # the 1 MiB file's content
    password: str
    users_file: Path
    cert: Path
    key: Path
    shadow_hash: str = ""
    argon2_hash: str = ""


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, **kw)
    if result.returncode != 0:
        raise Failed(f"{' '.join(argv[:3])} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return result


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="ftpkit-server-bench-", dir="/tmp"))
    try:
        run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(base)])
        try:
            yield base
        finally:
            if subprocess.run(["umount", str(base)], capture_output=True, timeout=60, check=False).returncode:
                subprocess.run(["umount", "-l", str(base)], capture_output=True, timeout=60, check=False)
    finally:
        with contextlib.suppress(OSError):
            base.rmdir()


def shadow_hash(name: str) -> str:
    for line in Path("/etc/shadow").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields[1]
    return ""


@contextlib.contextmanager
def bench_user(home: Path, password: str) -> Iterator[tuple[int, int]]:
    """The throwaway system user ``ftpbench`` (yescrypt in /etc/shadow), removed afterwards."""
    with contextlib.suppress(KeyError):
        if pwd.getpwnam(BENCH_USER).pw_gecos != BENCH_GECOS:
            raise Failed(f"a system user {BENCH_USER!r} exists and is not this benchmark's: not touching it")
        run(["userdel", BENCH_USER])  # left over from an interrupted run of this benchmark
    run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", "-c", BENCH_GECOS, BENCH_USER])
    try:
        run(["chpasswd"], input=f"{BENCH_USER}:{password}\n")
        if not shadow_hash(BENCH_USER).startswith("$y$"):  # PAM's default on Debian 12 is yescrypt; else ask for it
            run(["chpasswd", "-c", "YESCRYPT"], input=f"{BENCH_USER}:{password}\n")
        entry = pwd.getpwnam(BENCH_USER)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", BENCH_USER], capture_output=True, timeout=60, check=False)


def prepare(stack: contextlib.ExitStack, size: int) -> Workspace:
    base = stack.enter_context(tmpfs(f"{(3 * size >> 20) + 512}m"))  # the file, an upload, a client's copy
    served, local, conf = base / "served", base / "local", base / "conf"
    for d in (served, local, conf):
        d.mkdir(mode=0o755)
    print(f"server_bench: writing {size >> 20} MiB of random bytes to {served}", flush=True)
    digest = make_file(served / "big.bin", size)
    small = os.urandom(1 << 20)
    (served / "1m.bin").write_bytes(small)
    password = "bench-" + secrets.token_hex(8)
    uid, gid = stack.enter_context(bench_user(served, password))
    for path in (served, served / "big.bin", served / "1m.bin"):
        os.chown(path, uid, gid)
        path.chmod(0o755 if path.is_dir() else 0o644)
    users_file = conf / "users.toml"
    run([sys.executable, "-m", "ftpkit", "user", "add", BENCH_USER, "--file", str(users_file), "--home", ".",
         "--password-stdin"], input=password + "\n", env=ftpkit_env())
    cert, key = conf / "cert.pem", conf / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}"])
    argon2 = re.search(r'password_hash = "(\$argon2[^$]*\$v=\d+\$[^$]*)\$', users_file.read_text())
    return Workspace(base=base, served=served, local=local, conf=conf, big=served / "big.bin", digest=digest,
                     small=small, password=password, users_file=users_file, cert=cert, key=key,
                     shadow_hash=shadow_hash(BENCH_USER), argon2_hash=argon2.group(1) if argon2 else "?")


# --- the servers ---------------------------------------------------------------------------------------------------

def ftpkit_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed ftpkit has its bytecode (pip compiles it)
    return env


def compile_ftpkit() -> None:
    """Bytecode for the sources measured, as an installed package has: without it (PYTHONDONTWRITEBYTECODE set in
    the environment), every ``ftpkit get`` of the client rows compiles its modules again (about 60 ms)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=True, env=ftpkit_env(),
                   stdout=subprocess.DEVNULL, timeout=300)


def workdir(ws: Workspace, label: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=ws.conf))
    path.chmod(0o755)
    return path


def ftpkit_server(ws: Workspace, label: str, passive: str, tls: bool = False, anonymous_write: bool = False) -> Server:
    low, high = PASSIVE[passive]
    port = free_port()
    argv = [sys.executable, "-m", "ftpkit", "serve", str(ws.served), "--host", HOST, "--port", str(port),
            "--passive-ports", f"{low}-{high}", "--users-file", str(ws.users_file), "--max-sessions", str(CAP),
            "--max-sessions-per-ip", str(CAP), "--max-prelogin-per-ip", str(CAP), "--passive-ports-per-ip", "65535",
            "--log-level", "warning"]
    if tls:
        argv += ["--tls", "required", "--tls-cert", str(ws.cert), "--tls-key", str(ws.key), "--no-anonymous"]
    else:
        argv += ["--anonymous"] + (["--anonymous-write"] if anonymous_write else [])
    return Server(label, argv, port, workdir(ws, label), env=ftpkit_env())


def vsftpd_server(ws: Workspace, label: str, passive: str, tls: bool = False) -> Server:
    low, high = PASSIVE[passive]
    port = free_port()
    wd = workdir(ws, label)
    Path("/var/run/vsftpd/empty").mkdir(mode=0o755, parents=True, exist_ok=True)  # secure_chroot_dir
    lines = [
        "listen=YES", "listen_ipv6=NO", "background=NO", f"listen_address={HOST}", f"listen_port={port}",
        "seccomp_sandbox=NO", "secure_chroot_dir=/var/run/vsftpd/empty", f"max_clients={CAP}", f"max_per_ip={CAP}",
        f"anonymous_enable={'NO' if tls else 'YES'}", f"anon_root={ws.served}", "no_anon_password=YES",
        "anon_upload_enable=NO", "anon_mkdir_write_enable=NO", "anon_other_write_enable=NO",
        "local_enable=YES", "write_enable=YES", "local_umask=022", "chroot_local_user=YES",
        "allow_writeable_chroot=YES", "pam_service_name=vsftpd", "pasv_enable=YES", f"pasv_min_port={low}",
        f"pasv_max_port={high}", "connect_from_port_20=NO", "dirmessage_enable=NO",
        # warning level: no transfer log, no protocol log (vsftpd logs nothing else in the foreground)
        "xferlog_enable=NO", "log_ftp_protocol=NO", f"vsftpd_log_file={wd / 'vsftpd.log'}",
        "idle_session_timeout=300", "data_connection_timeout=300",
    ]
    if tls:
        lines += ["ssl_enable=YES", f"rsa_cert_file={ws.cert}", f"rsa_private_key_file={ws.key}",
                  f"ssl_ciphers={CIPHER}", "ssl_sslv2=NO", "ssl_sslv3=NO", "ssl_tlsv1=YES",
                  "force_local_logins_ssl=YES", "force_local_data_ssl=YES", "allow_anon_ssl=NO",
                  "require_ssl_reuse=YES"]
    conf = wd / "vsftpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    return Server(label, [shutil.which("vsftpd") or "vsftpd", str(conf)], port, wd, stdin_is_log=True)


PYFTPDLIB_MAIN = r"""
import json, logging, sys
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.log import config_logging
from pyftpdlib.servers import FTPServer

cfg = json.loads(sys.argv[1])
config_logging(level=logging.WARNING)
if cfg["crypt"]:  # the system user: its /etc/shadow hash, checked with crypt(3)
    import warnings
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import UnixAuthorizer
    authorizer = UnixAuthorizer(allowed_users=[cfg["user"]], require_valid_shell=True)
else:
    from pyftpdlib.authorizers import DummyAuthorizer
    authorizer = DummyAuthorizer()
    authorizer.add_user(cfg["user"], cfg["password"], cfg["root"], perm="elradfmwMT")
    authorizer.add_anonymous(cfg["root"], perm="elr")


class handler(FTPHandler):
    pass


handler.authorizer = authorizer
handler.passive_ports = list(range(cfg["low"], cfg["high"] + 1))
handler.timeout = 300
server = FTPServer((cfg["host"], cfg["port"]), handler, backlog=1024)  # ftpkit's default listen backlog
server.max_cons = cfg["cap"]  # the caps are the server's attributes (handler.max_cons does nothing)
server.max_cons_per_ip = 0  # no limit
server.serve_forever()
"""


def pyftpdlib_server(ws: Workspace, label: str, passive: str, crypt: bool = False) -> Server:
    low, high = PASSIVE[passive]
    port = free_port()
    wd = workdir(ws, label)
    script = wd / "pyftpdlib_main.py"
    script.write_text(PYFTPDLIB_MAIN)
    cfg = dict(user=BENCH_USER, password=ws.password, root=str(ws.served), low=low, high=high, host=HOST, port=port,
               cap=CAP, crypt=crypt)
    return Server(label, [sys.executable, str(script), json.dumps(cfg)], port, wd)


def build(ws: Workspace, label: str, passive: str | None = None) -> Server:
    passive = passive or label
    builders: dict[str, Callable[[], Server]] = {
        "ftpkit": lambda: ftpkit_server(ws, label, passive),
        "vsftpd": lambda: vsftpd_server(ws, label, passive),
        "pyftpdlib": lambda: pyftpdlib_server(ws, label, passive),
        "pyftpdlib-crypt": lambda: pyftpdlib_server(ws, label, passive, crypt=True),
        "ftpkit-tls": lambda: ftpkit_server(ws, label, passive, tls=True),
        "vsftpd-tls": lambda: vsftpd_server(ws, label, passive, tls=True),
        "ftpkit-client": lambda: ftpkit_server(ws, label, passive, anonymous_write=True),
    }
    return builders[label]()


# --- an FTP client for the session rows (asyncio, the project's reply codec) ---------------------------------------

class Control:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.codec = ReplyReader()
        self.pending: list[Reply] = []

    async def reply(self) -> Reply:
        for _ in range(10000):  # bounded: each read brings bytes or ends
            if self.pending:
                return self.pending.pop(0)
            data = await self.reader.read(65536)
            if not data:
                raise Failed("control connection closed")
            self.pending.extend(e for e in self.codec.feed(data) if isinstance(e, Reply))
        raise Failed("no complete reply")

    async def command(self, line: str, *want: int) -> Reply:
        self.writer.write(line.encode() + b"\r\n")
        got = await self.reply()
        if want and got.code not in want:
            raise Failed(f"{line.split()[0]} {got.code}")
        return got

    def close(self) -> None:
        self.writer.close()


async def connect(port: int) -> Control:
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError as exc:
        raise Failed(f"connect: {type(exc).__name__}") from None
    ctl = Control(reader, writer)
    greeting = await ctl.reply()
    if greeting.code != 220:
        ctl.close()
        raise Failed(f"greeting {greeting.code}")
    return ctl


async def login(ctl: Control, user: str, password: str) -> None:
    if (await ctl.command(f"USER {user}", 230, 331)).code == 331:
        await ctl.command(f"PASS {password}", 230)


async def read_all(sock: socket.socket, buf: bytearray) -> int:
    loop = asyncio.get_running_loop()
    view, got = memoryview(buf), 0
    while True:  # bounded: every pass adds at least one byte to a finite buffer, or ends
        if got >= len(buf):
            raise Failed("more data than the file has")
        n = await loop.sock_recv_into(sock, view[got:])
        if n == 0:
            return got
        got += n


async def retr_session(port: int, expected: bytes) -> None:
    """connect, anonymous login, TYPE I, PASV, RETR 1m.bin (compared with the file), QUIT."""
    ctl = await connect(port)
    try:
        await login(ctl, "anonymous", "bench@")
        await ctl.command("TYPE I", 200)
        announced = parse_pasv((await ctl.command("PASV", 227)).text)
        buf = bytearray(len(expected) + 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (announced.host, announced.port))
            ctl.writer.write(b"RETR 1m.bin\r\n")
            reading = asyncio.ensure_future(read_all(sock, buf))
            try:
                first = await ctl.reply()
                if first.code not in (125, 150):
                    raise Failed(f"RETR {first.code}")
                got = await reading
            finally:
                reading.cancel()
        finally:
            sock.close()
        final = await ctl.reply()
        if final.code != 226:
            raise Failed(f"RETR end {final.code}")
        if got != len(expected) or buf[:got] != expected:
            raise Failed(f"data differs ({got} bytes)")
        await ctl.command("QUIT", 221)
    finally:
        ctl.close()


async def login_session(port: int, user: str, password: str) -> None:
    ctl = await connect(port)
    try:
        await login(ctl, user, password)
        await ctl.command("QUIT", 221)
    finally:
        ctl.close()


async def pool(total: int, concurrency: int, one: Callable[[], Awaitable[None]], deadline: float
               ) -> tuple[float, dict[str, int]]:
    """``total`` sessions, ``concurrency`` at a time, each within ``deadline`` seconds: (seconds, outcome counts)."""
    counts: dict[str, int] = {}
    todo = iter(range(total))

    async def worker() -> None:
        for _ in todo:
            try:
                async with asyncio.timeout(deadline):
                    await one()
                outcome = "ok"
            except Failed as exc:
                outcome = str(exc)
            except TimeoutError:
                outcome = f"not done in {deadline:g} s"
            except Exception as exc:  # a protocol surprise (a bad 227, ...) is an outcome, not the end of the run
                outcome = f"{type(exc).__name__}: {exc}"[:120]
            counts[outcome] = counts.get(outcome, 0) + 1

    started = time.perf_counter()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ROW_TIMEOUT):
            await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    missing = total - sum(counts.values())
    if missing:
        counts[f"not done in the row's {ROW_TIMEOUT:g} s"] = missing
    return elapsed, counts


async def hold_idle(port: int, total: int, concurrency: int, deadline: float,
                    measure: Callable[[], None]) -> dict[str, int]:
    """Log ``total`` anonymous sessions in (``concurrency`` connecting at a time), call ``measure`` while they all
    stay open and idle, then close them."""
    sessions: list[Control] = []
    counts: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            ctl = None
            try:
                ctl = await connect(port)
                await login(ctl, "anonymous", "bench@")
                sessions.append(ctl)
                outcome = "ok"
            except Failed as exc:
                outcome = str(exc)
            except Exception as exc:  # as in pool()
                outcome = f"{type(exc).__name__}: {exc}"[:120]
            if outcome != "ok" and ctl is not None:
                ctl.close()
            counts[outcome] = counts.get(outcome, 0) + 1

    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await asyncio.gather(*(one() for _ in range(total)))
        missing = total - sum(counts.values())
        if missing:
            counts[f"not logged in within {deadline:g} s"] = missing
        measure()
    finally:
        for ctl in sessions:
            ctl.close()
    return counts


# --- measurements --------------------------------------------------------------------------------------------------

@dataclass
class Measure:
    value: float  # MB/s, seconds or bytes: see the row
    server_cpu: float | None = None
    note: str = ""


def curl_args(srv: Server, ws: Workspace, tls: bool) -> tuple[list[str], str]:
    base = f"ftp://{BENCH_USER}:{ws.password}@{HOST}:{srv.port}/"
    extra = ["--ssl-reqd", "--cacert", str(ws.cert), "--tls-max", "1.2", "--ciphers", CIPHER] if tls else []
    return ["curl", "-sS", "--max-time", str(int(COMMAND_TIMEOUT)), *extra], base


def curl_transfer(argv: list[str], size: int, srv: Server, upload: bool) -> Measure:
    """Run curl after ``sync``; the transfer's own throughput (MB/s) from curl's timers."""
    os.sync()
    cpu = tree_cpu(srv.pid)
    out = subprocess.run([*argv, "-w", "\n%{time_pretransfer} %{time_total} %{size_download} %{size_upload}"],
                         capture_output=True, text=True, timeout=COMMAND_TIMEOUT + 30, check=False)
    cpu = tree_cpu(srv.pid) - cpu
    if out.returncode != 0:
        raise Failed(f"curl exit {out.returncode}: {out.stderr.strip()[-300:]}")
    pre, total, down, up = out.stdout.split()[-4:]
    moved = int(float(up if upload else down))
    if moved != size:
        raise Failed(f"curl moved {moved} bytes, not {size}")
    seconds = float(total) - float(pre)
    return Measure(size / seconds / 1e6, cpu)


def check_download(srv: Server, ws: Workspace, tls: bool) -> str:
    """Download a copy once and compare its SHA-256; with TLS, also return the cipher curl negotiated."""
    args, base = curl_args(srv, ws, tls)
    copy = ws.local / f"check-{srv.label}.bin"
    try:
        out = subprocess.run([*args, "-v", "-o", str(copy), base + "big.bin"], capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT + 30, check=False)
        if out.returncode != 0:
            raise Failed(f"curl exit {out.returncode}: {out.stderr.strip()[-300:]}")
        if sha(copy) != ws.digest:
            raise Failed("downloaded copy differs from the file")
    finally:
        copy.unlink(missing_ok=True)
    found = re.search(r"SSL connection using (\S+) / (\S+)", out.stderr)
    if tls and (not found or found.group(2) != CIPHER):
        raise Failed(f"negotiated {found.groups() if found else 'nothing'}, not {CIPHER}")
    return f"{found.group(1)} {found.group(2)}" if found else ""


def measure_retr(srv: Server, ws: Workspace, tls: bool = False) -> Measure:
    args, base = curl_args(srv, ws, tls)
    return curl_transfer([*args, "-o", "/dev/null", base + "big.bin"], ws.big.stat().st_size, srv, upload=False)


def measure_stor(srv: Server, ws: Workspace, tls: bool = False) -> Measure:
    args, base = curl_args(srv, ws, tls)
    target = ws.served / "up.bin"
    target.unlink(missing_ok=True)
    try:
        got = curl_transfer([*args, "-T", str(ws.big), base + "up.bin"], ws.big.stat().st_size, srv, upload=True)
        if sha(target) != ws.digest:
            raise Failed("uploaded file differs")
        return got
    finally:
        target.unlink(missing_ok=True)


def measure_sessions(srv: Server, ws: Workspace, total: int, concurrency: int, deadline: float) -> Measure:
    os.sync()
    cpu = tree_cpu(srv.pid)
    elapsed, counts = asyncio.run(pool(total, concurrency, lambda: retr_session(srv.port, ws.small), deadline))
    cpu = tree_cpu(srv.pid) - cpu
    if counts.get("ok", 0) != total:
        raise Failed(describe_counts(counts, total))
    return Measure(elapsed, cpu)


def measure_logins(srv: Server, ws: Workspace, total: int, concurrency: int, deadline: float) -> Measure:
    os.sync()
    cpu = tree_cpu(srv.pid)
    before = tree_rss(srv.pid)
    with PeakSampler(srv.pid) as peak:
        elapsed, counts = asyncio.run(pool(total, concurrency,
                                           lambda: login_session(srv.port, BENCH_USER, ws.password), deadline))
    cpu = tree_cpu(srv.pid) - cpu
    if counts.get("ok", 0) != total:
        raise Failed(describe_counts(counts, total))
    return Measure(elapsed, cpu, note=f"peak RSS {peak.peak / 1e6:,.0f} MB (before {before / 1e6:,.0f} MB, "
                                      f"{peak.samples} samples)")


def measure_idle(ws: Workspace, label: str, total: int, deadline: float) -> Measure:
    srv = build(ws, label, passive="idle").start()
    try:
        base = tree_rss(srv.pid)
        got: list[tuple[int, int, int]] = []

        def sample() -> None:
            pids = tree_pids(srv.pid)
            got.append((tree_rss(srv.pid), tree_pss(pids), len(pids)))

        # 16 connecting at a time, as in the sessions row: vsftpd's listen backlog is 32, and memory is measured here
        counts = asyncio.run(hold_idle(srv.port, total, 16, deadline, sample))
        if counts.get("ok", 0) != total:
            raise Failed(describe_counts(counts, total))
        rss, pss, processes = got[0]
        return Measure(float(rss), note=f"{base / 1e6:.0f} MB before, {(rss - base) / total / 1e3:.1f} kB per "
                                        f"session; {processes:,} process{'es' if processes > 1 else ''}, "
                                        f"PSS {pss / 1e6:,.0f} MB")
    finally:
        srv.stop()


def measure_client(tool: str, direction: str, srv: Server, ws: Workspace, home: Path) -> Measure:
    url = f"ftp://anonymous:bench@{HOST}:{srv.port}/"
    local = ws.local / "client.bin"
    get, put = client_commands(tool, url, "anonymous", "bench", local, "big.bin", home)
    env = {**ftpkit_env(), "HOME": str(home)}
    size = ws.big.stat().st_size
    if direction == "put":
        shutil.copyfile(ws.big, local)
    uploaded = ws.served / f"up-{tool}.bin"
    try:
        os.sync()
        started = time.perf_counter()
        out = subprocess.run(get if direction == "get" else put, capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT, env=env, check=False)
        elapsed = time.perf_counter() - started
        if out.returncode != 0:
            raise Failed(f"{tool} {direction} exit {out.returncode}: {out.stderr.strip()[-300:]}")
        if sha(local if direction == "get" else uploaded) != ws.digest:
            raise Failed(f"{tool} {direction}: the copy differs")
        return Measure(size / elapsed / 1e6)
    finally:
        local.unlink(missing_ok=True)
        uploaded.unlink(missing_ok=True)


def describe_counts(counts: dict[str, int], total: int) -> str:
    bad = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k != "ok")
    return f"{counts.get('ok', 0)} of {total} ok ({bad})"


# --- rows ----------------------------------------------------------------------------------------------------------

@dataclass
class Row:
    key: str
    title: str
    table: str  # "servers", "ftps", "client"
    participants: tuple[str, ...]  # anchors first, ftpkit last
    unit: str  # MB/s, s, MB
    higher_is_better: bool
    once: bool = False  # memory rows: one fresh server each, measured once
    results: dict[str, list[Measure]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def best(self, who: str) -> Measure | None:
        got = self.results.get(who) or []
        if not got or self.failures.get(who):
            return None
        pick = max if self.higher_is_better else min
        return pick(got, key=lambda m: m.value)

    def ratio(self) -> tuple[float | None, str]:
        mine = self.best(self.participants[-1])
        anchors = [(who, self.best(who)) for who in self.participants[:-1]]
        done = [(who, m) for who, m in anchors if m is not None]
        if mine is None or not done:
            return None, ""
        if self.higher_is_better:
            who, best = max(done, key=lambda d: d[1].value)
            return mine.value / best.value, who
        who, best = min(done, key=lambda d: d[1].value)
        return best.value / mine.value, who

    def paired_ratio(self) -> tuple[float | None, int, int]:
        """The median over the rounds of each round's ftpkit / best anchor of that round, with the rounds where
        ftpkit was ahead and the rounds compared: the rounds are interleaved, so within one the machine was the
        same for all; a best-of figure takes each participant's luckiest round. Rounds count where every anchor
        that never failed has a figure."""
        mine = self.results.get(self.participants[-1]) or []
        anchors = [self.results.get(who) or [] for who in self.participants[:-1] if not self.failures.get(who)]
        anchors = [got for got in anchors if got]
        if self.failures.get(self.participants[-1]) or not mine or not anchors:
            return None, 0, 0
        ratios = []
        for i, m in enumerate(mine):
            same_round = [got[i].value for got in anchors if i < len(got)]
            if len(same_round) != len(anchors):
                continue
            ratios.append(m.value / max(same_round) if self.higher_is_better else min(same_round) / m.value)
        if not ratios:
            return None, 0, 0
        return statistics.median(ratios), sum(r > 1 for r in ratios), len(ratios)


@dataclass
class Plan:
    size: int
    sessions: int
    burst: int
    logins: int
    login_concurrency: int
    idle_small: int
    idle_large: int
    deadline: float


def make_rows(plan: Plan) -> dict[str, list[Row]]:
    size = f"{plan.size >> 20} MiB" if plan.size < 1 << 30 else f"{plan.size >> 30} GiB"
    servers = ("vsftpd", "pyftpdlib", "ftpkit")
    return {
        "retr": [Row("retr", f"RETR {size} (`curl -o /dev/null`), MB/s", "servers", servers, "MB/s", True)],
        "stor": [Row("stor", f"STOR {size} (`curl -T`), MB/s", "servers", servers, "MB/s", True)],
        "sessions16": [Row("sessions16", f"{plan.sessions} sessions x (connect, login, PASV, RETR 1 MiB, QUIT), "
                           "16 connecting at once", "servers", servers, "s", False)],
        "sessions200": [Row("sessions200", f"{plan.burst} such sessions connecting at once", "servers", servers,
                            "s", False)],
        "logins": [Row("logins", f"{plan.logins} logins of one password user, {plan.login_concurrency} at once",
                       "servers", ("vsftpd", "pyftpdlib-crypt", "ftpkit"), "s", False)],
        "idle1k": [Row("idle1k", f"RSS with {plan.idle_small:,} idle logged-in sessions, MB", "servers", servers,
                       "MB", False, once=True)],
        "idle10k": [Row("idle10k", f"RSS with {plan.idle_large:,} idle logged-in sessions, MB", "servers", servers,
                        "MB", False, once=True)],
        "ftps-retr": [Row("ftps-retr", f"FTPS RETR {size} (PROT P, {CIPHER}), MB/s", "ftps",
                          ("vsftpd-tls", "ftpkit-tls"), "MB/s", True)],
        "ftps-stor": [Row("ftps-stor", f"FTPS STOR {size} (PROT P, {CIPHER}), MB/s", "ftps",
                          ("vsftpd-tls", "ftpkit-tls"), "MB/s", True)],
        "client": [Row("client-get", f"download {size} (whole command), MB/s", "client", ("curl", "lftp", "ftpkit"),
                       "MB/s", True),
                   Row("client-put", f"upload {size} (whole command), MB/s", "client", ("curl", "lftp", "ftpkit"),
                       "MB/s", True)],
    }


def servers_for(row: Row) -> list[str]:
    if row.table == "client":
        return ["ftpkit-client"]
    if row.once:
        return []
    return list(row.participants)


class Servers(dict[str, Server]):
    """The running servers by label; one that did not start is a Failed measurement, not a KeyError."""

    def __missing__(self, label: str) -> Server:
        raise Failed(f"{label} is not running")


def run_one(row: Row, who: str, servers: dict[str, Server], ws: Workspace, plan: Plan, home: Path) -> Measure:
    if row.key in ("retr", "ftps-retr"):
        return measure_retr(servers[who], ws, tls=row.table == "ftps")
    if row.key in ("stor", "ftps-stor"):
        return measure_stor(servers[who], ws, tls=row.table == "ftps")
    if row.key == "sessions16":
        return measure_sessions(servers[who], ws, plan.sessions, 16, plan.deadline)
    if row.key == "sessions200":
        return measure_sessions(servers[who], ws, plan.burst, plan.burst, plan.deadline)
    if row.key == "logins":
        return measure_logins(servers[who], ws, plan.logins, plan.login_concurrency, plan.deadline)
    if row.key in ("idle1k", "idle10k"):
        total = plan.idle_small if row.key == "idle1k" else plan.idle_large
        return measure_idle(ws, who, total, max(120.0, total / 50))
    if row.table == "client":
        return measure_client(who, row.key.split("-")[1], servers["ftpkit-client"], ws, home)
    raise ValueError(row.key)


# Rows that write a whole file into the tmpfs. On these VMs the first such transfer after other work runs at a
# quarter to a half of the speed of the next one, for every server and client alike (curl -T of 1 GiB into
# pyftpdlib, three in a row: 338, 1,139, 1,301 MB/s; into ftpkit 387, 1,302, 1,718): in each round the row's first
# participant moves the file once more, unmeasured, before the measured ones.
WARMED = ("stor", "ftps-stor", "client-get", "client-put")


def warm_up(row: Row, who: str, servers: dict[str, Server], ws: Workspace, plan: Plan, home: Path) -> None:
    try:
        got = run_one(row, who, servers, ws, plan, home)
    except Exception as exc:  # the measured transfer records what fails
        print(f"  {row.key:12} {who:16} warm-up FAILED: {exc}", flush=True)
        return
    print(f"  {row.key:12} {who:16} warm-up {got.value:,.2f} {row.unit} (not counted)", flush=True)


def measure(row: Row, who: str, servers: dict[str, Server], ws: Workspace, plan: Plan, home: Path) -> None:
    if row.key == "idle10k" and who == "vsftpd":
        row.skipped[who] = f"not run: vsftpd forks two processes per session ({2 * plan.idle_large:,} here)"
        return
    try:
        got = run_one(row, who, servers, ws, plan, home)
    except Exception as exc:  # recorded, and the run goes on
        row.failures.setdefault(who, []).append(str(exc) if isinstance(exc, Failed) else f"{type(exc).__name__}: {exc}")
        print(f"  {row.key:12} {who:16} FAILED: {exc}", flush=True)
        return
    row.results.setdefault(who, []).append(got)
    cpu = f" (server CPU {got.server_cpu:.2f} s)" if got.server_cpu is not None else ""
    shown = f"{got.value / 1e6:,.0f}" if row.unit == "MB" else f"{got.value:,.2f}"
    print(f"  {row.key:12} {who:16} {shown} {row.unit}{cpu} {got.note}", flush=True)


# --- profiling -----------------------------------------------------------------------------------------------------

def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def recording(pid: int, out: Path) -> Iterator[None]:
    exe = py_spy()
    if exe is None:
        raise Failed("py-spy is not installed (pip install py-spy)")
    log = out.with_suffix(".log")
    with log.open("wb") as fh:
        proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate",
                                 str(PROFILE_RATE), "--function", "--threads", "--idle", "--nonblocking"],
                                stdout=fh, stderr=fh)
    for _ in range(100):  # until py-spy says it samples (bounded: 10 s)
        if b"Sampling process" in log.read_bytes() or proc.poll() is not None:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.1)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# Leaf frames that wait: the event loop's epoll, a worker on its queue, a thread on a condition.
WAITS = ("EpollSelector.select ", "_worker ", "Condition.wait ")


@dataclass
class Profile:
    threads: dict[str, tuple[int, int]]  # thread kind -> (samples, busy samples)
    leaves: list[tuple[str, int]]  # busy leaf frames (self time), most first
    busy: int  # busy samples ranked in leaves
    apart: int = 0  # busy samples set apart (the login's password check in a transfer row)


def self_times(raw: Path, top: int = 12, apart: str | None = None) -> Profile:
    """From py-spy's collapsed stacks (recorded with --idle): per thread kind all and busy samples, and the leaf
    frames of the busy ones (self time). A sample is waiting when its leaf is the loop's epoll or a worker's queue.
    Busy samples with a frame containing ``apart`` are only counted (``Profile.apart``)."""
    leaves: dict[str, int] = {}
    threads: dict[str, list[int]] = {}
    set_apart = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        name = frames[0].split(": ", 1)[-1]
        kind = "event loop" if name == "MainThread" else "worker threads"
        seen = threads.setdefault(kind, [0, 0])
        seen[0] += count
        leaf = frames[-1]
        if leaf.startswith(WAITS) or len(frames) == 1:  # waiting, or no Python frame in this (nonblocking) sample
            continue
        seen[1] += count
        if apart and any(apart in f for f in frames):
            set_apart += count
            continue
        leaves[leaf] = leaves.get(leaf, 0) + count
    ranked = sorted(leaves.items(), key=lambda kv: -kv[1])[:top]
    return Profile({k: (v[0], v[1]) for k, v in threads.items()}, ranked, sum(leaves.values()), set_apart)


PROFILED = ("retr", "stor", "sessions16", "sessions200", "logins", "ftps-retr", "ftps-stor")


def profile(rows: list[Row], keys: list[str], servers: dict[str, Server], ws: Workspace, plan: Plan, home: Path,
            outdir: Path, repeat: int = 3) -> list[str]:
    outdir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for row in rows:
        label = row.participants[-1]  # ftpkit or ftpkit-tls
        if row.key not in keys or label not in servers:
            continue
        raw = outdir / f"ftpkit-{row.key}.txt"
        srv = servers[label]
        print(f"server_bench: profiling {label} (PID {srv.pid}) under {row.key} x {repeat} -> {raw}", flush=True)
        try:
            with recording(srv.pid, raw):
                for _ in range(repeat):
                    run_one(row, label, servers, ws, plan, home)
        except (Failed, OSError, subprocess.SubprocessError) as exc:
            lines += ["", f"- {row.title}: profile failed: {exc}"]
            continue
        transfer = row.key in ("retr", "stor", "ftps-retr", "ftps-stor")
        got = self_times(raw, apart="Accounts.check" if transfer else None)
        if not got.busy:
            lines += ["", f"- {row.title}: py-spy recorded no busy samples"]
            continue
        loop_all, loop_busy = got.threads.get("event loop", (0, 0))
        work_busy = got.threads.get("worker threads", (0, 0))[1]
        share = (f"the event loop thread was busy in {100 * loop_busy / max(1, loop_all):.0f}% of its samples; "
                 f"the worker threads together in {work_busy:,} samples ({work_busy / max(1, loop_all):.2f} threads "
                 "busy on average)")
        if got.apart:
            share += f"; {got.apart:,} busy samples of the login's password check (not in curl's MB/s) left out"
        lines += ["", f"py-spy under **{row.title}** ({repeat} runs, {PROFILE_RATE} Hz, {got.busy:,} busy samples; "
                  f"{share}), top functions by self time (share of busy samples):", "",
                  "| self | function (file:line of its start) |", "|---|---|"]
        for frame, count in got.leaves:
            lines.append(f"| {100 * count / got.busy:.1f}% | `{shorten(frame)}` |")
        print("\n".join(lines[-len(got.leaves) - 5:]), flush=True)
    return lines


def shorten(frame: str) -> str:
    return re.sub(r"\(/\S*/(site-packages|lib/python3\.\d+|src)/", "(", frame).replace("|", "/")


# --- results -------------------------------------------------------------------------------------------------------

def version_of(argv: list[str], pattern: str = r"(\S+)") -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    except OSError:
        return "?"
    found = re.search(pattern, out.stdout + out.stderr)
    return found.group(1) if found else "?"


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else "?"
    commit = version_of(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=7"])
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return {
        "nproc": str(os.cpu_count()), "kernel": platform.release(), "cpu": cpu,
        "memory": f"{int(mem.group(1)) // (1 << 20)} GiB" if mem else "?",
        "python": platform.python_version(), "ftpkit": commit,
        "vsftpd": version_of(["dpkg-query", "-W", "-f", "${Version}", "vsftpd"], r"(\S+)"),
        "pyftpdlib": getattr(pyftpdlib, "__ver__", "?"),
        "curl": version_of(["curl", "--version"], r"curl (\S+)"),
        "curl_tls": version_of(["curl", "--version"], r"(OpenSSL/\S+)"),
        "lftp": version_of(["lftp", "--version"], r"Version (\S+)"),
        "python_tls": ssl.OPENSSL_VERSION,
        "argon2-cffi": version_of([sys.executable, "-c", "import importlib.metadata as m; "
                                   "print(m.version('argon2-cffi'))"]),
        "py-spy": version_of([py_spy() or "py-spy", "--version"], r"py-spy (\S+)"),
    }


def fmt(row: Row, who: str) -> str:
    if who in row.skipped:
        return "not run"
    if row.failures.get(who):
        first = row.failures[who][0]
        if "not done in" in first or "TimeoutError" in first or "not logged in" in first:
            return f"stalls ({first})"
        return f"fails ({first})"
    best = row.best(who)
    if best is None:
        return "—"
    if row.unit == "MB":
        text = f"{best.value / 1e6:,.0f} MB"
    elif row.unit == "s":
        text = f"{best.value:.2f} s"
    else:
        text = f"{best.value:,.0f}"
    if row.key == "logins" and best.note:
        text += f", {best.note.split(' (')[0]}"
    found = re.search(r"; ([\d,]+) process(?:es)?, PSS ([\d,]+ MB)", best.note)
    if row.once and found:
        processes = f", {found.group(1)} processes" if found.group(1) != "1" else ""
        text += f" (PSS {found.group(2)}{processes})"
    return text


def table(rows: list[Row], kind: str, heads: tuple[str, ...], names: tuple[str, ...]) -> list[str]:
    chosen = [r for r in rows if r.table == kind]
    if not chosen:
        return []
    out = [f"| measure | {' | '.join(heads)} | ftpkit / best | round by round: median, rounds ahead |",
           "|---" * (len(heads) + 3) + "|"]
    for row in chosen:
        cells = []
        for who in row.participants:
            cells.append(fmt(row, who))
        ratio, who = row.ratio()
        ratio_text = f"**{ratio:.2f}** (vs {names[row.participants.index(who)] if who else '?'})" if ratio else "—"
        paired, ahead, compared = row.paired_ratio()
        paired_text = f"{paired:.2f}, {ahead} of {compared}" if paired is not None and compared > 1 else "—"
        out.append(f"| {row.title} | {' | '.join(cells)} | {ratio_text} | {paired_text} |")
    return out


def rounds_detail(rows: list[Row]) -> list[str]:
    out = ["| row | who | every round | server CPU s | note (best round) |", "|---|---|---|---|---|"]
    for row in rows:
        for who in row.participants:
            got = row.results.get(who, [])
            if not got and not row.failures.get(who):
                continue
            values = ", ".join(f"{m.value / 1e6:,.0f}" if row.unit == "MB" else f"{m.value:,.2f}" for m in got)
            fails = "; ".join(row.failures.get(who, []))
            cpu = ", ".join(f"{m.server_cpu:.2f}" for m in got if m.server_cpu is not None)
            best = row.best(who)
            note = best.note if best else fails
            out.append(f"| {row.key} | {who} | {values or '—'} {row.unit} | {cpu or '—'} | {note} |")
    return out


def write_results(args: argparse.Namespace, rows: list[Row], plan: Plan, ws_info: dict[str, str],
                  info: dict[str, str], load: tuple[str, str]) -> None:
    size = f"{plan.size >> 20} MiB"
    lines = [
        f"## Server: ftpkit against vsftpd and pyftpdlib{(' — ' + args.note) if args.note else ''}",
        "",
        f"Measured by `python bench/server_bench.py{' --quick' if args.quick else ''} --rounds {args.rounds}"
        f"{' --rows ' + args.rows if args.rows else ''}` on {time.strftime('%Y-%m-%d')}: ftpkit `{info['ftpkit']}`, "
        f"{info['nproc']} cores ({info['cpu']}), {info['memory']}, Linux {info['kernel']}, Python {info['python']} "
        f"({info['python_tls']}), vsftpd {info['vsftpd']}, pyftpdlib {info['pyftpdlib']}, curl {info['curl']} "
        f"({info['curl_tls']}), lftp {info['lftp']}, argon2-cffi {info['argon2-cffi']}. Load average at start / end: "
        f"{load[0]} / {load[1]} (the one-minute average at the end counts the benchmark's own load; nothing else "
        "ran unless said here).",
        "",
        f"Everything on 127.0.0.1; files on a tmpfs; a {size} file of random bytes. Each figure is the best of "
        f"{args.rounds} interleaved rounds (server order rotating, `sync` before each measurement); memory rows once, "
        "each on a fresh server. Session caps raised to 20,000 on every server, logging at warning level (vsftpd: "
        "no xferlog, no protocol log), pyftpdlib's async server with ftpkit's listen backlog (1024; vsftpd's is "
        "fixed at 32). Transfers as the password user; the MB/s (10^6 bytes) of RETR/STOR is the transfer's own "
        "(curl's `time_total - time_pretransfer`, without the login). Session rows log in as anonymous and send "
        "TYPE I before PASV, as every client does. Password hashes: ftpkit `" + ws_info["argon2"] + "` (`ftpkit user "
        "add` defaults), vsftpd (PAM) and pyftpdlib (UnixAuthorizer, crypt(3)) the system user's `" +
        ws_info["shadow"] + "…`. Every transfer was checked: RETR by byte count and once per server by SHA-256 of a "
        "downloaded copy, STOR by SHA-256 on the tmpfs, each 1 MiB of the session rows compared with the file. "
        "Rows that write the whole file into the tmpfs (STOR, FTPS STOR, the clients' download and upload) start each "
        "round with one unmeasured transfer by that round's first participant: the first such transfer after other "
        "work runs at a quarter to a half of the speed of the next, on every server and client alike. "
        "Ratios: throughput ftpkit / best anchor, times and memory best anchor / ftpkit; above 1 ftpkit is ahead. "
        "`ftpkit / best` compares best rounds; `round by round` takes each round's ratio (ftpkit against the best "
        "anchor of that same round) and gives their median and the rounds where ftpkit was ahead: on a noisy machine "
        "the best-of figure follows one lucky round, the paired one does not.",
        "",
        *table(rows, "servers", ("vsftpd", "pyftpdlib", "ftpkit"), ("vsftpd", "pyftpdlib", "ftpkit")),
    ]
    ftps = table(rows, "ftps", ("vsftpd (ssl_enable)", "ftpkit (--tls required)"), ("vsftpd", "ftpkit"))
    if ftps:
        lines += ["", f"FTPS (AUTH TLS, PROT P, TLS 1.2, {CIPHER} on both: {ws_info.get('tls', '?')}):", "", *ftps]
    clients = table(rows, "client", ("curl", "lftp", "ftpkit get/put"), ("curl", "lftp", "ftpkit"))
    if clients:
        lines += ["", "Clients against the same `ftpkit serve` (anonymous, write allowed; process start to exit, "
                  "every copy checked by SHA-256):", "", *clients]
    lines += ["", "<details><summary>Every round</summary>", "", *rounds_detail(rows), "", "</details>"]
    write_section(args.section, lines)


def write_profile(args: argparse.Namespace, info: dict[str, str], load: tuple[str, str], lines: list[str]) -> None:
    head = [f"### Where the time goes: py-spy on ftpkit{(' — ' + args.note) if args.note else ''}", "",
            f"Recorded by `python bench/server_bench.py{' --quick' if args.quick else ''} --profile DIR --profile-rows "
            f"{args.profile_rows}{' --profile-only' if args.profile_only else ''}` on {time.strftime('%Y-%m-%d')} "
            f"(ftpkit `{info['ftpkit']}`, py-spy {info['py-spy']}, load average {load[0]} / {load[1]}): `py-spy record "
            f"--idle --threads --function --nonblocking --rate {PROFILE_RATE}` on the server while the row runs three "
            "times, outside the measured rounds. Waiting samples (the event loop in epoll, a worker thread on its "
            "queue) are counted apart; the rest are busy samples, and the tables rank their innermost Python frame "
            "(self time: time in C code called from a function, such as a socket call, counts for that function)."]
    write_section(f"{args.section}-profile", head + lines)


# --- main ----------------------------------------------------------------------------------------------------------

ROW_KEYS = ("retr", "stor", "sessions16", "sessions200", "logins", "idle1k", "idle10k", "ftps-retr", "ftps-stor",
            "client")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each figure is the best (default 3)")
    parser.add_argument("--rows", default="", help=f"comma-separated, of: {', '.join(ROW_KEYS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="100 MiB files and smaller counts, for development")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="also record ftpkit with py-spy, after the rounds")
    parser.add_argument("--profile-rows", default="sessions16,stor",
                        help=f"rows to profile with --profile, of: {', '.join(PROFILED)} (default sessions16,stor)")
    parser.add_argument("--profile-only", action="store_true", help="no measured rounds: only the profiles "
                        "(written to the SECTION-profile section)")
    parser.add_argument("--section", default="server", help="section of bench/results.md to write (default server)")
    parser.add_argument("--note", default="", help="words for the section's title, e.g. 'before: main at abc1234'")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args()
    keys = [k.strip() for k in args.rows.split(",") if k.strip()] or list(ROW_KEYS)
    unknown = [k for k in keys if k not in ROW_KEYS]
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; allowed: {', '.join(ROW_KEYS)}")
    profile_keys = [k.strip() for k in args.profile_rows.split(",") if k.strip()]
    compile_ftpkit()
    if args.profile_only and not args.profile:
        parser.error("--profile-only needs --profile DIR")
    if any(k not in PROFILED for k in profile_keys):
        parser.error(f"--profile-rows: allowed: {', '.join(PROFILED)}")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds: 1 to 20")
    if os.geteuid() != 0:
        print("server_bench: needs root (tmpfs, a system user, vsftpd)", file=sys.stderr)
        return 2
    missing = [t for t in ("curl", "lftp", "vsftpd", "openssl", "useradd", "chpasswd", "userdel", "mount")
               if shutil.which(t) is None]
    if missing:
        print(f"server_bench: not installed: {', '.join(missing)} (run ./run test as root first)", file=sys.stderr)
        return 2
    plan = (Plan(100 << 20, 100, 50, 40, 10, 200, 1000, 20.0) if args.quick
            else Plan(1 << 30, 500, 200, 200, 50, 1000, 10000, 60.0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that every finally below runs
    raise_nofile()
    row_groups = make_rows(plan)
    rows = [r for k in keys for r in row_groups[k]]
    load_start = f"{os.getloadavg()[0]:.1f}"
    servers = Servers()
    profile_lines: list[str] = []
    ws_info: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        ws = prepare(stack, plan.size)
        ws_info = {"argon2": ws.argon2_hash, "shadow": "$".join(ws.shadow_hash.split("$")[:3]) + "$"}
        print(f"server_bench: hashes: ftpkit {ws_info['argon2']}, system user {ws_info['shadow']}", flush=True)
        home = ws.conf / "home"
        home.mkdir()
        wanted = ([r.participants[-1] for r in rows if r.key in profile_keys] if args.profile_only
                  else [s for r in rows for s in servers_for(r)])
        for label in dict.fromkeys(wanted):
            srv = build(ws, label)
            stack.callback(srv.stop)
            try:
                srv.start()
            except ServerStartError as exc:
                print(f"server_bench: {label} did not start: {exc}", flush=True)
                continue
            servers[label] = srv
            print(f"server_bench: {label} on port {srv.port} (PID {srv.pid})", flush=True)
        for label in ("ftpkit", "vsftpd", "pyftpdlib", "ftpkit-tls", "vsftpd-tls"):
            if label in servers and any(r.key in ("retr", "ftps-retr") for r in rows) and not args.profile_only:
                try:
                    cipher = check_download(servers[label], ws, tls=label.endswith("-tls"))
                    print(f"server_bench: {label}: a downloaded copy is byte-exact {cipher}", flush=True)
                    if cipher:
                        ws_info["tls"] = f"curl negotiated {cipher} with both"
                except Failed as exc:
                    for r in rows:
                        if r.key in ("retr", "ftps-retr") and label in r.participants:
                            r.failures.setdefault(label, []).append(f"byte-exact check: {exc}")
                    print(f"server_bench: {label}: FAILED the byte-exact check: {exc}", flush=True)
        for round_ in range(0 if args.profile_only else args.rounds):
            print(f"server_bench: round {round_ + 1} of {args.rounds}", flush=True)
            for row in rows:
                if row.once and round_ > 0:
                    continue
                order = list(row.participants)
                shift = round_ % len(order)
                order = order[shift:] + order[:shift]
                if row.key in WARMED:
                    warm_up(row, order[0], servers, ws, plan, home)
                for who in order:
                    measure(row, who, servers, ws, plan, home)
        if args.profile:
            profile_lines = profile(rows, profile_keys, servers, ws, plan, home, args.profile)
            print(f"server_bench: py-spy's raw stacks (flamegraph.pl / speedscope input) are in {args.profile}")
        for srv in servers.values():
            srv.stop()
    load_end = f"{os.getloadavg()[0]:.1f}"
    print()
    for row in rows:
        ratio, who = row.ratio()
        cells = "; ".join(f"{w} {fmt(row, w)}" for w in row.participants)
        paired, ahead, compared = row.paired_ratio()
        by_round = f"; round by round: median {paired:.2f}, ahead in {ahead} of {compared}" if paired else ""
        print(f"{row.title}: {cells}; ftpkit / best: {f'{ratio:.2f} (vs {who})' if ratio else '—'}{by_round}")
    if not args.no_write:
        info = machine()
        if not args.profile_only:
            write_results(args, rows, plan, ws_info, info, (load_start, load_end))
            print(f"server_bench: wrote the {args.section!r} section of {HERE / 'results.md'}")
        if profile_lines:
            write_profile(args, info, (load_start, load_end), profile_lines)
            print(f"server_bench: wrote the {args.section + '-profile'!r} section of {HERE / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
