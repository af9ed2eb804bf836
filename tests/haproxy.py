"""Real HAProxy in front of ftpkit nodes for tests: ``haproxy -db -f CONFIG`` in the foreground on loopback ports,
with a stats socket to see its servers' health, stopped by PID.

    with HAProxy(frontends={"ftp": ["node1 127.0.0.1:2121", "node2 127.0.0.1:2122"]}) as lb:
        lb.port("ftp")           # the frontend's port on 127.0.0.1
        lb.wait_up()             # every server passed its health check

Each server line gets ``send-proxy-v2 check`` and the FTP health check of the README's "Running several nodes"
section, taken from the README itself: a 220 greeting, QUIT, 221 (``tcp-check connect default`` makes the check
send the server line's PROXY header, v2 LOCAL; a bare ``tcp-check connect`` sends none).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import ROOT, free_port, require_peer

STOP_TIMEOUT = 10.0


def readme_config() -> str:
    """The HAProxy configuration of the README's "Running several nodes" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Running several nodes", 1)[1]
    return section.split("HAProxy (", 1)[1].split("```\n", 1)[1].split("```", 1)[0]


def readme_health_check() -> list[str]:
    """The health check lines of the README's backend (``option tcp-check`` and the ``tcp-check`` rules)."""
    lines = [line.split("#", 1)[0].rstrip() for line in readme_config().splitlines()]
    return [line for line in lines if line.strip().startswith(("option tcp-check", "tcp-check "))]


class HAProxy:
    def __init__(self, frontends: dict[str, list[str]], server_options: str = "send-proxy-v2",
                 check_interval_ms: int = 200, binds: dict[str, str] | None = None) -> None:
        """``binds``: a frontend's address other than 127.0.0.1."""
        self.binary = require_peer("haproxy")
        self.folder = Path(tempfile.mkdtemp(prefix="ftpkit-haproxy-"))
        self.socket_path = self.folder / "stats.sock"
        self.binds = binds or {}
        self.ports = {name: free_port() for name in frontends}
        lines = [
            "global",
            f"    stats socket {self.socket_path} level admin",
            "    maxconn 512",
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            "    timeout client 60s",
            "    timeout server 60s",
        ]
        for name, servers in frontends.items():
            lines += [
                f"frontend {name}",
                f"    bind {self.address(name)}:{self.ports[name]}",
                f"    default_backend {name}_nodes",
                f"backend {name}_nodes",
                "    balance roundrobin",
                *readme_health_check(),  # what the README tells operators, tested as it is written there
                *(f"    server {server} {server_options} check inter {check_interval_ms}ms" for server in servers),
            ]
        self.config = self.folder / "haproxy.cfg"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = self.folder / "haproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def port(self, frontend: str) -> int:
        return self.ports[frontend]

    def address(self, frontend: str) -> str:
        return self.binds.get(frontend, "127.0.0.1")

    def start(self) -> HAProxy:
        check = subprocess.run([self.binary, "-c", "-f", str(self.config)], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c refused {self.config}:\n{check.stdout}{check.stderr}")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([self.binary, "-db", "-f", str(self.config)], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
        return out.decode()

    def states(self) -> dict[str, str]:
        """``{"backend/server": "UP L7OK" | "DOWN L7TOUT" | ...}`` (state, last check) from ``show stat``."""
        out = {}
        rows = self.command("show stat").splitlines()
        header = rows[0].lstrip("# ").split(",") if rows else []
        for row in rows[1:]:
            fields = dict(zip(header, row.split(","), strict=False))
            if fields.get("svname") not in (None, "FRONTEND", "BACKEND"):
                out[f"{fields['pxname']}/{fields['svname']}"] = f"{fields.get('status')} {fields.get('check_status')}"
        return out

    def wait_up(self, timeout: float = 30.0) -> None:
        """Until every server is UP and its last health check passed (servers start UP, before any check); fails
        fast if haproxy exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: dict[str, str] | str = "no stats socket yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}:\n{self.log_text()}")
            with contextlib.suppress(OSError):
                last = self.states()
                if last and all(state == "UP L7OK" for state in last.values()):
                    return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.05)  # the pause between polls, which also notices an exit at once
        raise RuntimeError(f"haproxy servers not all UP within {timeout:g} s: {last}\n{self.log_text()}")

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-4000:]
        return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)

    def remove(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()
        self.folder.rmdir()

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.remove()
