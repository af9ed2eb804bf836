"""``ftpkit lab run SCENARIO --live``: the live analyzer (``ftpkit analyze --live --json``) on the router's two
interfaces while the transfers run, its findings set beside those of the analysis of the capture files (they must
be the same: one analyzer, the same packets).

The analyzer is started by its PID like every lab process and is ready when it says it captures; it is stopped by
SIGINT once it has reported the end of every session of the transfers (bounded), so nothing is cut short.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpkit.capture.model import Endpoint
from ftpkit.lab.processes import LabError, Processes, Started, wait_for_output

INTERFACES = {"to-client": "client-side", "to-server": "server-side"}
STOP_GRACE = 20.0  # seconds the analyzer has to stop its captures and report what is still open
SESSIONS_LIMIT = 10.0  # seconds to wait for the sessions of the transfers to be reported


@dataclass
class LiveRun:
    started: Started
    output: Path

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.output.read_text(encoding="utf-8")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                break  # a line being written
        return out

    def wait_for_sessions(self, count: int, limit: float = SESSIONS_LIMIT) -> None:
        """Until ``count`` sessions have ended (each transfer's session, on each side), polled every 20 ms."""
        end = time.monotonic() + limit
        while time.monotonic() < end and self.started.popen.poll() is None:
            if sum(1 for e in self.events() if e.get("event") == "session") >= count:
                return
            time.sleep(0.02)

    def stop(self, procs: Processes) -> None:
        procs.stop(self.started, grace=STOP_GRACE)


def start(procs: Processes, router: str, workdir: Path, lang: str | None) -> LiveRun:
    output = workdir / "live.jsonl"
    argv = [sys.executable, "-m", "ftpkit", "analyze", "--live", "--json", "--lang", lang or "en",
            *[arg for iface in INTERFACES for arg in ("-i", iface)]]
    with output.open("wb") as out:
        popen = procs.start("live analyzer", router, argv, stdout=out, stderr=subprocess.PIPE,
                            stop_signal=signal.SIGINT)
    ready, said = wait_for_output(popen, b"capturing on", 20.0)
    if not ready:
        raise LabError(f"the live analyzer did not start: {said.strip() or 'silent'}")
    return LiveRun(procs.started[-1], output)


def _endpoint(ep: dict[str, Any]) -> str:
    return str(Endpoint(ep["ip"], ep["port"]))


def report(run: LiveRun) -> dict[str, Any]:
    """The live findings in the lab's form (as ``runner.analyze_captures`` gives them for the files)."""
    events = run.events()
    sessions: dict[int, dict[str, Any]] = {}
    findings: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for e in events:
        if e.get("event") == "session":
            s = e["session"]
            sessions[s["index"]] = s
            name = f"{_endpoint(s['client'])} > {_endpoint(s['server'])}"
            for f in s["findings"]:
                findings.append({**f, "side": INTERFACES.get(s["file"], s["file"]), "session": name})
        elif e.get("event") == "nat-pair":
            inside, outside = sessions.get(e["inside"]), sessions.get(e["outside"])
            name = f"{_endpoint(inside['client'])} > {_endpoint(outside['server'])}" if inside and outside else ""
            for f in e["findings"]:
                findings.append({**f, "side": "both", "session": name})
        elif e.get("event") == "summary":
            summary = e
    error = summary.get("error") if summary else "the live analyzer ended without its summary"
    return {
        "interfaces": [{"name": i, "side": side, "packets": summary.get("packets", {}).get(i, 0),
                        "dropped": (summary.get("tool_stats", {}).get(i) or {}).get("dropped")}
                       for i, side in INTERFACES.items()],
        "sessions": len(sessions), "findings": findings, "error": error,
        "dropped": summary.get("dropped"), "stopped": summary.get("stopped"),
    }


def _key(f: dict[str, Any]) -> tuple[str, str, str, str, str]:
    return (f["code"], f["severity"], f["side"], f["session"], json.dumps(f["params"], sort_keys=True))


def compare(files: dict[str, Any] | None, live: dict[str, Any]) -> list[str]:
    """What differs between the findings of the files and the live ones (empty: the same)."""
    if files is None:
        return ["no analysis of the files to compare with"]
    theirs = sorted(_key(f) for f in files.get("findings", []))
    ours = sorted(_key(f) for f in live["findings"])
    out = [f"only in the files: {k[0]} ({k[2]}, {k[3]})" for k in theirs if k not in ours]
    out += [f"only live: {k[0]} ({k[2]}, {k[3]})" for k in ours if k not in theirs]
    if not out and theirs != ours:
        out.append("the same codes, not as often")
    return out
