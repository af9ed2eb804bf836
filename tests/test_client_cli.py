"""The one-shot client commands as a user runs them: verbose transcript, errors in one line, exit codes, URLs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import realservers
from conftest import IN_CI
from ftpkit.client import Client, ClientOptions, ReplyError
from ftpkit.client.url import URLError, parse_url
from scriptedftp import dropping_listener, scripted_server

FTPKIT = [sys.executable, "-m", "ftpkit"]


def ftpkit(*args: str, cwd=None, input_text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FTPKIT, *args], capture_output=True, text=True, cwd=cwd, timeout=60, input=input_text)


@pytest.mark.parametrize(("mode", "method"), [
    ([], "EPSV"), (["--no-epsv"], "PASV"), (["--active"], "EPRT"), (["--active", "--no-eprt"], "PORT")])
def test_verbose_shows_conversation_and_data_connection(server, tmp_path, mode, method):
    result = ftpkit("get", "-v", *mode, f"ftp://alice:secret@127.0.0.1:{server.port}/hello.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "--> USER alice" in err and "--> PASS ****" in err and "secret" not in err
    assert f"--> {method}" in err
    # one line per data connection: mode, announced address, the computed port, who connected to whom
    line = next(x for x in err.splitlines() if x.startswith("=== ") and "announced" in x)
    port = int(re.search(r"announced 127\.0\.0\.1:(\d+)", line).group(1))
    assert f"({port >> 8}*256+{port & 255} = {port})" in line
    assert ("this client connected" if method in ("EPSV", "PASV") else "the server connected") in line
    if method == "PASV":
        assert re.search(rf"<-- 227 Entering Passive Mode \(127,0,0,1,{port >> 8},{port & 255}\)", err)
    assert (tmp_path / "hello.txt").read_bytes() == b"hello\nworld\n"


def test_errors_are_one_line_with_exit_1(server, tmp_path):
    missing = ftpkit("get", f"ftp://127.0.0.1:{server.port}/missing.bin", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "ftpkit: RETR missing.bin failed: 550 /missing.bin: No such file or directory."
    assert not (tmp_path / "missing.bin").exists()  # no empty file left behind
    login = ftpkit("ls", f"ftp://alice:wrong@127.0.0.1:{server.port}/")
    assert login.returncode == 1 and login.stderr.strip().startswith("ftpkit: login failed: 530")
    refused = ftpkit("ls", "ftp://127.0.0.1:1/")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "ftpkit: control connection to 127.0.0.1:1 refused: nothing listens on port 1"
    for result in (missing, login, refused):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_pwd_reply_without_a_quoted_path_is_a_one_line_error():
    with scripted_server({"PWD": b"257 /home/joe is the current directory\r\n"}) as (port, _), \
            Client(ClientOptions(timeout=5.0)) as ftp:
        ftp.connect("127.0.0.1", port)
        ftp.login("joe", "x")
        with pytest.raises(ReplyError) as failed:
            ftp.pwd()
    assert str(failed.value) == ("PWD failed: 257 /home/joe is the current directory. The reply names no directory "
                                 "in quotes (RFC 959).")


def test_dropped_control_connection_is_a_timeout_not_a_refusal():
    with dropping_listener() as port:
        dropped = ftpkit("ls", "--timeout", "0.5", f"ftp://127.0.0.1:{port}/")
    assert dropped.returncode == 1
    assert dropped.stderr.strip() == (f"ftpkit: control connection to 127.0.0.1:{port} timed out after 0.5 s: a "
                                      "firewall drops it or the host is down")


def in_hosts_namespace(hosts: Path, *argv: str) -> subprocess.CompletedProcess:
    """``argv`` in a private mount namespace whose /etc/hosts is ``hosts``."""
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(hosts), *argv],
                          capture_output=True, text=True, timeout=60)


def test_a_name_whose_first_address_drops_the_connection(servers, tree, tmp_path):
    """The client, like the doctor, tries a host name's next address when one drops the connection (one helper)."""
    if not realservers.can_bind_mount():
        message = "a private mount namespace for /etc/hosts needs root and unshare"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 two.ftpkit.test\n127.0.0.2 two.ftpkit.test\n")
    order = in_hosts_namespace(hosts, sys.executable, "-c", "import socket; print(*dict.fromkeys(i[4][0] for i in "
                               "socket.getaddrinfo('two.ftpkit.test', 21, type=socket.SOCK_STREAM)))")
    first, second = order.stdout.split()  # the resolver's order of preference
    with dropping_listener(first) as port:
        srv = servers.start(tree, host=second, port=port, users=["alice:secret"])
        url = f"ftp://alice:secret@two.ftpkit.test:{srv.port}/"
        ls = in_hosts_namespace(hosts, *FTPKIT, "ls", "--timeout", "1", url)
        doctor = in_hosts_namespace(hosts, *FTPKIT, "doctor", "--json", "--timeout", "1", "--mode", "passive", url)
    assert ls.returncode == 0, ls.stderr
    assert "hello.txt" in ls.stdout.splitlines()
    assert ls.stderr.strip() == (f"ftpkit: note: control connection to {first}:{port}: no answer within 1 s; trying "
                                 f"{second}")
    control = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "control")
    assert control["status"] == "pass"
    assert control["sequence"] == [f"=== connect {first}:{port} -> timeout", f"=== connect {second}:{port} -> ok"]


