"""Real captures for the analyzer tests: tcpdump around real servers (ftpkit, pyftpdlib, vsftpd) and clients (curl,
lftp) on loopback, optionally inside a private network namespace, and tshark's reading of the same file.

Everything started here is stopped by its PID; every wait is bounded and polls a condition (no sleeps as
synchronisation).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import require_peer

TIMEOUT = 60


def ns_prefix(ns: str | None) -> list[str]:
    return ["ip", "netns", "exec", ns] if ns else []


def run(args: list[str], ns: str | None = None, timeout: float = TIMEOUT, check: bool = False,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ns_prefix(ns) + args, capture_output=True, text=True, timeout=timeout, check=check,
                          env=env)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def wait_port(port: int, ns: str | None = None, deadline: float = 10.0) -> None:
    """Until a TCP connect to 127.0.0.1:port succeeds (polled every 10 ms, inside the namespace if any)."""
    code = (f"import socket,sys,time\nend=time.monotonic()+{deadline!r}\nwhile time.monotonic()<end:\n"
            f" try:\n  socket.create_connection(('127.0.0.1',{port}),0.5).close();sys.exit(0)\n"
            " except OSError: time.sleep(0.01)\nsys.exit(1)")
    if ns is None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.01)
        raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline} s")
    if run([sys.executable, "-c", code], ns, timeout=deadline + 5).returncode != 0:
        raise TimeoutError(f"nothing listens on 127.0.0.1:{port} in {ns} after {deadline} s")


MARKER_PORT = 9  # discard: nothing answers, the datagram only has to pass tcpdump


def _send_marker(marker: bytes, ns: str | None) -> None:
    code = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto({marker!r}, ('127.0.0.1', 9))"
    if ns is None:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(marker, ("127.0.0.1", MARKER_PORT))
    else:
        run([sys.executable, "-c", code], ns, check=True)


def _flush(path: Path, ns: str | None, deadline: float = 10.0) -> None:
    """Until everything captured so far is in the file (the last of a rotated set ``path``, ``path1``, ...): a
    marker datagram sent now has been written."""
    marker = f"ftpkit-capture-marker-{time.monotonic_ns()}".encode()
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        _send_marker(marker, ns)
        if any(marker in f.read_bytes() for f in path.parent.glob(path.name + "*")):
            return
        time.sleep(0.05)
    raise TimeoutError(f"tcpdump did not write the marker to {path} within {deadline} s")


@contextmanager
def tcpdump(path: Path, bpf: str = "tcp", ns: str | None = None, extra: tuple[str, ...] = ()) -> Iterator[Path]:
    """Capture on lo into ``path`` until the block ends: started once tcpdump says it is listening, stopped once
    a marker sent at the end is in the file. ``extra``: more tcpdump options (``-C 1``: a rotated set)."""
    binary = require_peer("tcpdump")
    bpf = f"({bpf}) or (udp and dst port {MARKER_PORT})"
    proc = subprocess.Popen([*ns_prefix(ns), binary, "-i", "lo", "-U", "--immediate-mode", "-B", "65536", "-n",
                             "-s", "0", *extra, "-w", str(path), bpf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    seen = []
    try:
        end = time.monotonic() + 15
        while True:
            try:
                line = lines.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"tcpdump did not start listening: {seen}") from None
            seen.append(line)
            if "listening on" in line:
                break
        yield path
        _flush(path, ns)
    finally:
        stop(proc, signal.SIGINT)
    while not lines.empty():
        seen.append(lines.get())
    dropped = [line for line in seen if "dropped by kernel" in line]
    assert dropped and dropped[0].startswith("0 "), f"tcpdump lost packets: {seen}"


@contextmanager
def netns() -> Iterator[str]:
    """A private network namespace with only ``lo`` up, deleted afterwards."""
    name = f"ftpkit-test-{os.getpid()}-{time.monotonic_ns() % 100000}"
    run(["ip", "netns", "add", name], check=True)
    try:
        run(["ip", "link", "set", "lo", "up"], name, check=True)
        yield name
    finally:
        run(["ip", "netns", "del", name])


@contextmanager
def ftpkit_server(root: Path, port: int, passive: str, *extra: str, ns: str | None = None) -> Iterator[int]:
    args = [sys.executable, "-m", "ftpkit", "serve", str(root), "--port", str(port), "--passive-ports", passive,
            "--login-fail-delay", "0", *extra]
    with _server(ns_prefix(ns) + args, port, ns) as p:
        yield p


@contextmanager
def pyftpdlib_server(root: Path, port: int, passive: str, ns: str | None = None) -> Iterator[int]:
    args = [sys.executable, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(port), "-d", str(root), "-r", passive]
    with _server(ns_prefix(ns) + args, port, ns) as p:
        yield p


@contextmanager
def vsftpd_server(tmp: Path, root: Path, port: int, passive: str, ns: str | None = None,
                  extra: tuple[str, ...] = ()) -> Iterator[int]:
    binary = require_peer("vsftpd")
    low, high = passive.split("-")
    conf = tmp / "vsftpd.conf"
    conf.write_text("\n".join([
        "listen=YES", "listen_ipv6=NO", "background=NO", "listen_address=127.0.0.1", f"listen_port={port}",
        "seccomp_sandbox=NO", "secure_chroot_dir=/var/run/vsftpd/empty", "anonymous_enable=YES",
        f"anon_root={root}", "no_anon_password=YES", "local_enable=NO", "pasv_enable=YES", "pasv_address=127.0.0.1",
        f"pasv_min_port={low}", f"pasv_max_port={high}", "port_enable=YES", "connect_from_port_20=YES",
        "ftp_data_port=20", "xferlog_enable=NO", *extra, "",
    ]))
    Path("/var/run/vsftpd/empty").mkdir(parents=True, exist_ok=True)
    log = tmp / "vsftpd.stderr"
    with log.open("w") as fd0, _server([*ns_prefix(ns), binary, str(conf)], port, ns, stdin=fd0) as p:  # fd 0: errors
        yield p


@contextmanager
def _server(args: list[str], port: int, ns: str | None, stdin: object = subprocess.DEVNULL) -> Iterator[int]:
    proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # type: ignore[arg-type]
    try:
        try:
            wait_port(port, ns)
        except TimeoutError:
            stop(proc)
            raise RuntimeError(f"{args[0]} did not start: {proc.stderr.read().decode(errors='replace')}") from None  # type: ignore[union-attr]
        yield port
    finally:
        stop(proc)


def curl(url: str, *args: str, ns: str | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return run([require_peer("curl"), "-sS", "--max-time", "20", *args, url], ns, timeout=timeout)


def lftp(url: str, script: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    return run([require_peer("lftp"), "-c", f"set net:max-retries 1; set net:timeout 10; open {url}; {script}"],
               ns, env=env)


def python(code: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    """Python code in the namespace, with the tests folder on the path (for ``rawftp``)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    return run([sys.executable, "-c", code], ns, env=env)


