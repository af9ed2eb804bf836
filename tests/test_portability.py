"""Portability rules that keep ftpkit running on every Python a fresh Debian gives (3.11 on bookworm, 3.13 on
trixie): no private attribute of the standard library or of a dependency, which change between versions (the
data connection's TLS broke on 3.13 through ``StreamWriter._transport`` and ``_replace_writer``)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
DOCUMENTED = {"os._exit"}  # public and documented despite the underscore (exit without the interpreter's cleanup)


def _private_uses(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            # an object's own private state (self._x, cls._x) is fine; anybody else's is not
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if ast.unparse(node) in DOCUMENTED:
                continue
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top not in ("ftpkit", "__future__"):
                for alias in node.names:
                    if alias.name.startswith("_") or any(part.startswith("_") for part in node.module.split(".")):
                        found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(part.startswith("_") for part in alias.name.split(".")):
                    found.append((node.lineno, f"import {alias.name}"))
    return found


def test_the_checker_finds_what_broke_on_313() -> None:
    code = "def f(writer, protocol, t):\n    writer._transport = t\n    protocol._replace_writer(writer)\n"
    assert [text for _, text in _private_uses(ast.parse(code))] == ["writer._transport", "protocol._replace_writer"]
    assert _private_uses(ast.parse("from asyncio import _get_running_loop\nimport _thread\n"))
    assert not _private_uses(ast.parse("class A:\n    def f(self):\n        return self._x\n"))


def test_no_private_attributes_in_src() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for line, text in _private_uses(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            offenders.append(f"{path.relative_to(SRC)}:{line}: {text}")
    assert offenders == [], "private attributes of other objects:\n" + "\n".join(offenders)


def test_supported_python() -> None:
    assert sys.version_info[:2] in ((3, 11), (3, 12), (3, 13)), "requires-python and ./run test name 3.11-3.13"
