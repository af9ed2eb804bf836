"""Running a scenario: build the namespaces, apply the rules, start the server and the captures, run the transfers,
the doctor and the analyzer, read the ftpkit server's own diagnosis from its log, and tear everything down again —
in ``finally``, also on Ctrl-C and SIGTERM.

The processes themselves (starting inside a namespace, readiness, stopping by PID, reaping) are
:mod:`ftpkit.lab.processes`; reading a client's output is :mod:`ftpkit.lab.peers`. This module is the order of
things.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ftpkit.diagnosis import catalog
from ftpkit.lab import live as lab_live
from ftpkit.lab import peers
from ftpkit.lab.processes import (
    START_TIMEOUT,
    LabError,
    Processes,
    in_namespace,
    log_tail,
    pid_alive,
    signals_raise,
    uninterrupted,
    wait_for_output,
    wait_for_port,
)
from ftpkit.lab.scenarios import ACTIVE, PASSIVE, TRUSTING, Scenario
from ftpkit.lab.topology import (
    HANDS_ON,
    SERVER_ADDRESS,
    Interface,
    Names,
    Topology,
    lab_namespaces,
    leftover_namespaces,
    names_for_run,
    run,
    teardown,
)

DOCTOR_LIMIT = 60.0  # seconds the doctor may take in all
CAPTURE_SIDES = (("to-client", "client-side"), ("to-server", "server-side"))


@dataclass(frozen=True)
class LabOptions:
    modes: tuple[str, ...] = (ACTIVE, PASSIVE)
    server: str = "ftpkit"
    client: str = "ftpkit"
    timeout: float = 2.0  # the server's data connection timeouts (accept in passive, connect in active mode)
    doctor: bool = True
    doctor_timeout: float = 1.0
    analyze: bool = True
    capture: Path | None = None  # keep the router's captures as STEM-client-side.pcap and STEM-server-side.pcap
    lang: str | None = None
    live: bool = False  # also the live analyzer on the router during the transfers (see ftpkit.lab.live)

    @property
    def client_timeout(self) -> float:
        """One second more than the server's, so a client sees the server's 425 rather than its own timeout."""
        return self.timeout + 1


@dataclass
class TransferResult:
    row: str  # active | passive | passive-trusting
    ok: bool
    expected: bool
    seconds: float
    command: list[str]
    exit_code: int | None
    error: str  # the client's own one-line failure, empty when it worked
    output: str  # the client's stderr (its transcript with -v)

    @property
    def as_expected(self) -> bool:
        return self.ok == self.expected


@dataclass
class LabReport:
    scenario: Scenario
    options: LabOptions
    names: Names
    interfaces: list[Interface]
    server_line: str = ""
    transfers: list[TransferResult] = field(default_factory=list)
    doctor: dict[str, Any] | None = None  # the doctor's JSON report
    doctor_command: list[str] = field(default_factory=list)
    doctor_error: str = ""
    analyzer: dict[str, Any] | None = None  # see analyze_captures()
    analyzer_error: str = ""
    server_diagnosis: dict[str, Any] | None = None  # see server_findings(); None: not an ftpkit server
    live: dict[str, Any] | None = None  # see ftpkit.lab.live.report(), with "differences" from the files
    live_error: str = ""
    captures: list[str] = field(default_factory=list)  # kept capture files (with --capture)
    started: list[int] = field(default_factory=list)  # PIDs of every process the lab started
    seconds: float = 0.0

    @property
    def doctor_codes(self) -> set[str]:
        return {f["code"] for f in (self.doctor or {}).get("findings", [])}

    @property
    def analyzer_codes(self) -> set[str]:
        return {f["code"] for f in (self.analyzer or {}).get("findings", [])}

    @property
    def server_codes(self) -> set[str] | None:
        """The codes of the ftpkit server's own diagnosis (``None`` with another server, which has none)."""
        if self.server_diagnosis is None:
            return None
        return {f["code"] for f in self.server_diagnosis.get("findings", [])}

    @property
    def server_as_expected(self) -> bool:
        codes = self.server_codes
        return codes is None or codes == set(self.scenario.server_side)

    @property
    def live_codes(self) -> set[str]:
        return {f["code"] for f in (self.live or {}).get("findings", [])}

    @property
    def as_expected(self) -> bool:
        return all(t.as_expected for t in self.transfers) and self.server_as_expected