# --- tshark -----------------------------------------------------------------------------------------------------

TSHARK_FIELDS = ["tcp.srcport", "tcp.dstport", "ftp.request.command", "ftp.response.code", "ftp.passive.port",
                 "ftp.active.port", "ftp.eprt.port", "ftp.epsv.port"]


def tshark_view(path: Path, server_ports: set[int]) -> dict[int, dict[str, list]]:
    """Per client port: the commands and reply codes in order, and the announced ports, as tshark decodes them."""
    binary = require_peer("tshark")
    args = [binary, "-r", str(path), "-Y", "ftp", "-T", "fields"]
    for port in server_ports:
        args += ["-d", f"tcp.port=={port},ftp"]
    for field in TSHARK_FIELDS:
        args += ["-e", field]
    proc = run(args, check=True)
    out: dict[int, dict[str, list]] = {}
    for line in proc.stdout.splitlines():
        cols = line.split("\t")
        sport, dport = int(cols[0]), int(cols[1])
        client = dport if sport in server_ports else sport
        view = out.setdefault(client, {"events": [], "passive": [], "active": []})
        for command in filter(None, cols[2].split(",")):
            view["events"].append(command)
        for code in filter(None, cols[3].split(",")):
            view["events"].append(int(code))
        view["passive"] += [int(p) for col in (cols[4], cols[7]) for p in filter(None, col.split(","))]
        view["active"] += [int(p) for col in (cols[5], cols[6]) for p in filter(None, col.split(","))]
    for view in out.values():
        view["events"] = collapse(view["events"])
    return out


def analyzer_view(report) -> dict[int, dict[str, list]]:  # type: ignore[no-untyped-def]
    """The same view from the analyzer's report."""
    out: dict[int, dict[str, list]] = {}
    for s in report.sessions:
        if not s.log:
            continue  # a control connection without a single FTP line (refused, say): tshark shows no FTP either
        view = out.setdefault(s.client.port, {"events": [], "passive": [], "active": []})
        for e in s.log:
            if e.side == "client":
                view["events"].append(e.verb)
            elif e.side == "server":
                view["events"].append(e.code)
        for t in s.transfers:
            if t.announced is not None:
                view["active" if t.active else "passive"].append(t.announced.port)
        view["events"] = collapse(view["events"])
    return out


def collapse(events: list) -> list:
    """tshark shows a reply code per packet: a multi-line reply in two packets shows it twice, in one packet once.
    Both views drop a code that repeats the one just before it."""
    out: list = []
    for event in events:
        if not (isinstance(event, int) and out and out[-1] == event):
            out.append(event)
    return out