def test_active_refused_names_data_connection_and_fallback_works(server, tmp_path):
    url = f"ftp://alice:secret@127.0.0.1:{server.port}/hello.txt"
    refused = ftpkit("get", "--active", "--active-address", "127.0.0.2", url, cwd=tmp_path)
    assert refused.returncode == 1
    line = refused.stderr.strip()
    assert line.startswith("ftpkit: data connection (active mode, PORT): the server refused PORT 127,0,0,2,")
    assert "server replied 501" in line and "Try --passive" in line
    ok = ftpkit("get", "--active", "--active-address", "127.0.0.2", "--fallback", url, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "retrying RETR in passive mode (--fallback)" in ok.stderr
    assert (tmp_path / "hello.txt").read_bytes() == b"hello\nworld\n"


def test_usage_errors_exit_2(tmp_path):
    for args in (["get", "gopher://x/y"], ["get", "ftp://host:99999/x"], ["get", "ftp://127.0.0.1/"],
                 ["get", "--encoding", "klingon", "ftp://127.0.0.1/x"], ["ls", "--active-ports", "9-x", "ftp://h/"]):
        result = ftpkit(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_put_ls_and_management(server, tmp_path):
    payload = os.urandom(300000)
    (tmp_path / "up load.bin").write_bytes(payload)
    base = f"ftp://alice:secret@127.0.0.1:{server.port}"
    assert ftpkit("put", str(tmp_path / "up load.bin"), f"{base}/sub/").returncode == 0
    assert (server.root / "sub" / "up load.bin").read_bytes() == payload
    listing = ftpkit("ls", f"{base}/sub/")
    assert listing.stdout.splitlines() == ["inner.txt", "up load.bin"]
    long_listing = ftpkit("ls", "-l", f"{base}/")
    assert any(line.startswith("d") and line.endswith(" フォルダ") for line in long_listing.stdout.splitlines())
    assert ftpkit("mkdir", f"{base}/新しい").returncode == 0
    assert ftpkit("mv", f"{base}/sub/up%20load.bin", "moved.bin").returncode == 0
    assert (server.root / "sub" / "moved.bin").exists()
    assert ftpkit("rm", f"{base}/sub/moved.bin").returncode == 0
    assert ftpkit("rmdir", f"{base}/新しい").returncode == 0
    assert sorted(p.name for p in (server.root / "sub").iterdir()) == ["inner.txt"]


def test_password_from_stdin_and_netrc(server, tmp_path):
    result = ftpkit("ls", "--password-stdin", f"ftp://alice@127.0.0.1:{server.port}/sub/", input_text="secret\n")
    assert result.stdout.splitlines() == ["inner.txt"], result.stderr
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password secret\n")
    netrc.chmod(0o600)
    result = ftpkit("ls", "-v", "--netrc-file", str(netrc), f"ftp://127.0.0.1:{server.port}/sub/")
    assert "--> USER alice" in result.stderr and result.stdout.splitlines() == ["inner.txt"]


def test_url_parsing():
    url = parse_url("ftp://us%40er:p%3Ass@example.org:2121/dir/file%20name.txt")
    assert (url.user, url.password, url.host, url.port, url.path) == (
        "us@er", "p:ss", "example.org", 2121, "dir/file name.txt")
    assert parse_url("ftp://[::1]/x").host == "::1"
    assert parse_url("ftps://h/").port == 990
    assert parse_url("h/p").path == "p"
    for bad in ("http://h/", "ftp://", "ftp://h:0x/"):
        with pytest.raises(URLError):
            parse_url(bad)


def test_mirror_in_parallel_sessions(server, tmp_path):
    for n in range(6):
        (server.root / "sub" / f"f{n}.bin").write_bytes(os.urandom(50000 + n))
    target = tmp_path / "copy"
    result = ftpkit("mirror", "--parallel", "3", "-v", f"ftp://alice:secret@127.0.0.1:{server.port}/sub", str(target))
    assert result.returncode == 0, result.stderr
    assert "mirror: 7 transferred" in result.stderr
    assert result.stderr.count("--> PASS ****") >= 3  # the listing session plus parallel workers
    for path in (server.root / "sub").iterdir():
        assert (target / path.name).read_bytes() == path.read_bytes()


def test_progress_bar_only_on_a_terminal(server, tmp_path):
    from test_client_shell import Terminal

    plain = ftpkit("get", f"ftp://127.0.0.1:{server.port}/random.bin", cwd=tmp_path)
    assert plain.returncode == 0 and plain.stderr == ""  # nothing decorative when not a terminal
    term = Terminal([sys.executable, "-m", "ftpkit", "get", "-o", "tty.bin",
                     f"ftp://127.0.0.1:{server.port}/random.bin"], str(tmp_path))
    screen = term.expect("1.0/1.0 MB")  # the bar: bytes done of total, then rate and time left
    assert "random.bin" in screen
    assert term.wait() == 0
    assert (tmp_path / "tty.bin").read_bytes() == (server.root / "random.bin").read_bytes()


@pytest.mark.parametrize("text", ["50100-50000", "9-x", "1-2", "²-3"])
def test_port_ranges_one_parser_one_error(tmp_path, text):
    from ftpkit.client.options import ClientOptions

    allowed = f"{text!r} is not low-high within 1024-65535"
    client = ftpkit("ls", "--active-ports", text, "ftp://127.0.0.1:1/", cwd=tmp_path)
    assert client.returncode == 2 and client.stderr.strip() == f"ftpkit ls: active_ports: {allowed} (see --help)"
    serve = ftpkit("serve", "--passive-ports", text, cwd=tmp_path)
    assert serve.returncode == 2 and serve.stderr.strip() == f"ftpkit serve: passive_ports: {allowed}"
    low, _, high = text.partition("-")
    if low.isdecimal() and high.isdecimal() and low.isascii():
        with pytest.raises(ValueError) as info:
            ClientOptions(active_ports=(int(low), int(high)))
        assert str(info.value) == f"active_ports: {allowed}"


def test_client_options_active_ports_normalised():
    from ftpkit.client.options import ClientOptions

    assert ClientOptions(active_ports=[40000, 40010]).active_ports == (40000, 40010)  # type: ignore[arg-type]
