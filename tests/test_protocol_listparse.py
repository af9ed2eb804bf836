"""Directory listings a client receives (LIST and MLSD): what a hostile or broken server may put in a name."""

from __future__ import annotations

import pytest

from ftpkit.protocol.listparse import parse_listing, plain_name

NOW = 1_764_000_000.0


@pytest.mark.parametrize("name", ["", ".", "..", "../escape.txt", "/etc/passwd", "a/b", "sub/../../x", "nul\0name"])
def test_names_that_are_not_one_path_component_are_dropped(name):
    # Found by the fuzzer (an MLSD line "; " gave an entry with an empty name); a mirror joins entry names to its
    # local folder, so "../x" or "/etc/x" from a server would lead it outside.
    mlsd = f"type=file;size=1; {name}\r\ntype=file;size=2; ok.txt\r\n"
    assert [e.name for e in parse_listing(mlsd, NOW, mlsd=True)] == ["ok.txt"]
    unix = f"-rw-r--r--    1 ftp      ftp             1 Nov 20 23:07 {name}\r\n" \
           "-rw-r--r--    1 ftp      ftp             2 Nov 20 23:07 ok.txt\r\n"
    assert [e.name for e in parse_listing(unix, NOW)] == ["ok.txt"]
    dos = f"11-21-25  05:28PM                 1 {name}\r\n11-21-25  05:28PM                 2 ok.txt\r\n"
    assert [e.name for e in parse_listing(dos, NOW)] == ["ok.txt"]
    assert not plain_name(name)


@pytest.mark.parametrize("name", ["ok.txt", "日本語ファイル.txt", "with space", "...", ".hidden", "a\\b", "-rf"])
def test_plain_names_are_kept(name):
    assert [e.name for e in parse_listing(f"type=file;size=1; {name}\r\n", NOW, mlsd=True)] == [name]
    assert plain_name(name)
