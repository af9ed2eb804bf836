"""The server's own diagnosis, on facts (sans-I/O): what it sees alone turns into the shared codes, a hint for the
reply in both languages, and one summary line per client network when a problem repeats."""

from __future__ import annotations

import pytest

from ftpkit.diagnosis import CODES, catalog
from ftpkit.protocol.hostport import HostPort
from ftpkit.server import diagnose
from ftpkit.server.diagnose import PassiveFacts, RepeatSummary

SERVER_CODES = ("port-address-mismatch", "port-bounce-attempt", "alg-blind-tls", "active-data-timeout",
                "active-data-refused", "passive-data-timeout", "masquerade-missing", "passive-foreign-source",
                "data-tls-not-resumed", "passive-ports-exhausted")


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_every_server_code_has_a_hint_and_a_repeat_line(lang: str):
    cat = catalog(lang)
    for code in SERVER_CODES:
        assert code in CODES
        entry = cat.data["codes"][code]
        assert entry.get("hint") and "\n" not in entry["hint"] and len(entry["hint"]) < 160, (lang, code)
        assert "{clients}" in entry.get("repeat", "") and "{network}" in entry["repeat"], (lang, code)


def test_port_naming_a_private_address_through_a_nat():
    d = diagnose.active_announcement("PORT 10,0,0,5,156,64", HostPort("10.0.0.5", 40000), "203.0.113.7", False)
    assert d is not None and d.code == "port-address-mismatch" and d.mode == "active" and d.failure
    assert "10.0.0.5:40000" in d.finding.summary("en") and "203.0.113.7" in d.finding.summary("en")
    assert "passive mode" in d.hint("en")
    assert "パッシブモード" in d.hint("ja")
    text = d.log_text("en")
    assert text.startswith("[port-address-mismatch] PORT 10,0,0,5,156,64 announces 10.0.0.5:40000")
    assert "on the client side: Use passive mode." in text


def test_port_under_tls_through_a_nat_is_the_blind_helper():
    d = diagnose.active_announcement("PORT 198,18,1,2,156,64", HostPort("198.18.1.2", 40000), "198.19.1.1", True)
    assert d is not None and d.code == "alg-blind-tls"
    assert "TLS" in d.hint("en")


def test_port_naming_a_third_public_host_is_a_bounce():
    d = diagnose.active_announcement("EPRT |1|192.0.2.80|25|", HostPort("8.8.8.8", 25), "203.0.113.7", False)
    assert d is not None and d.code == "port-bounce-attempt"
    assert diagnose.active_announcement("PORT x", HostPort("203.0.113.7", 40000), "203.0.113.7", False) is None


@pytest.mark.parametrize(("kind", "code"), [("timeout", "active-data-timeout"), ("refused", "active-data-refused"),
                                            ("unreachable", "active-data-refused"), ("error", None)])
def test_active_connection_failures(kind: str, code: str | None):
    d = diagnose.active_failure(kind, HostPort("198.18.1.2", 40001), 2.0, "198.18.1.2")
    assert (d.code if d else None) == code
    if d is not None:
        assert "198.18.1.2:40001" in d.finding.summary("en")
        assert "passive mode" in d.hint("en")


def _passive(**changes: object) -> PassiveFacts:
    facts = {"announced": HostPort("198.19.1.2", 50000), "method": "PASV", "seconds": 2.0, "client": "198.18.1.2",
             "local": "198.19.1.2"}
    facts.update(changes)
    return PassiveFacts(**facts)  # type: ignore[arg-type]


def test_nobody_connects_to_the_passive_port():
    d = diagnose.passive_timeout(_passive())
    assert d.code == "passive-data-timeout" and d.mode == "passive"
    assert d.finding.summary("en") == ("Passive mode: the data connection to 198.19.1.2:50000 (195*256+80 = 50000) "
                                       "timed out.")
    assert "firewall" in d.hint("en")


def test_the_227_address_fails_where_passive_connections_from_the_same_client_worked():
    """The range is open (this client's passive connections worked): this one trusted the 227 address, the
    server's own private address, unreachable through the NAT."""
    d = diagnose.passive_timeout(_passive(client_passive_successes=1))
    assert d.code == "masquerade-missing"
    assert "EPSV" in d.hint("en")
    # not with EPSV (no address inside), nor with a masquerade address (the 227 is not the local address)
    assert diagnose.passive_timeout(_passive(method="EPSV", client_passive_successes=1)).code == "passive-data-timeout"
    assert diagnose.passive_timeout(_passive(announced=HostPort("203.0.113.10", 50000),
                                             client_passive_successes=1)).code == "passive-data-timeout"


