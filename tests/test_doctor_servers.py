"""`ftpkit doctor` against real servers on loopback (vsftpd, pyftpdlib): healthy, a 227 address that answers
nothing, and active mode disabled."""

from __future__ import annotations

import asyncio

import realservers
from ftpkit.client.url import parse_url
from ftpkit.doctor import DoctorOptions, run_doctor

real_servers = realservers.real_servers
served_root = realservers.served_root


def doctor(url: str, **options):  # type: ignore[no-untyped-def]
    return asyncio.run(run_doctor(parse_url(url), DoctorOptions(**{"timeout": 2.0, **options})))


def test_healthy_vsftpd_and_pyftpdlib(real_servers, served_root):
    (served_root / "file.txt").write_bytes(b"x")
    for name in ("vsftpd", "pyftpdlib"):
        srv = real_servers.start(name, served_root)
        report = doctor(srv.url())
        assert [f.code for f in report.findings] == ["healthy"], (name, report.findings)
        assert report.facts.server_sees is None  # not ftpkit: no SITE WHOAMI
        assert all(p.worked for p in report.facts.passive + report.facts.active), name


def test_vsftpd_announcing_an_address_that_answers_nothing(real_servers, served_root):
    srv = real_servers.start("vsftpd", served_root, pasv_address="127.0.0.3")
    report = doctor(srv.url())
    codes = [f.code for f in report.findings]
    assert codes == ["passive-address-mismatch"]
    finding = report.findings[0]
    assert finding.params == {"announced": "127.0.0.3", "control_peer": "127.0.0.1"}
    assert any(line.startswith("PASV -> 227") for line in finding.evidence)
    assert any(line.startswith("connect 127.0.0.3:") and line.endswith("-> refused") for line in finding.evidence)
    pasv = report.facts.passive[1]
    assert (pasv.direct, pasv.substituted, pasv.list_ok) == ("refused", "ok", True)
    text = "\n".join(finding.advice("en")[0][1:])
    assert "pasv_address" in text


def test_vsftpd_with_active_mode_disabled(real_servers, served_root):
    srv = real_servers.start("vsftpd", served_root, active=False)
    report = doctor(srv.url())
    assert [f.code for f in report.findings] == ["active-refused"]
    assert report.findings[0].params["reply"].startswith("5")
    checks = {c.name: c.status for c in report.checks}
    assert (checks["epsv"], checks["pasv"], checks["eprt"], checks["port"]) == ("pass", "pass", "fail", "fail")
