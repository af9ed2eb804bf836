"""The programs the lab runs inside the namespaces: a server (ftpkit, vsftpd, pyftpdlib) in the server namespace,
a client (ftpkit, curl, lftp) in the client namespace, each as one command line built from the scenario.

Every client downloads the same file (:data:`FILE_NAME`) to a path of its own; a transfer works when the command
exits 0 and the file arrived whole.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ftpkit.lab.scenarios import ACTIVE, PASSIVE, TRUSTING, Scenario
from ftpkit.lab.topology import SERVER_ADDRESS

FILE_NAME = "lab.txt"
FILE_BYTES = b"".join(b"ftpkit lab: line %05d of the file every client downloads\n" % i for i in range(600))

SERVERS = ("ftpkit", "vsftpd", "pyftpdlib")
CLIENTS = ("ftpkit", "curl", "lftp")

# Servers whose transfers run one after another: pyftpdlib's single-threaded loop now and then leaves a session
# unanswered (seen: PASS accepted and logged, the 230 never sent) when another session closes at the same moment.
SERIAL_SERVERS = frozenset({"pyftpdlib"})

# Clients that connect to the address in a 227 reply even when it differs from the server's, here: lftp's
# ftp:fix-pasv-address replaces only an address it takes for a private one, and 198.18.0.0/15 is not among those.
TRUSTS_227 = frozenset({"lftp"})


def server_missing(kind: str, tls: bool = False) -> str | None:
    """Why the server ``kind`` cannot run here (with FTPS when ``tls``), or ``None``."""
    if kind == "vsftpd" and not shutil.which("vsftpd"):
        return "vsftpd is not installed (apt-get install vsftpd)"
    if kind == "pyftpdlib" and importlib.util.find_spec("pyftpdlib") is None:
        return f"pyftpdlib is not installed for {sys.executable} (pip install pyftpdlib)"
    if kind == "pyftpdlib" and tls and importlib.util.find_spec("OpenSSL") is None:
        return f"pyftpdlib needs pyOpenSSL for FTPS, not installed for {sys.executable} (pip install pyopenssl)"
    return None


def client_missing(kind: str) -> str | None:
    if kind in ("curl", "lftp") and not shutil.which(kind):
        return f"{kind} is not installed (apt-get install {kind})"
    return None


def prepare_root(root: Path) -> None:
    """The served folder: root-owned, 0755, one world-readable file (vsftpd refuses a root writable by ``ftp``)."""
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    root.chmod(0o755)
    target = root / FILE_NAME
    target.write_bytes(FILE_BYTES)
    target.chmod(0o644)


@dataclass(frozen=True)
class TLSFiles:
    cert: Path  # self-signed, for the server's address: clients trust it with --ca-file
    key: Path


def make_certificate(workdir: Path, host: str) -> TLSFiles:
    """A self-signed certificate for ``host`` (by ``ftpkit cert``)."""
    files = TLSFiles(workdir / "cert.pem", workdir / "key.pem")
    done = subprocess.run([sys.executable, "-m", "ftpkit", "cert", "--host", host, "--cert", str(files.cert),
                           "--key", str(files.key), "--days", "1"], capture_output=True, text=True, timeout=60,
                          check=False)
    if done.returncode != 0 or not files.cert.is_file():
        raise RuntimeError(f"ftpkit cert failed: {(done.stderr or done.stdout).strip()}")
    return files


@dataclass(frozen=True)
class ServerCommand:
    argv: list[str]
    stdin_log: bool = False  # vsftpd writes its start-up errors to fd 0


def server_command(kind: str, scenario: Scenario, root: Path, workdir: Path, timeout: float,
                   tls: TLSFiles | None = None) -> ServerCommand:
    low, high = scenario.passive_ports
    masquerade = scenario.masquerade_address
    seconds = f"{timeout:g}"
    if kind == "ftpkit":
        argv = [sys.executable, "-m", "ftpkit", "serve", str(root), "--host", SERVER_ADDRESS, "--port", "21",
                "--passive-ports", f"{low}-{high}", "--data-accept-timeout", seconds,
                "--data-connect-timeout", seconds, "--login-fail-delay", "0", "--log-level", "debug",
                "--log-format", "json",  # the runner reads the server's own diagnosis from it
                "--defender-file", str(workdir / "bans.json")]
        if masquerade:
            argv += ["--masquerade-address", masquerade]
        if tls:
            argv += ["--tls", "required", "--tls-cert", str(tls.cert), "--tls-key", str(tls.key),
                     "--tls-required-for-anonymous"]
        return ServerCommand(argv)
    if kind == "vsftpd":
        conf = workdir / "vsftpd.conf"
        settings = {
            "listen": "YES", "listen_ipv6": "NO", "background": "NO", "listen_address": SERVER_ADDRESS,
            "listen_port": "21", "seccomp_sandbox": "NO", "secure_chroot_dir": "/var/run/vsftpd/empty",
            "anonymous_enable": "YES", "anon_root": str(root), "no_anon_password": "YES", "local_enable": "NO",
            "write_enable": "NO", "pasv_enable": "YES", "pasv_min_port": str(low), "pasv_max_port": str(high),
            "port_enable": "YES", "connect_from_port_20": "NO", "accept_timeout": str(max(1, round(timeout))),
            "connect_timeout": str(max(1, round(timeout))), "data_connection_timeout": "30",
            "xferlog_enable": "YES", "vsftpd_log_file": str(workdir / "vsftpd.log"), "log_ftp_protocol": "YES",
        }
        if masquerade:
            settings["pasv_address"] = masquerade
        if tls:
            settings.update({"ssl_enable": "YES", "rsa_cert_file": str(tls.cert), "rsa_private_key_file": str(tls.key),
                             "allow_anon_ssl": "YES", "force_anon_logins_ssl": "YES", "force_anon_data_ssl": "YES",
                             "ssl_ciphers": "HIGH"})
        conf.write_text("".join(f"{key}={value}\n" for key, value in settings.items()), encoding="ascii")
        return ServerCommand([shutil.which("vsftpd") or "vsftpd", str(conf)], stdin_log=True)
    if kind == "pyftpdlib":
        script = (
            "import sys\n"
            "from pyftpdlib.authorizers import DummyAuthorizer\n"
            "from pyftpdlib import handlers\n"
            "from pyftpdlib.servers import FTPServer\n"
            "root, low, high, timeout, masq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),"
            " sys.argv[5]\n"
            "auth = DummyAuthorizer(); auth.add_anonymous(root)\n"
            "handler = handlers.TLS_FTPHandler if len(sys.argv) > 6 else handlers.FTPHandler\n"
            "if len(sys.argv) > 6:\n"
            "    handler.certfile, handler.keyfile = sys.argv[6], sys.argv[7]\n"
            "    handler.tls_control_required = handler.tls_data_required = True\n"
            "handler.authorizer = auth; handler.passive_ports = range(low, high + 1)\n"
            "handler.active_dtp.timeout = handler.passive_dtp.timeout = timeout\n"
            "handler.masquerade_address = masq or None\n"
            f"FTPServer(('{SERVER_ADDRESS}', 21), handler).serve_forever(handle_exit=True)\n"
        )
        return ServerCommand([sys.executable, "-c", script, str(root), str(low), str(high), seconds,
                              masquerade or "", *([str(tls.cert), str(tls.key)] if tls else [])])
    raise ValueError(f"unknown server {kind!r}")


def client_command(kind: str, row: str, target: str, output: Path, timeout: float,
                   ca_file: Path | None = None) -> list[str]:
    """The command line that downloads :data:`FILE_NAME` from ``target`` to ``output`` in the mode of ``row``:
    the classic PORT and PASV commands (the ones that carry an address), with short timeouts; FTPS (AUTH TLS,
    required) trusting ``ca_file`` when given."""
    url = f"ftp://{target}/{FILE_NAME}"
    seconds = f"{timeout:g}"
    active = row == ACTIVE
    trusting = row == TRUSTING
    if kind == "ftpkit":
        argv = [sys.executable, "-m", "ftpkit", "get", url, "-o", str(output), "--active" if active else "--passive",
                "--no-epsv", "--no-eprt", "--timeout", seconds, "-v"]
        argv += ["--tls", "--ca-file", str(ca_file)] if ca_file else []
        return argv + (["--trust-pasv-address"] if trusting else [])
    if kind == "curl":
        argv = ["curl", "-sS", "-v", "--disable-epsv", "--disable-eprt", "--connect-timeout", seconds,
                "--max-time", f"{2 * timeout + 2:g}", "-o", str(output)]
        if active:
            argv += ["--ftp-port", "-"]
        if trusting:
            argv += ["--no-ftp-skip-pasv-ip"]
        if ca_file:
            argv += ["--ssl-reqd", "--cacert", str(ca_file)]
        return [*argv, url]
    if kind == "lftp":
        settings = [f"set net:timeout {seconds}", "set net:max-retries 1", "set net:reconnect-interval-base 1",
                    "set net:persist-retries 0", "set ftp:prefer-epsv no", "set ftp:use-feat no",
                    f"set ftp:passive-mode {'off' if active else 'on'}", "set xfer:clobber on"]
        if trusting:
            settings.append("set ftp:fix-pasv-address no")
        if ca_file:
            settings += ["set ftp:ssl-allow-anonymous true", "set ftp:ssl-force true", "set ftp:ssl-protect-data true",
                         f"set ssl:ca-file {ca_file}"]
        script = "; ".join(["debug 9", *settings, f"open ftp://{target}", f"get {FILE_NAME} -o {output}", "bye"])
        return ["lftp", "-c", script]
    raise ValueError(f"unknown client {kind!r}")


# --- reading a client's output ---------------------------------------------------------------------------------
CURL_EXIT = {7: "could not connect", 9: "access denied", 10: "the server's connection could not be accepted",
             12: "the server did not connect back in time", 13: "bad PASV reply", 14: "bad 227 reply",
             19: "RETR failed", 28: "timed out", 30: "PORT failed"}


def failure_line(kind: str, text: str, code: int | None) -> str:
    """The client's own one-line failure, with the server's last error reply when the line does not carry it.
    (curl's message after a data connection failure can be stale: its exit code is the reliable part.)"""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if kind == "ftpkit":
        found = [line for line in lines if line.startswith("ftpkit: ") and not line.startswith("ftpkit: note:")]
    elif kind == "curl":
        found = [line for line in lines if line.startswith("curl: (")]
    else:
        found = [line for line in lines if not line.startswith(("---", "<---", "**** "))]
    line = found[-1] if found else (lines[-1] if lines else "")
    if kind == "curl" and code in CURL_EXIT:
        line = f"curl exit {code} ({CURL_EXIT[code]}): {line}"
    marker = {"curl": "< ", "lftp": "<--- "}.get(kind)
    if marker:
        replies = [r[len(marker):] for r in lines if r.startswith(marker) and r[len(marker):len(marker) + 1] in "45"
                   and r[len(marker):len(marker) + 3].isdigit()]
        if replies and replies[-1] not in line:
            line += f"; last error reply: {replies[-1]}"
        elif kind == "lftp":  # a timeout: what lftp was doing when it gave up
            doing = [r[5:] for r in lines if r.startswith(("---- Connecting data socket", "---- Accepted data",
                                                            "**** "))]
            if doing:
                line += "; " + "; ".join(doing[-2:])
    return line


def expected(scenario: Scenario, row: str, client: str) -> bool:
    """Whether the transfer of ``row`` should work with ``client`` in ``scenario``."""
    if row == PASSIVE and client in TRUSTS_227 and TRUSTING in scenario.works:
        return scenario.works[TRUSTING]
    return scenario.works[row]
