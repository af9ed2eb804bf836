"""One vocabulary of problems for the doctor (live probes), the analyzer (captures) and the lab.

A :class:`Finding` carries a stable code, a severity, the side that can act, and the values its messages need.
The texts (summary, explanation, advice) live in one message catalog per language (``messages/en.toml``,
``messages/ja.toml``); no part of ftpkit writes diagnosis prose of its own. A new problem is added once, here and
in the catalogs, and every part can report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ftpkit.diagnosis.catalog import Catalog, catalog, choose_language

Severity = Literal["ok", "info", "warn", "fail"]

__all__ = ["CODES", "Catalog", "Finding", "Severity", "catalog", "choose_language", "render"]

CODES: frozenset[str] = frozenset({
    # control connection
    "dns-failure", "control-refused", "control-timeout", "no-greeting", "not-ftp", "server-busy", "tls-failed",
    "login-failed", "control-encrypted", "slow-reply",
    # passive mode
    "passive-refused", "passive-address-unusable", "passive-address-mismatch", "passive-data-timeout",
    "passive-data-refused", "pasv-address-mismatch",
    # active mode
    "active-refused", "active-data-timeout", "port-address-mismatch", "port-bounce-attempt",
    # data connections in captures
    "data-syn-unanswered", "data-refused", "data-never-opened", "transfer-failed",
    # address translation
    "nat-detected", "alg-rewrote-port",
    # what the server sees alone (ftpkit serve)
    "active-data-refused", "masquerade-missing", "alg-blind-tls", "passive-foreign-source", "data-tls-not-resumed",
    "passive-ports-exhausted",
    # all good
    "healthy",
})


@dataclass(frozen=True)
class Finding:
    """A problem (or the absence of one) with its evidence.

    ``params`` fill the catalog's templates (``{announced}``, ``{port}``...); ``evidence`` are facts as observed
    (replies, addresses, computations), shown verbatim in every language.
    """

    code: str
    severity: Severity = "fail"
    params: dict[str, str] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown diagnosis code {self.code!r}")

    def summary(self, lang: str | None = None) -> str:
        return catalog(lang).summary(self.code, self.params)

    def advice(self, lang: str | None = None) -> list[tuple[str, str]]:
        """(side, text) pairs: who can act ('client', 'server', 'network') and what to change."""
        return catalog(lang).advice(self.code, self.params)

    def hint(self, lang: str | None = None) -> str:
        """A short cause and remedy for a reply to the client (one line, no final full stop), or ``""``."""
        return catalog(lang).entry_text(self.code, "hint", self.params)

    def to_json(self, lang: str | None = None) -> dict[str, object]:
        return {
            "code": self.code,
            "severity": self.severity,
            "summary": self.summary(lang),
            "evidence": list(self.evidence),
            "advice": [{"side": side, "text": text} for side, text in self.advice(lang)],
            "params": dict(self.params),
        }


def render(finding: Finding, lang: str | None = None) -> list[str]:
    """Plain-text lines for a finding: code and summary, evidence, advice."""
    cat = catalog(lang)
    lines = [f"[{finding.code}] {finding.summary(lang)}"]
    lines += [f"    {cat.word('evidence')}: {line}" for line in finding.evidence]
    lines += [f"    {cat.word('advice-' + side)}: {text}" for side, text in finding.advice(lang)]
    return lines