def test_a_connection_from_another_address_was_refused_meanwhile():
    d = diagnose.passive_timeout(_passive(refused_sources=("198.18.7.7:41234",)))
    assert d.code == "passive-foreign-source" and d.finding.params["source"] == "198.18.7.7"
    assert "198.18.7.7" in d.hint("en")
    warned = diagnose.passive_foreign_source(50000, "198.18.7.7", "198.18.1.2")
    assert warned.code == "passive-foreign-source" and not warned.failure


def test_a_private_227_address_to_a_public_client_is_a_missing_masquerade():
    public = "93.184.216.34"  # a global address (facts only: nothing is sent anywhere)
    d = diagnose.passive_announcement("PASV", HostPort("10.1.2.3", 50000), public)
    assert d is not None and d.code == "masquerade-missing" and not d.failure and d.finding.severity == "warn"
    assert diagnose.passive_announcement("EPSV", HostPort("10.1.2.3", 50000), public) is None
    assert diagnose.passive_announcement("PASV", HostPort("10.1.2.3", 50000), "10.9.9.9") is None  # a LAN
    assert diagnose.passive_announcement("PASV", HostPort("1.1.1.1", 50000), public) is None


def test_tls_without_session_reuse_and_exhausted_ports():
    d = diagnose.data_tls_refused("it did not resume the control connection's TLS session", "passive", "127.0.0.1")
    assert d is not None and d.code == "data-tls-not-resumed"
    assert diagnose.data_tls_refused("TLS failed: tls handshake timed out", "passive", "127.0.0.1") is None
    assert diagnose.passive_exhausted("no free passive port in 50000-50001", "127.0.0.1").code == \
        "passive-ports-exhausted"


@pytest.mark.parametrize(("text", "reason"), [
    ("TLS handshake timed out", "timeout"), ("the peer closed the connection during the TLS handshake", "closed"),
    ("TLS failed: http request", "protocol"), ("TLS failed: wrong version number", "protocol"),
    ("not a TLS ClientHello: the first byte is 0x47, not a TLS handshake record (0x16)", "protocol"),
    ("the client offers the ALPN protocols ['http/1.1'] but not ftp: refused with the no_application_protocol alert "
     "(RFC 7301)", "protocol"),
    ("TLS failed: tlsv1 alert unknown ca", "certificate"), ("something else", "other")])
def test_tls_failure_reasons_are_a_small_set(text: str, reason: str):
    assert diagnose.tls_failure_reason(text) == reason


def test_repeated_problems_one_line_per_network_and_window():
    summary = RepeatSummary(60)
    for i in range(12):
        for _ in range(2):
            summary.note(diagnose.active_failure("timeout", HostPort(f"203.0.113.{i + 1}", 40000), 15,
                                                 f"203.0.113.{i + 1}"))
    summary.note(diagnose.active_failure("timeout", HostPort("198.51.100.1", 40000), 15, "198.51.100.1"))  # once
    lines = summary.lines("en")
    assert lines == ["[active-data-timeout] 12 client(s) from 203.0.113.0/24 failed active mode (24 times in 60 s): "
                     "the server could not connect back — client-side firewall?"]
    assert summary.lines("en") == []  # a new window starts empty


def test_repeat_summary_is_bounded():
    summary = RepeatSummary(60, max_lines=3, max_groups=10)
    for net in range(20):
        for _ in range(3):
            ip = f"10.{net}.0.1"
            summary.note(diagnose.active_failure("refused", HostPort(ip, 40000), 15, ip))
    lines = summary.lines("en")
    assert len(lines) == 4 and lines[-1].startswith("and 8 more repeated problem(s)")
    assert all(line.startswith("[active-data-refused] 1 client(s) from 10.") for line in lines[:3])
    ja = RepeatSummary(30)
    for _ in range(2):
        ja.note(diagnose.passive_timeout(_passive()))
    assert "198.18.1.0/24" in ja.lines("ja")[0]
