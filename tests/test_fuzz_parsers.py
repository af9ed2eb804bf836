"""The fuzz targets of ``tests/fuzztargets.py`` in the suite: a deterministic replay of the whole seed corpus (real
captures and dialogues, the articles' worked examples, and every input a campaign of ``scripts/fuzz.py`` found and
was saved to ``tests/fuzz/corpus/``), hypothesis-driven properties on arbitrary and mutated inputs (no exception
but the codec's own error, no broken invariant), and memory that stays bounded whatever the input's size."""

from __future__ import annotations

import gzip
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzztargets
import pcapbuild
from ftpkit.capture.reassembly import MAX_PENDING, Reassembler
from ftpkit.protocol import CommandReader, ReplyReader
from fuzztargets import TARGETS, seeds

SEEDS = {name: seeds(name) for name in TARGETS}


def test_every_target_has_seeds_from_real_material():
    for name, corpus in SEEDS.items():
        assert corpus, f"{name} has no seeds"
    assert len(fuzztargets._capture_files()) >= 8
    assert any(b"ABOR" in s for s in SEEDS["commands"])  # the recorded abort
    assert any(b"227 " in s for s in SEEDS["replies"])


@pytest.mark.parametrize("name", list(TARGETS))
def test_replay_of_the_corpus(name):
    run = TARGETS[name].run
    for data in SEEDS[name]:
        run(data)  # a Finding or any unexpected exception fails the test, naming the input in its traceback


@pytest.mark.parametrize("name", list(TARGETS))
def test_replay_stays_in_bounded_memory(name):
    run = TARGETS[name].run
    tracemalloc.start()
    try:
        for data in SEEDS[name]:
            run(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{name}: {peak} bytes at the peak"


def _mutated(corpus: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes replaced, inserted or cut: the mutations a fuzzer starts with."""
    def mutate(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(seed)
        for kind, pos, byte in edits:
            pos = pos % (len(data) + 1)
            if kind == 0 and data:
                data[pos % len(data)] = byte
            elif kind == 1:
                data[pos:pos] = bytes([byte]) * (1 + byte % 7)
            else:
                del data[pos:pos + 1 + byte % 32]
        return bytes(data)
    edit = st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 255))
    return st.builds(mutate, st.sampled_from(corpus), st.lists(edit, max_size=8))


_interesting = st.sampled_from([b"\r", b"\n", b"\r\n", b"\xff", b"\xf4", b"\xf2", b"\xfb", b"\x00", b" ", b"-",
                                b"227 ", b"229 ", b"(", b")", b",", b"|", b"211-", b"211 ", b"PORT ", b"EPRT ",
                                b"ABOR", b"%n", b"..", b"\xc3", b"\x80"])
_wire = st.lists(st.one_of(_interesting, st.binary(max_size=12)), max_size=80).map(b"".join)


@pytest.mark.parametrize("name", [n for n in TARGETS if n != "capture"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arbitrary_and_mutated_inputs(name, data):
    strategy = st.one_of(st.binary(max_size=2000), _wire.map(lambda w: b"\x03\x00" + w), _mutated(SEEDS[name]))
    TARGETS[name].run(data.draw(strategy))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_captures(data):
    capture = data.draw(_mutated(SEEDS["capture"]))
    if data.draw(st.booleans()):
        capture = gzip.compress(capture)[: data.draw(st.integers(10, 1 << 20))]  # compressed, maybe cut short
    TARGETS["capture"].run(capture)


def test_readers_hold_no_more_than_their_limits_whatever_arrives():
    commands, replies = CommandReader(max_line=64), ReplyReader(max_reply=256)
    flood = b"A" * (1 << 20)
    tracemalloc.start()
    try:
        for _ in range(8):
            assert commands.feed(flood) == []
            replies.feed(flood)
            assert commands.buffered <= 65
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # two 1 MiB chunks in flight at most, never the 8 MiB that arrived


def test_reassembly_waits_for_a_bounded_number_of_bytes():
    r = Reassembler()
    r.segment(1000, b"x")
    for i in range(5000):  # a hole at 1001 that never fills, and segments behind it
        r.segment(1002 + i * 1000, b"y" * 999)
        assert r.pending_bytes <= MAX_PENDING + 999
    assert r.missing > 0


def test_the_analyzer_reads_a_large_capture_in_bounded_memory(tmp_path):
    tl = pcapbuild.Timeline()
    ctl = pcapbuild.Tcp("192.0.2.1", 40000, "192.0.2.2", 21)
    tl.add(*ctl.handshake())
    pcapbuild.ftp_exchange(tl, ctl, None, b"220 ready\r\n")
    pcapbuild.ftp_exchange(tl, ctl, b"PASV\r\n", b"227 Entering Passive Mode (192,0,2,2,195,80).\r\n")
    pcapbuild.ftp_exchange(tl, ctl, b"RETR big\r\n", b"150 Here it comes.\r\n")
    data = pcapbuild.Tcp("192.0.2.1", 40001, "192.0.2.2", 50000)
    pcapbuild.data_transfer(tl, data, 24 << 20, chunk=8192)  # 24 MiB of data segments
    pcapbuild.ftp_exchange(tl, ctl, None, b"226 Done.\r\n")
    path = pcapbuild.write_pcap(tmp_path / "big.pcap", pcapbuild.ETHERNET, tl)
    del tl
    assert path.stat().st_size > 24 << 20
    tracemalloc.start()
    try:
        report = fuzztargets.analyze([path])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (session,) = report.sessions
    conn = session.transfers[0].connection
    assert conn is not None and conn.bytes_from_initiator == 0 and conn.bytes_from_responder == 24 << 20
    assert peak < 8 << 20, f"{peak} bytes at the peak for a {path.stat().st_size}-byte capture"