# --- the pieces of a run ------------------------------------------------------------------------------------------
def start_capture(procs: Processes, router: str, iface: str, path: Path, timeout: float = START_TIMEOUT) -> None:
    """tcpdump on a router interface, packet-buffered; returns once it said "listening on"."""
    argv = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root", "-w", str(path), "tcp"]
    popen = procs.start(f"tcpdump -i {iface}", router, argv, stderr=subprocess.PIPE, stop_signal=signal.SIGINT)
    ready, said = wait_for_output(popen, b"listening on", timeout)
    if not ready:
        raise LabError(f"tcpdump on {iface} did not start: {said.strip() or 'silent'}")


def apply_rules(scenario: Scenario, names: Names) -> None:
    for rule in scenario.rules:
        run(in_namespace(rule.namespace(names), rule.argv))


def certificate(scenario: Scenario, workdir: Path) -> peers.TLSFiles | None:
    if not scenario.tls:
        return None
    try:
        return peers.make_certificate(workdir, scenario.target)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(str(exc)) from None


def start_server(procs: Processes, names: Names, kind: str, scenario: Scenario, root: Path, workdir: Path,
                 timeout: float, tls: peers.TLSFiles | None = None,
                 detach: bool = False) -> tuple[subprocess.Popen[bytes], Path]:
    command = peers.server_command(kind, scenario, root, workdir, timeout, tls)
    log = workdir / "server.log"
    with log.open("wb") as out:
        stdin: IO[Any] | int = out if command.stdin_log else subprocess.DEVNULL
        if detach:  # `lab up`: the server outlives this process; `lab down` stops it
            popen = subprocess.Popen(in_namespace(names.server, command.argv), stdin=stdin, stdout=out, stderr=out,
                                     start_new_session=True)
        else:
            popen = procs.start(f"{kind} server", names.server, command.argv, stdin=stdin, stdout=out, stderr=out)
    wait_for_port(procs, names.server, SERVER_ADDRESS, 21, popen, log)
    return popen, log


def server_line(kind: str, scenario: Scenario, lang: str | None = None) -> str:
    cat = catalog(lang)
    low, high = scenario.passive_ports
    line = cat.text("lab", "server-line", server=kind, address=f"{SERVER_ADDRESS}:21", ports=f"{low}-{high}")
    if scenario.masquerade_address:
        line += cat.text("lab", "server-masquerade", address=scenario.masquerade_address)
    if scenario.published:
        line += cat.text("lab", "server-published", address=f"{scenario.target}:21")
    return line


@dataclass
class Running:
    """The client of one row while it runs: its command line, where it downloads to and writes its output, when it
    started and when it ended (monotonic; ``None`` while it runs, and when it was stopped at the limit)."""

    row: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    output: Path
    log: Path
    started: float
    ended: float | None = None


def _wait_for(items: list[Running], limit: float) -> None:
    """Until every process of ``items`` ended (each one's end time noted, to ~20 ms); one that runs longer than
    ``limit`` seconds is killed (and has no end time)."""
    pending = [item for item in items if item.ended is None and item.popen.returncode is None]
    while pending:
        for item in list(pending):
            if item.popen.poll() is not None:
                item.ended = time.monotonic()
                pending.remove(item)
            elif time.monotonic() > item.started + limit:
                item.popen.kill()
                item.popen.wait(5)
                pending.remove(item)
        if pending:
            with contextlib.suppress(subprocess.TimeoutExpired):
                pending[0].popen.wait(0.02)


def run_transfers(procs: Processes, names: Names, scenario: Scenario, options: LabOptions, workdir: Path,
                  tls: peers.TLSFiles | None = None) -> list[TransferResult]:
    """Every row at once (each client in its own process in the client namespace), so failures wait in parallel;
    one after another with servers that stumble over simultaneous sessions (:data:`peers.SERIAL_SERVERS`). The
    trusting passive row starts when the plain passive row has ended: the two sessions send the same commands, and
    the analyzer pairs the two sides of a NAT by commands and start time, so simultaneous twins could be crossed."""
    limit = 3 * options.timeout + 10
    serial = options.server in peers.SERIAL_SERVERS
    running: list[Running] = []
    for row in scenario.rows(options.modes):
        if row == TRUSTING:
            _wait_for([item for item in running if item.row == PASSIVE], limit)
        output = workdir / f"download-{row}"
        errors = workdir / f"client-{row}.log"
        argv = peers.client_command(options.client, row, scenario.target, output, options.client_timeout,
                                    tls.cert if tls else None)
        with errors.open("wb") as err:
            popen = procs.start(f"{options.client} client ({row})", names.client, argv, stdout=err, stderr=err)
        running.append(Running(row, argv, popen, output, errors, time.monotonic()))
        if serial:
            _wait_for(running[-1:], limit)
    _wait_for(running, limit)
    results: list[TransferResult] = []
    for item in running:
        code: int | None = item.popen.returncode if item.ended is not None else None  # None: stopped at the limit
        seconds = (item.ended if item.ended is not None else time.monotonic()) - item.started
        text = item.log.read_text(encoding="utf-8", errors="replace")
        arrived = item.output.is_file() and item.output.read_bytes() == peers.FILE_BYTES
        ok = code == 0 and arrived
        if ok:
            error = ""
        elif code is None:
            error = f"no result within {limit:g} s: stopped"
        elif code == 0:
            error = "exit 0 but the file did not arrive whole"
        else:
            error = peers.failure_line(options.client, text, code) or f"exit {code}"
        expected = peers.expected(scenario, item.row, options.client)
        results.append(TransferResult(item.row, ok, expected, seconds, in_namespace(names.client, item.argv), code,
                                      error, text))
    return results


