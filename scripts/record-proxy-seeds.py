"""Record real PROXY protocol headers from HAProxy for the fuzz seed corpus (tests/fuzz/corpus/proxy_header/): a
listener on 127.0.0.1 that speaks just enough FTP (220, then 221) behind three HAProxy backends (``send-proxy``,
``send-proxy-v2``, ``send-proxy-v2`` with ``proxy-v2-options crc32c,unique-id``), each recording one health check
(``tcp-check connect default``: the header HAProxy sends on its checks) and one client connection from 127.0.0.2.
Loopback only; HAProxy runs in the foreground and is stopped by PID.

    .venv/bin/python scripts/record-proxy-seeds.py [OUT_DIR]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

VARIANTS = {
    "v1": "send-proxy",
    "v2": "send-proxy-v2",
    "v2-crc32c-uniqueid": "send-proxy-v2 proxy-v2-options crc32c,unique-id",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def record(listener: socket.socket, out: dict[str, bytes]) -> None:
    """The first bytes of a health check and of a client connection (the client sends USER, the check QUIT)."""
    while len(out) < 2:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            conn.sendall(b"220 ready\r\n")
            data = b""
            while not data.endswith((b"QUIT\r\n", b"USER anonymous\r\n")):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"221 bye\r\n")
        if data.endswith(b"QUIT\r\n"):  # the health check's QUIT
            out["check"] = data
        elif data.endswith(b"USER anonymous\r\n"):
            out["client"] = data
        # else: a readiness probe of this script, which sends nothing


def wait_listening(haproxy: subprocess.Popen[bytes], ports: list[int]) -> None:
    for _ in range(400):  # bounded: 20 s
        try:
            for port in ports:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            try:
                haproxy.wait(0.05)
            except subprocess.TimeoutExpired:
                continue
            raise SystemExit(f"haproxy exited with {haproxy.returncode}") from None
    raise SystemExit("haproxy does not listen")


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/proxy_header")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 10s", "    timeout server 10s"]
    listeners, fronts, recorded, threads = {}, {}, {}, []
    for name, options in VARIANTS.items():
        listeners[name] = socket.create_server(("127.0.0.1", 0))
        listeners[name].settimeout(20)
        fronts[name] = free_port()
        key = name.replace("-", "_")
        lines += [f"frontend f_{key}", f"    bind 127.0.0.1:{fronts[name]}", "    unique-id-format %{+X}o%ci:%cp",
                  f"    default_backend b_{key}", f"backend b_{key}", "    option tcp-check",
                  "    tcp-check connect default", "    tcp-check expect rstring ^220", "    tcp-check send QUIT\\r\\n",
                  "    tcp-check expect rstring ^221",
                  f"    server s 127.0.0.1:{listeners[name].getsockname()[1]} {options} check inter 300ms"]
        recorded[name] = {}
        threads.append(threading.Thread(target=record, args=(listeners[name], recorded[name])))
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "haproxy.cfg"
        config.write_text("\n".join(lines) + "\n")
        for thread in threads:
            thread.start()
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)])
        try:
            wait_listening(haproxy, list(fronts.values()))
            for name in VARIANTS:
                with socket.create_connection(("127.0.0.1", fronts[name]), timeout=10,
                                              source_address=("127.0.0.2", 0)) as client:
                    client.recv(100)
                    client.sendall(b"USER anonymous\r\n")
                    client.recv(100)
            for thread in threads:
                thread.join(30)
        finally:
            haproxy.terminate()
            haproxy.wait(10)
    for name, kinds in recorded.items():
        for kind, data in kinds.items():
            path = out_dir / f"haproxy-{name}-{kind}.bin"
            path.write_bytes(data)
            print(f"{path}: {data[:60]!r}")


if __name__ == "__main__":
    main()
