"""The capture analyzer: pcap/pcapng files in, FTP sessions with their transfers and findings out.

``analyze(paths, options) -> Report`` is the one entry point; rendering lives in ``render_text``, ``render_json``
and ``render_html``. The modules, in the order the bytes flow:

- ``records``: capture files (pcap, pcapng, gzip) as a stream of records, in bounded memory
- ``packets``: link layer, IP and TCP headers
- ``flows``: every TCP connection as counters, in a table of bounded size
- ``reassembly``: byte streams of control connections
- ``sessions``: FTP from those streams, by the protocol core; announcements become expectations
- ``analyzer``: the packet loop of one file, matching data connections to expectations
- ``findings`` and ``nat``: the diagnosis, in the shared vocabulary
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ftpkit.capture.analyzer import FileAnalysis, Options
from ftpkit.capture.findings import session_findings
from ftpkit.capture.model import FileInfo, Report, Session
from ftpkit.capture.nat import match_sessions
from ftpkit.capture.records import CaptureError, RecordReader
from ftpkit.diagnosis import choose_language

__all__ = ["CaptureError", "Options", "Report", "analyze"]


def analyze(paths: Iterable[str | Path], options: Options | None = None) -> Report:
    """Read every file (each on its own: its own flows and sessions), then find problems across all of them.

    A damaged file yields the sessions read before the damage; its error is in ``Report.files``.
    """
    options = options or Options()
    files: list[FileInfo] = []
    sessions: list[Session] = []
    segments = flows = 0
    for path in paths:
        reader = RecordReader(path)
        work = FileAnalysis(str(path), options)
        error = None
        try:
            work.run(reader)
        except CaptureError as exc:
            error = str(exc)
        sessions += work.finish()
        segments += work.segments
        flows += work.table.created
        if error is None and reader.packets and not work.segments and work.unsupported:
            kinds = ", ".join(str(k) for k in sorted(work.unsupported))
            error = f"{path}: no TCP/IP packets; link type {kinds} is not supported"
        files.append(FileInfo(str(path), reader.format, reader.compressed, reader.packets, error))
    sessions.sort(key=lambda s: (s.start, s.file))
    for i, s in enumerate(sessions, 1):
        s.index = i
    groups: dict[tuple, list[Session]] = {}
    for s in sessions:
        groups.setdefault((s.client.ip, s.server), []).append(s)
    for s in sessions:
        failed = [o for o in groups[(s.client.ip, s.server)] if o.login_failures]
        s.findings = session_findings(s, options.slow_reply, failed if len(failed) > 1 else None)
    pairs = match_sessions(sessions)
    return Report(files, sessions, pairs, choose_language(options.lang), options.show_passwords, segments, flows)