def run_doctor(procs: Processes, names: Names, scenario: Scenario, options: LabOptions, workdir: Path,
               report: LabReport, tls: peers.TLSFiles | None = None) -> None:
    argv = [sys.executable, "-m", "ftpkit", "doctor", "--json", "--timeout", f"{options.doctor_timeout:g}",
            "--lang", options.lang or "en", *(["--tls", "--ca-file", str(tls.cert)] if tls else []),
            f"ftp://{scenario.target}/"]
    report.doctor_command = in_namespace(names.client, argv)
    out_path, err_path = workdir / "doctor.json", workdir / "doctor.log"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        popen = procs.start("doctor", names.client, argv, stdout=out, stderr=err)
    try:
        code = popen.wait(DOCTOR_LIMIT)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(5)
        report.doctor_error = f"the doctor gave no result within {DOCTOR_LIMIT:g} s"
        return
    try:
        report.doctor = json.loads(out_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report.doctor_error = f"the doctor exited {code} without a report: {log_tail(err_path) or 'no output'}"


def analyze_captures(files: list[tuple[str, Path]], lang: str | None) -> dict[str, Any]:
    """The analyzer on the router's captures: findings per session, each with the side it was seen on, and the
    findings about the two sides of a NAT."""
    from ftpkit.capture import Options, analyze

    sides = {str(path): side for side, path in files}
    report = analyze([str(path) for _, path in files], Options(lang=lang))
    lang = report.lang
    findings: list[dict[str, Any]] = []
    for session in report.sessions:
        for finding in session.findings:
            findings.append({**finding.to_json(lang), "side": sides.get(session.file, session.file),
                             "session": f"{session.client} > {session.server}"})
    for pair in report.nat_pairs:
        for finding in pair.findings:
            findings.append({**finding.to_json(lang), "side": "both",
                             "session": f"{pair.inside.client} > {pair.outside.server}"})
    return {
        "files": [{"name": f.name, "side": sides.get(f.name, f.name), "packets": f.packets, "error": f.error}
                  for f in report.files],
        "sessions": len(report.sessions),
        "findings": findings,
    }


def server_findings(log: Path) -> dict[str, Any]:
    """The ftpkit server's own diagnosis, from its JSON log: every finding it logged (with its session and when),
    and the repeat summaries."""
    findings: list[dict[str, Any]] = []
    summaries: list[str] = []
    error = ""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        lines, error = [], f"cannot read the server's log: {exc}"
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record.get("diagnosis"), dict):
            session = re.match(r"\[(s\d+)\]", str(record.get("message", "")))
            findings.append({**record["diagnosis"], "session": session.group(1) if session else "",
                             "time": record.get("time")})
        elif record.get("diagnosis_summary"):
            summaries.append(str(record["diagnosis_summary"]))
    return {"findings": findings, "summaries": summaries, "error": error or None}


