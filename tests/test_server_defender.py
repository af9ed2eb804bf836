"""The defender: per-source scores, bans that grow on repeat, an allow-list, bans that survive a restart and are
lifted from the command line. A fake clock drives the rules; real sessions drive the server."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ServerThread
from ftpkit.server.config import ConfigError, validate
from ftpkit.server.defender import Defender, DefenderSettings, read_bans, source_of
from rawftp import Raw

FTPKIT = [sys.executable, "-m", "ftpkit"]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()  # wall clock: bans are kept in wall-clock time

    def __call__(self) -> float:
        return self.now


def _defender(tmp_path: Path | None = None, **kw: object) -> tuple[Defender, Clock]:
    clock = Clock()
    settings = DefenderSettings(threshold=9, observation_time=60, ban_time=100, ban_increment=100,
                                state_file=(tmp_path / "bans.json") if tmp_path else None, **kw)  # type: ignore[arg-type]
    return Defender(settings, clock), clock


def test_scores_add_up_within_the_window_only() -> None:
    d, clock = _defender()
    assert d.record("203.0.113.5", "login_failed") is None  # 3
    assert d.record("203.0.113.5", "login_failed") is None  # 6
    clock.now += 61  # the first two fall out of the window
    assert d.record("203.0.113.5", "login_failed") is None  # 3
    assert d.record("203.0.113.5", "login_failed") is None  # 6
    ban = d.record("203.0.113.5", "limit_exceeded")  # 9: banned
    assert ban is not None and ban.until == clock.now + 100 and ban.count == 1
    assert d.banned("203.0.113.5") is ban
    assert d.banned("203.0.113.6") is None  # another source is not touched


def test_bans_expire_and_grow_on_repeat() -> None:
    d, clock = _defender()
    for _ in range(3):
        d.record("198.51.100.1", "login_failed")
    assert d.banned("198.51.100.1") is not None
    clock.now += 101
    assert d.banned("198.51.100.1") is None
    for _ in range(3):
        ban = d.record("198.51.100.1", "login_failed")
    assert ban is not None and ban.count == 2 and ban.until == clock.now + 200  # +100 %


def test_allow_list_is_never_banned() -> None:
    d, _ = _defender(allow=(ipaddress.ip_network("192.0.2.0/24"),))
    for _ in range(10):
        assert d.record("192.0.2.77", "login_failed") is None
    assert d.banned("192.0.2.77") is None


def test_an_ipv6_host_is_banned_by_its_64() -> None:
    assert source_of("2001:db8:1:2::5") == source_of("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    d, _ = _defender()
    for _ in range(3):
        d.record("2001:db8:1:2::5", "login_failed")
    assert d.banned("2001:db8:1:2:abcd::9") is not None


def test_bans_survive_a_restart_and_a_lift_in_the_file_is_noticed(tmp_path: Path) -> None:
    d, clock = _defender(tmp_path)
    for _ in range(3):
        d.record("203.0.113.9", "login_failed")
    again = Defender(d.settings, clock)  # a restarted server reads the file
    assert again.banned("203.0.113.9") is not None
    done = subprocess.run([*FTPKIT, "ban", "list", "--file", str(tmp_path / "bans.json")], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "203.0.113.9" in done.stdout, done.stderr
    done = subprocess.run([*FTPKIT, "ban", "lift", "203.0.113.9", "--file", str(tmp_path / "bans.json")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert again.banned("203.0.113.9") is None  # noticed without a restart
    done = subprocess.run([*FTPKIT, "ban", "lift", "203.0.113.9", "--file", str(tmp_path / "bans.json")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "not banned" in done.stderr


def test_a_guesser_opening_new_sessions_is_banned(servers: ServerThread, tree: Path, tmp_path: Path) -> None:
    """Per session the guesser gets 3 tries; the defender counts across sessions and bans the source."""
    bans = tmp_path / "bans.json"
    running = servers.start(tree, users=["alice:secret"], defender_allow=[], defender_threshold=9,
                            defender_file=str(bans), max_login_failures=2)
    outcomes = []
    for _ in range(3):
        c = Raw(running.host, running.port)
        if c.greeting.code != 220:
            outcomes.append(c.greeting.code)
            break
        for _ in range(2):
            assert c.cmd("USER alice").code == 331
            reply = c.cmd("PASS guess")
            outcomes.append(reply.code)
            if reply.code == 421:
                break
    assert outcomes[:2] == [530, 421] and 421 in outcomes[2:]
    c = Raw(running.host, running.port)
    assert c.greeting.code == 421 and "banned" in c.greeting.text  # even the right password cannot get in now
    assert "127.0.0.1" in read_bans(bans)
    # lifted from the command line: the running server lets the source in again at once
    done = subprocess.run([*FTPKIT, "ban", "lift", "127.0.0.1", "--file", str(bans)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    c = Raw(running.host, running.port)
    assert c.greeting.code == 220
    c.login()


def test_loopback_is_allowed_by_default(servers: ServerThread, tree: Path) -> None:
    running = servers.start(tree, users=["alice:secret"], defender_threshold=3, max_login_failures=10)
    c = Raw(running.host, running.port)
    for _ in range(5):
        assert c.cmd("USER alice").code == 331
        assert c.cmd("PASS wrong").code == 530
    assert Raw(running.host, running.port).greeting.code == 220


def test_a_configured_score_changes_when_the_server_bans(servers: ServerThread, tree: Path, tmp_path: Path) -> None:
    """defender_score_login_failed 15 with threshold 15: the first wrong password bans (3 by default: not yet);
    a score of 0 never counts, however many wrong passwords."""
    common = {"users": ["alice:secret"], "defender_allow": [], "defender_threshold": 15, "max_login_failures": 10}
    default = servers.start(tree, defender_file=str(tmp_path / "default.json"), **common)
    c = Raw(default.host, default.port)
    assert c.cmd("USER alice").code == 331
    assert c.cmd("PASS guess").code == 530  # 3 of 15
    c.close()
    c = Raw(default.host, default.port)
    assert c.greeting.code == 220
    c.close()

    strict = servers.start(tree, defender_file=str(tmp_path / "strict.json"), defender_score_login_failed=15,
                           **common)
    c = Raw(strict.host, strict.port)
    assert c.cmd("USER alice").code == 331
    reply = c.cmd("PASS guess")
    assert reply.code == 421 and "banned" in reply.text, reply
    c.close()
    c = Raw(strict.host, strict.port)
    assert c.greeting.code == 421 and "banned" in c.greeting.text
    c.close()

    lenient = servers.start(tree, defender_file=str(tmp_path / "lenient.json"), defender_score_login_failed=0,
                            **{**common, "defender_threshold": 1})
    c = Raw(lenient.host, lenient.port)
    for _ in range(5):
        assert c.cmd("USER alice").code == 331
        assert c.cmd("PASS guess").code == 530
    c.close()
    c = Raw(lenient.host, lenient.port)
    assert c.greeting.code == 220
    c.close()
    assert read_bans(tmp_path / "lenient.json") == {}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("defender_score_login_failed", 1001, "1001 is not within 0-1000"),
    ("defender_score_tls_failed", -1, "-1 is not within 0-1000"),
    ("defender_score_protocol_error", "lots", "'lots' is not a whole number from 0 to 1000"),
])
def test_a_bad_score_is_one_line_naming_the_field(tmp_path: Path, name: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate({"root": str(tmp_path), name: value})
    assert str(raised.value) == f"{name}: {message}"


def test_a_bad_score_in_the_config_file_stops_serve(tmp_path: Path) -> None:
    cfg = tmp_path / "ftpkit.toml"
    cfg.write_text(f'root = "{tmp_path}"\ndefender_score_limit_exceeded = 5000\n')
    done = subprocess.run([*FTPKIT, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr == (
        "ftpkit serve: defender_score_limit_exceeded: 5000 is not within 0-1000\n"), done.stderr


def _banned(host: str, port: int) -> bool:
    """A new connection is refused as banned (421 naming the ban) rather than greeted."""
    c = Raw(host, port)
    try:
        return c.greeting.code == 421 and "banned" in c.greeting.text
    finally:
        c.close()


def test_protocol_errors_ban_the_source(servers: ServerThread, tree: Path, tmp_path: Path) -> None:
    """Malformed command lines (not a verb, too long) score 1 each: five of them reach threshold 5. Unknown verbs
    are answered 502 and are not protocol errors."""
    bans = tmp_path / "bans.json"
    running = servers.start(tree, users=["alice:secret"], defender_allow=[], defender_threshold=5,
                            defender_file=str(bans), max_line=64)
    c = Raw(running.host, running.port)
    for i in range(10):
        assert c.cmd(f"NOSUCH{i}").code == 502
    assert not _banned(running.host, running.port)
    for line in (b"!!!\r\n", b"123 go\r\n", b"\xe6\x97\xa5\xe6\x9c\xac\r\n", b"TOOLONGVERB x\r\n"):
        assert c.cmd(line).code == 500
    assert not _banned(running.host, running.port)  # 4 of 5
    assert c.cmd(b"NOOP " + b"x" * 100 + b"\r\n").code == 500  # a line longer than max_line: the fifth
    assert _banned(running.host, running.port)
    assert "127.0.0.1" in read_bans(bans) and "protocol_error" in read_bans(bans)["127.0.0.1"].reason
    c.close()


@pytest.mark.parametrize(("limit", "refusal"), [("max_sessions_per_ip", "Too many sessions from your address"),
                                               ("max_prelogin_per_ip", "Too many connections not logged in")])
def test_limit_hits_ban_the_source(servers: ServerThread, tree: Path, tmp_path: Path, limit: str,
                                   refusal: str) -> None:
    """A client that keeps opening connections beyond a per-address limit: each refusal scores 3, the second
    reaches threshold 6 and the source's next connection is refused as banned, not as over the limit."""
    bans = tmp_path / "bans.json"
    limits = {"max_sessions_per_ip": 10, "max_prelogin_per_ip": 10, limit: 1}
    running = servers.start(tree, users=["alice:secret"], defender_allow=[], defender_threshold=6,
                            defender_file=str(bans), **limits)
    holder = Raw(running.host, running.port)  # holds the one place (not logged in: both limits count it)
    assert holder.greeting.code == 220
    for _ in range(2):
        c = Raw(running.host, running.port)
        assert c.greeting.code == 421 and refusal in c.greeting.text, c.greeting
        c.close()
    assert _banned(running.host, running.port)
    assert "limit_exceeded" in read_bans(bans)["127.0.0.1"].reason
    holder.close()
    assert _banned(running.host, running.port)  # with the place free again: still banned
