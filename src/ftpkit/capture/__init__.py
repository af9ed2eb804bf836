"""The capture analyzer: pcap/pcapng files or a live capture in, FTP sessions with their transfers and findings out.

``analyze(paths, options) -> Report`` reads files; ``ftpkit.capture.live`` captures through tcpdump or dumpcap.
Both stream packets through the same :class:`~ftpkit.capture.engine.Analyzer`, which reports events as they
happen. Rendering lives in ``render_text``, ``render_json``, ``render_html`` and, for events, ``render_events``.
The modules, in the order the bytes flow:

- ``records``: pcap, pcapng (and gzip for files) as a stream of records, incrementally, in bounded memory
- ``timeline``: several files in time order as one stream (rotated sets joined, simultaneous captures apart)
- ``packets``: link layer, IP and TCP headers
- ``flows``: every TCP connection as counters, in a table of bounded size
- ``reassembly``: byte streams of control connections (``tlsrecords``: their TLS records, to see CCC)
- ``sessions``: FTP from those streams, by the protocol core; announcements become expectations
- ``analyzer``: the packet loop of one capture point, matching data connections to expectations
- ``engine``: capture points, the clock and its deadlines, events, findings when a session ends
- ``findings`` and ``nat``: the diagnosis, in the shared vocabulary
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ftpkit.capture.analyzer import Options
from ftpkit.capture.engine import Analyzer
from ftpkit.capture.model import Report
from ftpkit.capture.records import CaptureError
from ftpkit.capture.timeline import Timeline
from ftpkit.diagnosis import choose_language

__all__ = ["Analyzer", "CaptureError", "Options", "Report", "analyze"]


def analyze(paths: Iterable[str | Path], options: Options | None = None) -> Report:
    """Read the files in time order as one stream (see :mod:`ftpkit.capture.timeline`) and report every session.

    A damaged file yields the sessions read before the damage; its error is in ``Report.files``.
    """
    options = options or Options()
    analyzer = Analyzer(options)
    files = Timeline(list(paths), analyzer).run()
    analyzer.close()
    sessions = sorted(analyzer.sessions, key=lambda s: s.index)
    return Report(files, sessions, analyzer.nat_pairs, choose_language(options.lang), options.show_passwords,
                  analyzer.segments, analyzer.flows)
