"""The shared diagnosis vocabulary: every code has its texts in every catalog, and placeholders are filled."""

from __future__ import annotations

import re

import pytest

from ftpkit.diagnosis import CODES, Finding, catalog, choose_language, render


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_every_code_has_summary_and_advice(lang):
    cat = catalog(lang)
    assert cat.codes() == CODES
    for code in CODES:
        entry = cat.data["codes"][code]
        assert entry.get("summary"), (lang, code)
        if code != "healthy":
            assert entry.get("advice"), (lang, code)


def test_placeholders_agree_between_languages():
    en, ja = catalog("en"), catalog("ja")
    pattern = re.compile(r"\{([a-z_]+)\}")
    for code in CODES:
        names_en = set(pattern.findall(str(en.data["codes"][code])))
        names_ja = set(pattern.findall(str(ja.data["codes"][code])))
        assert names_en == names_ja, code


def test_finding_renders_with_evidence_in_both_languages():
    f = Finding("passive-data-timeout", params={"announced": "198.19.1.2:50000", "computation": "195*256+80 = 50000"},
                evidence=("227 Entering Passive Mode (198,19,1,2,195,80)",))
    en = render(f, "en")
    assert en[0] == ("[passive-data-timeout] Passive mode: the data connection to 198.19.1.2:50000 "
                     "(195*256+80 = 50000) timed out.")
    assert "227 Entering Passive Mode (198,19,1,2,195,80)" in en[1]
    ja = render(f, "ja")
    assert "パッシブモード" in ja[0] and "195*256+80 = 50000" in ja[0]
    assert f.to_json("en")["advice"][0]["side"] == "server"


def test_unknown_code_is_refused():
    with pytest.raises(ValueError, match="unknown diagnosis code"):
        Finding("no-such-code")


def test_language_from_environment(monkeypatch):
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(var, raising=False)
    assert choose_language() == "en"
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    assert choose_language() == "ja"
    assert choose_language("en") == "en"
    monkeypatch.setenv("LC_ALL", "C")
    assert choose_language() == "en"
