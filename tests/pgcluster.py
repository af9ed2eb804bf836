"""A throwaway PostgreSQL cluster for tests: Debian's server binaries (``/usr/lib/postgresql/N/bin``), a data folder
under /tmp, a unix socket in that folder and a loopback TCP port with password (SCRAM) authentication.

    cluster = PgCluster.create()        # initdb (as an unprivileged user when we are root), not started
    cluster.start(); cluster.url        # postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres
    cluster.stop(); cluster.remove()

Stopping is ``pg_ctl stop -m fast`` with its data folder, then a check that the postmaster's PID (from
``postmaster.pid``) is gone. Missing binaries skip the test (a failure with CI=true), naming what to install.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import IN_CI, free_port

PG_USER = "postgres"
RUN_AS = "nobody"  # initdb and postgres refuse to run as root


def server_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb, pg_ctl and postgres (Debian's layout)."""
    found = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")) and path.parent.name.isdigit():
            found.append((int(path.parent.name), path))
    return max(found)[1] if found else None


def require_server() -> Path:
    path = server_bin_dir()
    if path is None:
        message = ("PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/N/bin) are not installed: "
                   "apt-get install postgresql (./run test as root does it)")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class PgCluster:
    bindir: Path
    folder: Path  # 0755, ours; data/ and the socket inside belong to the server's user
    password: str
    port: int
    uid: int | None  # the server's user when we are root; None: ourselves

    @classmethod
    def create(cls) -> PgCluster:
        bindir = require_server()
        folder = Path(tempfile.mkdtemp(prefix="ftpkit-pg-"))
        folder.chmod(0o755)
        uid = pwd.getpwnam(RUN_AS).pw_uid if os.geteuid() == 0 else None
        cluster = cls(bindir, folder, secrets.token_hex(12), free_port(), uid)
        (folder / "data").mkdir(mode=0o700)
        pwfile = folder / "pwfile"
        pwfile.write_text(cluster.password + "\n")
        if uid is not None:
            for path in (folder / "data", pwfile):
                os.chown(path, uid, -1)
        try:
            cluster._run(["initdb", "-D", str(folder / "data"), "-U", PG_USER, "--auth-local=trust",
                          "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8",
                          "--no-sync"])
        except BaseException:
            cluster.remove()
            raise
        pwfile.unlink()
        return cluster

    def _argv(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        return ["runuser", "-u", RUN_AS, "--", *argv] if self.uid is not None else argv

    def _run(self, argv: list[str], timeout: float = 60) -> str:
        result = subprocess.run(self._argv(*argv), capture_output=True, text=True, timeout=timeout, cwd=self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                               f"{self.log_text()}")
        return result.stdout

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def socket_dir(self) -> Path:
        return self.data  # the server's user may write there; the path is short enough for a unix socket

    def url(self, database: str = "postgres", password: str | None = None, user: str = PG_USER) -> str:
        return f"postgresql://{user}:{self.password if password is None else password}@127.0.0.1:{self.port}/" \
               f"{database}"

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "data" / "server.log").read_text(errors="replace")[-4000:]
        return ""

    def start(self) -> PgCluster:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} -c fsync=off"
        self._run(["pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.data / "server.log"),
                   "-o", options])
        return self

    def pid(self) -> int | None:
        """The postmaster's PID from its pid file, while it runs."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if re.fullmatch(r"\d+", first) else None

    def stop(self, mode: str = "fast") -> None:
        pid = self.pid()
        if pid is None:
            return
        self._run(["pg_ctl", "stop", "-m", mode, "-w", "-t", "60", "-D", str(self.data)])
        deadline = time.monotonic() + 30  # pg_ctl -w waited already; this only proves the PID is gone
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            raise RuntimeError(f"postgres PID {pid} is still running after pg_ctl stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through the unix socket as the superuser (trust), for tests that look behind ftpkit's back."""
        return self._run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                          "-p", str(self.port), "-U", PG_USER, "-d", database, "-c", sql])

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
