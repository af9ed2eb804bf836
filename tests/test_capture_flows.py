"""Bounded memory: the flow table sweeps idle connections but keeps open control and data connections, and data
connections are counters whatever their size."""

from __future__ import annotations

from pathlib import Path

from ftpkit.capture import Options, analyze
from ftpkit.capture.flows import FlowTable
from pcapbuild import ETHERNET, Tcp, Timeline, ftp_exchange, write_pcap


def test_many_connections_keep_the_table_bounded_and_the_session_whole(tmp_path: Path) -> None:
    tl = Timeline()
    ctl = Tcp("10.0.0.1", 40000, "10.0.0.2", 21)
    tl.add(*ctl.handshake())
    ftp_exchange(tl, ctl, None, b"220 hi\r\n")
    ftp_exchange(tl, ctl, b"USER a\r\n", b"230 ok\r\n")
    ftp_exchange(tl, ctl, b"PASV\r\n", b"227 Entering Passive Mode (10,0,0,2,195,80).\r\n")
    tl.add(ctl.client_sends(b"RETR f\r\n"))
    data = Tcp("10.0.0.1", 40001, "10.0.0.2", 50000)
    tl.add(*data.handshake())
    for i in range(1500):  # a port scan in the middle of the transfer: 1500 unrelated connections
        other = Tcp("10.7.0.1", 1024 + i, "10.7.0.2", 80)
        tl.add(other.syn(), other.rst_to_syn())
        if i % 100 == 0:
            tl.add(data.server_sends(bytes(1000)))
    tl.add(*data.close())
    ftp_exchange(tl, ctl, None, b"226 done\r\n")
    ftp_exchange(tl, ctl, b"QUIT\r\n", b"221 bye\r\n")
    path = write_pcap(tmp_path / "scan.pcap", ETHERNET, tl)
    report = analyze([path], Options(max_flows=200))
    (s,) = report.sessions
    assert [e.text for e in s.log][-4:] == ["RETR f", "226 done", "QUIT", "221 bye"]
    (t,) = s.transfers
    assert t.fate == "established" and t.bytes_to_client() == 15 * 1000
    assert report.flows == 1502


def test_sweep_drops_idle_flows_only() -> None:
    from ftpkit.capture.flows import OTHER, Flow
    from ftpkit.capture.model import Endpoint
    from ftpkit.capture.packets import flow_key

    table = FlowTable(limit=10)
    keep = Flow(Endpoint("10.0.0.1", 1), Endpoint("10.0.0.2", 21), 0.0)
    keep.owner = "a session"
    table.add(flow_key(b"\x0a\0\0\x01", 1, b"\x0a\0\0\x02", 21), keep)
    for i in range(100):
        flow = Flow(Endpoint("10.0.0.3", i), Endpoint("10.0.0.4", 80), float(i))
        flow.owner = OTHER
        table.add(flow_key(b"\x0a\0\0\x03", i, b"\x0a\0\0\x04", 80), flow)
        assert table.count <= 16
    assert table.by_key[flow_key(b"\x0a\0\0\x02", 21, b"\x0a\0\0\x01", 1)] == (keep, 1)
    assert table.evicted >= 80