def run_scenario(scenario: Scenario, options: LabOptions) -> LabReport:
    """Run ``scenario`` from scratch and leave nothing behind. Raises :class:`LabError` when the lab itself cannot
    be built (no program to run, a server that does not start, a failing ip or iptables command)."""
    begun = time.monotonic()
    for problem in (peers.server_missing(options.server, scenario.tls), peers.client_missing(options.client)):
        if problem:
            raise LabError(problem)
    names = names_for_run()
    topology = Topology(names, published=scenario.published)
    report = LabReport(scenario, options, names, topology.interfaces,
                       server_line=server_line(options.server, scenario, options.lang))
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix=f"ftpkit-{names.tag}-"))  # ftpkit-lab<PID>-...: `down` knows it
    try:
        with signals_raise():
            workdir.chmod(0o755)
            root = workdir / "served"
            peers.prepare_root(root)
            tls = certificate(scenario, workdir)
            topology.build()
            apply_rules(scenario, names)
            _, server_log = start_server(procs, names, options.server, scenario, root, workdir, options.timeout, tls)
            captures: list[tuple[str, Path]] = []
            for iface, side in CAPTURE_SIDES:
                path = workdir / f"{side}.pcap"
                start_capture(procs, names.router, iface, path)
                captures.append((side, path))
            watching = lab_live.start(procs, names.router, workdir, options.lang) if options.live else None
            report.transfers = run_transfers(procs, names, scenario, options, workdir, tls)
            if watching is not None:  # each transfer's session, seen on both sides of the router
                watching.wait_for_sessions(2 * len(report.transfers))
            for started in procs.started:
                if started.name.startswith("tcpdump"):
                    procs.stop(started)
            if watching is not None:
                watching.stop(procs)
            if options.doctor:
                run_doctor(procs, names, scenario, options, workdir, report, tls)
            if options.server == "ftpkit":  # stopped first, so its log holds every session's end
                for started in procs.started:
                    if started.name == "ftpkit server":
                        procs.stop(started, grace=15)
                report.server_diagnosis = server_findings(server_log)
            if options.analyze:
                try:
                    report.analyzer = analyze_captures(captures, options.lang)
                except ImportError as exc:
                    report.analyzer_error = f"the analyzer is not available: {exc}"
                except Exception as exc:  # the analyzer's failure must not hide the lab's results
                    report.analyzer_error = f"the analyzer failed: {type(exc).__name__}: {exc}"
            if watching is not None:
                live = lab_live.report(watching)
                live["differences"] = lab_live.compare(report.analyzer, live)
                report.live = live
            if options.capture is not None:
                report.captures = keep_captures(captures, options.capture)
    finally:
        with uninterrupted():
            report.started = procs.pids
            try:
                procs.stop_all()
            finally:
                topology.destroy()
                shutil.rmtree(workdir, ignore_errors=True)
    report.seconds = time.monotonic() - begun
    return report


def keep_captures(captures: list[tuple[str, Path]], base: Path) -> list[str]:
    kept: list[str] = []
    suffix = base.suffix or ".pcap"
    for side, path in captures:
        target = base.with_name(f"{base.stem}-{side}{suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        kept.append(str(target))
    return kept


# --- up / down: a lab to experiment with by hand --------------------------------------------------------------------
STATE_DIR = Path("/run/ftpkit-lab") if Path("/run").is_dir() else Path(tempfile.gettempdir()) / "ftpkit-lab"


def up(scenario: Scenario, server: str = "ftpkit", timeout: float = 2.0) -> dict[str, Any]:
    """Build the scenario and leave it running with a server: ``ftpkit lab exec`` to use it, ``ftpkit lab down``."""
    problem = peers.server_missing(server, scenario.tls)
    if problem:
        raise LabError(problem)
    if lab_namespaces(HANDS_ON):
        raise LabError(f"a lab is already up ({', '.join(lab_namespaces(HANDS_ON))}); run `ftpkit lab down` first")
    topology = Topology(HANDS_ON, published=scenario.published)
    procs = Processes()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    try:
        with signals_raise():
            STATE_DIR.mkdir(mode=0o755, parents=True)
            root = STATE_DIR / "served"
            peers.prepare_root(root)
            tls = certificate(scenario, STATE_DIR)
            topology.build()
            apply_rules(scenario, HANDS_ON)
            popen, log = start_server(procs, HANDS_ON, server, scenario, root, STATE_DIR, timeout, tls, detach=True)
            state = {"scenario": scenario.name, "server": server, "server_pid": popen.pid, "log": str(log),
                     "target": scenario.target, "namespaces": topology.created,
                     "ca_file": str(tls.cert) if tls else None}
            (STATE_DIR / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    except BaseException:
        with uninterrupted():
            procs.stop_all()
            topology.destroy()
            shutil.rmtree(STATE_DIR, ignore_errors=True)
        raise
    procs.stop_all()  # only the port check; the server stays
    return state


def down() -> list[str]:
    """Remove the lab of ``up`` and the leftovers of runs that were killed, with every process inside them, and the
    state; idempotent. Runs still in progress keep theirs. The namespaces removed."""
    with uninterrupted():
        removed = teardown(leftover_namespaces())
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        for workdir in Path(tempfile.gettempdir()).glob("ftpkit-lab*-*"):  # the files of runs killed by SIGKILL
            match = re.match(r"ftpkit-lab(\d+)-", workdir.name)
            if match and workdir.is_dir() and not pid_alive(int(match.group(1))):
                shutil.rmtree(workdir, ignore_errors=True)
    return removed


def state() -> dict[str, Any] | None:
    try:
        return json.loads((STATE_DIR / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
