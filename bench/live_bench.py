"""Does ``ftpkit analyze --live`` keep up with 1 Gbit/s? A synthetic capture replayed by tcpreplay on the loopback
interface of a network namespace made for the run, while the live analyzer captures it there.

    python bench/live_bench.py [--size-mib 1000] [--mbps 1000] [--rounds 3] [--tool tcpdump|dumpcap] [--no-write]

Needs root, tcpdump and tcpreplay (Debian: ``apt install tcpdump tcpreplay``). Steps, each bounded in time:

1. write a pcap: passive downloads in 1448-byte segments (an ACK every second one), an active data connection whose
   SYN is never answered (its retransmissions spread among the downloads' packets) and one refused by RST;
2. in the namespace ``ftpkit-bench-live-<pid>`` (only ``lo``, up), in rounds: the capture tool alone, its pipe
   read by a loop that only reads (what the machine can capture at that moment); then ``ftpkit analyze --live -i
   lo --json --write``: wait until it captures, replay the file with ``tcpreplay --mbps``, wait until the
   analyzer has reported every session (or 60 s), stop it with SIGINT;
3. report per round tcpreplay's measured rate, the tool's counters (``dropped by kernel``), the CPU of the tool
   and of the analyzer, how far behind the analyzer fell (its backlog), and whether its findings equal (a) those
   of ``ftpkit analyze`` on the file it kept (``--write``, the same bytes) and (b) those of the replayed file;
4. replace the ``live`` section of ``bench/results.md`` (``bench/results_file.py``).

Everything started is stopped by its PID; the namespace is deleted at the end, also on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))  # this tree's analyzer, as the child processes run it (PYTHONPATH)

from analyze_bench import SEGMENT, Writer, exchange, tcp_and_ip  # noqa: E402
from results_file import write_section  # noqa: E402

from ftpkit.capture.live import BACKLOG  # noqa: E402
from pcapbuild import ACK, ETHERNET, RST, SYN, Tcp, ip_packet, link_frame, tcp_segment  # noqa: E402

SRC = HERE.parent / "src"
SERVER = "10.9.0.1"
LIMIT = 600.0  # seconds any step may take


def download_frames(w: Writer, client: str, cport: int, size: int, every: int = 0,
                    between: list[bytes] | None = None) -> None:
    """A passive data connection of ``size`` bytes; with ``every``, one packet of ``between`` after every ``every``
    segments (another session's SYN retransmissions, spread in time among these packets)."""
    data = Tcp(client, cport, SERVER, 50000 + cport % 100)
    for pkt in data.handshake():
        w.add(pkt)
    seg = bytearray(link_frame(ETHERNET, data.server_sends(bytes(SEGMENT))))
    ack = bytearray(link_frame(ETHERNET, data.ack_from_client()))
    seq0, sent, count = data.sseq - SEGMENT, 0, 0
    queue = list(between or [])
    while sent < size:
        n = min(SEGMENT, size - sent)
        if n < SEGMENT:
            seg = bytearray(link_frame(ETHERNET, tcp_and_ip(data, seq0 + sent, n)))
        struct.pack_into("!I", seg, 38, (seq0 + sent) & 0xFFFFFFFF)
        w.raw(seg, gap=12e-6)
        sent += n
        count += 1
        if (sent // SEGMENT) % 2 == 0 or sent >= size:
            struct.pack_into("!I", ack, 42, (seq0 + sent) & 0xFFFFFFFF)
            w.raw(ack, gap=4e-6)
        if every and queue and count % every == 0:
            w.add(queue.pop(0))
    data.sseq = seq0 + size
    for pkt in data.close():
        w.add(pkt)


def login(w: Writer, ctl: Tcp) -> None:
    for pkt in ctl.handshake():
        w.add(pkt)
    exchange(w, ctl, None, b"220 bench server")
    exchange(w, ctl, b"USER bench", b"331 password")
    exchange(w, ctl, b"PASS bench", b"230 ok")


def write_capture(path: Path, size_mib: int) -> dict[str, Any]:
    """The capture to replay; what the analyzer must find in it."""
    w = Writer(path)
    downloads = 6
    per = (size_mib << 20) * 1000 // 1046 // downloads
    # the active session whose SYN nobody answers: PORT and LIST now, its SYNs during the third download
    bad = Tcp("10.1.0.99", 45000, SERVER, 21)
    login(w, bad)
    exchange(w, bad, b"PORT 10,1,0,99,156,65", b"200 PORT ok")
    w.add(bad.client_sends(b"LIST\r\n"))
    syn = ip_packet(SERVER, "10.1.0.99", tcp_segment(20, 40001, 777, 0, SYN))
    for i in range(downloads):
        client = f"10.1.0.{i + 10}"
        ctl = Tcp(client, 40000 + i * 10, SERVER, 21)
        login(w, ctl)
        exchange(w, ctl, b"TYPE I", b"200 binary")
        port = 50000 + (40000 + i * 10 + 1) % 100
        exchange(w, ctl, b"PASV", f"227 Entering Passive Mode (10,9,0,1,{port >> 8},{port & 255}).".encode())
        w.add(ctl.client_sends(f"RETR big{i}.iso\r\n".encode()))
        w.add(ctl.server_sends(b"150 here it comes\r\n"))
        spread = 30_000 if i == 2 else 0  # ~0.35 s apart at 1 Gbit/s: retransmissions, not duplicates
        download_frames(w, client, 40000 + i * 10 + 1, per, spread, [syn] * 4 if i == 2 else None)
        exchange(w, ctl, None, b"226 Transfer complete.")
        exchange(w, ctl, b"QUIT", b"221 bye")
        for pkt in ctl.close():
            w.add(pkt)
        if i == 2:
            exchange(w, bad, None, b"425 Failed to establish connection.")
            exchange(w, bad, b"QUIT", b"221 bye")
            for pkt in bad.close():
                w.add(pkt)
    # an active data connection refused by RST
    ref = Tcp("10.1.0.98", 45100, SERVER, 21)
    login(w, ref)
    exchange(w, ref, b"PORT 10,1,0,98,156,66", b"200 PORT ok")
    w.add(ref.client_sends(b"RETR x\r\n"))
    w.add(ip_packet(SERVER, "10.1.0.98", tcp_segment(20, 40002, 888, 0, SYN)))
    w.add(ip_packet("10.1.0.98", SERVER, tcp_segment(40002, 20, 0, 889, RST | ACK)))
    exchange(w, ref, None, b"425 Failed to establish connection.")
    exchange(w, ref, b"QUIT", b"221 bye")
    for pkt in ref.close():
        w.add(pkt)
    packets = w.close()
    return {"packets": packets, "sessions": downloads + 2, "downloads": downloads, "bytes_per_download": per}


def run(argv: list[str], timeout: float = LIMIT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def proc_cpu(pid: int) -> float:
    """CPU seconds of a running process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def findings_per_session(sessions: list[dict[str, Any]]) -> list[tuple[str, str, list[str], list[Any]]]:
    """Per session with commands (client address): codes and params, in order."""
    out = []
    for s in sessions:
        if not any(e["side"] == "client" for e in s["log"]):
            continue
        out.append((f"{s['client']['ip']}:{s['client']['port']}", s["user"] or "",
                    [f["code"] for f in s["findings"]], [f["params"] for f in s["findings"]]))
    return sorted(out)


def wait_stderr(proc: subprocess.Popen[bytes], marker: bytes, limit: float = 30) -> bytes:
    assert proc.stderr is not None
    said, end = b"", time.monotonic() + limit
    while marker not in said:
        if time.monotonic() > end or proc.poll() is not None:
            raise RuntimeError(f"{proc.args[3] if isinstance(proc.args, list) else proc.args} did not start: "
                               f"{said!r}")
        if select.select([proc.stderr], [], [], 1)[0]:
            said += os.read(proc.stderr.fileno(), 4096)
    return said


def replay(ns: str, pcap: Path, mbps: float) -> dict[str, float]:
    done = run(["ip", "netns", "exec", ns, "tcpreplay", "-i", "lo", "--mbps", f"{mbps:g}", "--preload-pcap",
                str(pcap)])
    rated = re.search(r"Rated: ([\d.]+) Bps, ([\d.]+) Mbps, ([\d.]+) pps", done.stdout)
    sent = re.search(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds", done.stdout)
    if not rated or not sent:
        raise RuntimeError(f"tcpreplay: {done.stderr.strip() or done.stdout.strip()}")
    return {"mbps": float(rated.group(2)), "pps": float(rated.group(3)), "packets": int(sent.group(1)),
            "seconds": float(sent.group(3))}


def tool_argv(tool: str) -> list[str]:
    """The capture tool as ``ftpkit analyze --live`` runs it (ftpkit.capture.live.tool_argv)."""
    from ftpkit.capture.live import LiveOptions
    from ftpkit.capture.live import tool_argv as live_argv
    options = LiveOptions()
    return live_argv(tool, shutil.which(tool) or tool, "lo", options.capture_filter, options.buffer_mib)


def round_baseline(ns: str, pcap: Path, mbps: float, tool: str, work: Path) -> dict[str, Any]:
    """The capture tool alone, its pcap read from the pipe by a Python loop that only reads: what the machine can
    capture right now without the analysis."""
    from ftpkit.capture.live import parse_stats
    reader = "import os\nn = 0\nwhile True:\n    d = os.read(0, 1 << 20)\n    if not d: break\n    n += len(d)\n"
    cap = subprocess.Popen(["ip", "netns", "exec", ns, *tool_argv(tool)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert cap.stdout is not None
    sink = subprocess.Popen([sys.executable, "-c", reader], stdin=cap.stdout)
    cap.stdout.close()
    try:
        said = wait_stderr(cap, READY_MARKERS[tool])
        cpu0 = proc_cpu(cap.pid)
        rate = replay(ns, pcap, mbps)
        time.sleep(1.5)  # the tool hands the last block over within its one-second read time-out
        cpu = proc_cpu(cap.pid) - cpu0
        cap.send_signal(signal.SIGINT)
        _, err = cap.communicate(timeout=30)
        sink.wait(30)
    finally:
        for proc in (cap, sink):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    stats = parse_stats(tool, (said + err).decode(errors="replace"))
    return {"run": f"{tool} alone", **rate, "dropped": stats.dropped, "captured": stats.captured, "cpu": cpu,
            "analyzer_cpu": None, "backlog": None, "ok": None}


READY_MARKERS = {"tcpdump": b"listening on", "dumpcap": b"File: "}


def round_live(ns: str, pcap: Path, mbps: float, tool: str, work: Path, facts: dict[str, Any],
               expected: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out_path, kept = work / "live.jsonl", work / "live.pcap"
    with out_path.open("wb") as out:
        live = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "ftpkit", "analyze", "--live",
                                 "-i", "lo", "--capture-tool", tool, "--json", "--write", str(kept)], stdout=out,
                                stderr=subprocess.PIPE, env=env)
    try:
        wait_stderr(live, b"capturing on")
        tools = children(live.pid)
        cpu0, tool0 = proc_cpu(live.pid), sum(proc_cpu(t) for t in tools)
        rate = replay(ns, pcap, mbps)
        replayed = time.monotonic()
        end = replayed + 60
        while time.monotonic() < end:  # until every session is reported: the analyzer caught up
            if out_path.read_text().count('"event": "session"') >= facts["sessions"]:
                break
            time.sleep(0.05)
        caught_up = time.monotonic() - replayed
        cpu, tool_cpu = proc_cpu(live.pid) - cpu0, sum(proc_cpu(t) for t in tools) - tool0
        peak = peak_mib(live.pid)
        live.send_signal(signal.SIGINT)
        live.wait(120)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait(10)
    events = [json.loads(line) for line in out_path.read_text().splitlines() if line.strip()]
    summary = events[-1]
    sessions = [e["session"] for e in events if e["event"] == "session"]
    kept_report = json.loads(run([sys.executable, "-m", "ftpkit", "analyze", "--json", str(kept)]).stdout)
    downloads = [t for s in sessions for t in s["transfers"] if t["ftp.request.command"] == "RETR"
                 and t["final"] and t["final"]["ftp.response.code"] == 226]
    ours = findings_per_session(sessions)
    same_as_kept = ours == findings_per_session(kept_report["sessions"])
    same_codes = sorted(c for *_, codes, _ in ours for c in codes) == sorted(
        c for *_, codes, _ in findings_per_session(expected["sessions"]) for c in codes)
    bytes_right = len(downloads) == facts["downloads"] and all(
        t["bytes_to_client"] == facts["bytes_per_download"] for t in downloads)
    stats = summary["tool_stats"]["lo"]
    return {"run": f"ftpkit analyze --live --capture-tool {tool}", **rate, "dropped": stats["dropped"],
            "captured": stats["captured"],
            "cpu": tool_cpu, "analyzer_cpu": cpu, "backlog": summary["backlog_peak"], "peak": peak,
            "caught_up": caught_up, "analyzed": summary["packets"]["lo"], "sessions": len(sessions),
            "same_as_kept": same_as_kept, "same_codes": same_codes, "bytes_right": bytes_right,
            "ok": stats["dropped"] == 0 and summary["packets"]["lo"] == rate["packets"] and same_as_kept
            and same_codes and bytes_right}


def _n(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _per_packet(row: dict[str, Any]) -> float:
    """The analyzer's CPU time per packet it analysed, in µs."""
    return float(row["analyzer_cpu"]) / max(1, row["analyzed"]) * 1e6


def _share(cpu: float | None, row: dict[str, Any]) -> str:
    return "-" if cpu is None else f"{cpu / row['seconds'] * 100:.0f}% of a core"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1000)
    parser.add_argument("--mbps", type=float, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tool", choices=["tcpdump", "dumpcap", "both"], default="both")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--no-write", action="store_true", help="print the results, leave results.md alone")
    args = parser.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(SRC), os.environ.get("PYTHONPATH"))))
    if os.geteuid() != 0:
        print("live_bench: needs root (a network namespace, capturing)", file=sys.stderr)
        return 2
    tools = ["tcpdump", "dumpcap"] if args.tool == "both" else [args.tool]
    for tool in (*tools, "tcpreplay", "ip"):
        if not shutil.which(tool):
            print(f"live_bench: needs {tool} (Debian: apt install {tool})", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="ftpkit-live-bench-", dir=args.dir))
    ns = f"ftpkit-bench-live-{os.getpid()}"
    rows: list[dict[str, Any]] = []
    try:
        pcap = work / "replay.pcap"
        began = time.perf_counter()
        facts = write_capture(pcap, args.size_mib)
        size = pcap.stat().st_size
        print(f"wrote {size / 2**30:.2f} GiB, {facts['packets']:,} packets in {time.perf_counter() - began:.1f} s",
              flush=True)
        expected = json.loads(run([sys.executable, "-m", "ftpkit", "analyze", "--json", str(pcap)]).stdout)
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for tool in tools:
            for i in range(args.rounds):
                for row in (round_baseline(ns, pcap, args.mbps, tool, work),
                            round_live(ns, pcap, args.mbps, tool, work, facts, expected)):
                    row["round"], row["tool"] = i + 1, tool
                    rows.append(row)
                    print(row, flush=True)
    finally:
        run(["ip", "netns", "del", ns])
        shutil.rmtree(work, ignore_errors=True)
    versions = {t: run([t, "--version"]) for t in (*tools, "tcpreplay")}
    version = {t: (v.stdout or v.stderr).splitlines()[0].split(" (")[0] for t, v in versions.items()}
    lines = [
        "## `ftpkit analyze --live` at 1 Gbit/s",
        "",
        f"Measured by `python bench/live_bench.py` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work, Python {platform.python_version()}, "
        f"{', '.join(version.values())}). A synthetic capture of {size / 2**30:.2f} GiB, {facts['packets']:,} "
        f"packets ({facts['sessions']} FTP sessions: {facts['downloads']} passive downloads of "
        f"{facts['bytes_per_download'] / 2**20:.0f} MiB in 1448-byte segments, one active data connection whose SYN "
        f"is never answered, one refused by RST) is replayed with `tcpreplay --mbps {args.mbps:g} --preload-pcap` "
        "on `lo` of a network namespace made for the run, in rounds: first the capture tool alone (its pcap read "
        "from the pipe by a loop that only reads: what the machine can capture at that moment), then `ftpkit "
        "analyze --live -i lo --json --write` with the same tool, run as it runs it ("
        + "; ".join(f"`{' '.join(tool_argv(t)[1:])}`" for t in tools) + "). On `lo` the kernel hands every "
        "replayed packet to the capture twice (sent and received: its filter passes twice the packets) and libpcap "
        "drops the sent copy, so the tool and the analyzer see each packet once. Analyzer CPU per packet: its CPU "
        "time (all its threads, from the start of the replay until it reported the last session, writing the pcap "
        "it keeps included) over the packets it analysed.",
        "",
        "| tool | round | run | replayed | packets/s | dropped by kernel | capture tool CPU | analyzer CPU | "
        "analyzer CPU per packet | analyzer behind at most | findings and bytes right |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['tool']} | {r['round']} | {r['run']} | {r['mbps']:.0f} Mbit/s | {r['pps']:,.0f} | "
                     f"**{_n(r['dropped'])}** | {_share(r['cpu'], r)} | {_share(r['analyzer_cpu'], r)} | "
                     + ("-" if r["analyzer_cpu"] is None else f"{_per_packet(r):.2f} µs") + " | "
                     + ("-" if r["backlog"] is None else f"{r['backlog'] / 2**20:.1f} MiB") + " | "
                     + ("-" if r["ok"] is None else ("yes" if r["ok"] else "no")) + " |")
    lines.append("")
    clean_all: list[dict[str, Any]] = []
    for tool in tools:
        live = [r for r in rows if r["tool"] == tool and r["run"].startswith("ftpkit")]
        alone = [r for r in rows if r["tool"] == tool and not r["run"].startswith("ftpkit")]
        clean = [r for r in live if r["ok"]]
        clean_all += clean
        dropped = [r for r in live if r["dropped"]]
        why = ""
        if dropped and all(r["backlog"] < BACKLOG for r in dropped):
            why = (" Where the live run dropped, the analyzer was not holding the tool back (its backlog stayed below "
                   "its bound, at most " + ", ".join(f"{r['backlog'] / 2**20:.0f}" for r in dropped) + " MiB of 256): "
                   "the tool did not get the CPU to empty the kernel's buffer while the sender, the analyzer and the "
                   "machine's other work shared the two cores.")
        elif dropped:
            why = " In a round with drops the analyzer's backlog reached its bound: the analysis fell behind."
        at_rate = [r for r in clean if r["mbps"] >= args.mbps * 0.98]
        lines.append(
            f"- {tool}: the live analyzer kept up without a drop in {len(clean)} of {len(live)} rounds"
            + (f", at up to {max(r['mbps'] for r in clean):.0f} Mbit/s" if clean else "")
            + f" ({len(at_rate)} of them at the {args.mbps:g} Mbit/s asked for); drops per round "
            + ", ".join(_n(r["dropped"]) for r in live) + "; analyzer CPU per packet "
            + ", ".join(f"{_per_packet(r):.2f}" for r in live) + f" µs; {tool} alone dropped "
            f"nothing in {sum(1 for r in alone if r['dropped'] == 0)} of {len(alone)} (at "
            + ", ".join(f"{r['mbps']:.0f}" for r in alone) + " Mbit/s)." + why)
    live_rows = [r for r in rows if r["run"].startswith("ftpkit")]
    best = max(live_rows, key=lambda r: r["mbps"])
    lines += [
        f"- tcpreplay reached {min(r['mbps'] for r in rows):.0f}-{max(r['mbps'] for r in rows):.0f} Mbit/s of the "
        f"{args.mbps:g} asked for (it competes for the same cores).",
        f"- Analyzer: {best['analyzer_cpu'] / best['seconds'] * 100:.0f}% of one core at {best['mbps']:.0f} Mbit/s "
        f"({best['analyzed']:,} packets, about {_per_packet(best):.2f} µs each), "
        f"peak memory {best['peak']:.0f} MiB; the last session was reported {best['caught_up']:.2f} s after the "
        "replay ended.",
        "- Correct: in every round without drops the live findings equal those of `ftpkit analyze` on the file it "
        "kept (`--write`, the same bytes) session by session, their codes equal those of the replayed file, and "
        f"every download counted its {facts['bytes_per_download']:,} bytes exactly."
        if clean_all and all(r["same_as_kept"] and r["same_codes"] and r["bytes_right"] for r in clean_all)
        else "- Findings or byte counts differed in a round without drops: see the table.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("live", lines)
    return 0 if clean_all else 1


if __name__ == "__main__":
    sys.exit(main())
