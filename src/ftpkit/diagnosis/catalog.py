"""Message catalogs: one TOML file per language in ``messages/``; English is the fallback for missing texts."""

from __future__ import annotations

import os
import tomllib
from functools import cache
from importlib import resources

LANGUAGES = ("en", "ja")


def choose_language(explicit: str | None = None) -> str:
    """``--lang`` when given, else ``ja`` when LC_ALL/LC_MESSAGES/LANG starts with ``ja``, else ``en``."""
    if explicit:
        return explicit if explicit in LANGUAGES else "en"
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var, "")
        if value:
            return "ja" if value.lower().startswith("ja") else "en"
    return "en"


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Catalog:
    def __init__(self, lang: str, data: dict, fallback: Catalog | None = None) -> None:
        self.lang = lang
        self.data = data
        self.fallback = fallback

    def entry(self, code: str) -> dict:
        entry = self.data.get("codes", {}).get(code)
        if entry is None and self.fallback is not None:
            return self.fallback.entry(code)
        return entry or {}

    def summary(self, code: str, params: dict[str, str]) -> str:
        return self.entry(code).get("summary", code).format_map(_Defaults(params))

    def explanation(self, code: str, params: dict[str, str]) -> str:
        return self.entry(code).get("explanation", "").format_map(_Defaults(params))

    def entry_text(self, code: str, key: str, params: dict[str, str]) -> str:
        """Another text of a code's entry (``hint``, ``repeat``), filled; ``""`` when it has none."""
        text = self.entry(code).get(key)
        if not isinstance(text, str) and self.fallback is not None:
            return self.fallback.entry_text(code, key, params)
        return text.format_map(_Defaults(params)) if isinstance(text, str) else ""

    def advice(self, code: str, params: dict[str, str]) -> list[tuple[str, str]]:
        """(side, text) pairs. Advice that depends on the data-connection mode that failed is a table per mode
        (``[codes.X.advice.active]``, ``[codes.X.advice.passive]``), chosen by the finding's ``mode`` param."""
        entry = self.entry(code).get("advice", {})
        variant = entry.get(params.get("mode", ""))
        if isinstance(variant, dict):
            entry = variant
        return [(side, text.format_map(_Defaults(params))) for side, text in entry.items() if isinstance(text, str)]

    def word(self, key: str, **params: str) -> str:
        words = self.data.get("words", {})
        if key not in words and self.fallback is not None:
            return self.fallback.word(key, **params)
        return words.get(key, key).format_map(_Defaults(params))

    def text(self, section: str, key: str, **params: object) -> str:
        """Any other catalog text: ``text("details", "control-ok", address=...)``."""
        table = self.data.get(section, {})
        if key not in table and self.fallback is not None:
            return self.fallback.text(section, key, **params)
        return str(table.get(key, key)).format_map(_Defaults({k: str(v) for k, v in params.items()}))

    def codes(self) -> set[str]:
        return set(self.data.get("codes", {}))


@cache
def _load(lang: str) -> dict:
    text = resources.files("ftpkit.diagnosis").joinpath("messages", f"{lang}.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


@cache
def catalog(lang: str | None = None) -> Catalog:
    lang = choose_language(lang)
    english = Catalog("en", _load("en"))
    return english if lang == "en" else Catalog(lang, _load(lang), fallback=english)
