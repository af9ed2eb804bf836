"""``ftpkit lab run cluster``: two ftpkit nodes behind real HAProxy (PROXY v2), on SeaweedFS (S3) with accounts in
PostgreSQL, all in network namespaces (see :mod:`ftpkit.lab.cluster_topology`), and what that shows for real:

1. a user added once (``ftpkit user add --db``) logs in on either node (the node is told by its greeting and by
   the address in its 227 reply);
2. a file uploaded through one node downloads byte-exact through the other (SHA-256);
3. the node serving a download is killed (SIGKILL) midway: ``ftpkit get -c --retries 3`` resumes it on the other node;
4. the nodes see the client's own address through the balancer, and refuse a PORT to a third host (RFC 2577);
5. ``ftpkit doctor`` against the balancer's address, with one node's passive range dropped by its firewall: passive
   fails for that node's announced address and works for the other's;
6. nothing is left behind: every process stopped by its PID, the namespaces and the run's folder removed.

The order of a run is here; the programs' command lines are :mod:`ftpkit.lab.cluster_services`, the checks are
:mod:`ftpkit.lab.cluster_checks`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftpkit.lab import cluster_checks
from ftpkit.lab import cluster_services as svc
from ftpkit.lab.cluster_checks import PASSWORD, USER, Check
from ftpkit.lab.cluster_topology import (
    BALANCER_ADDRESS,
    NODE_ADDRESS,
    NODES,
    SERVICES_ADDRESS,
    ClusterNames,
    ClusterTopology,
    cluster_names,
)
from ftpkit.lab.processes import (
    LabError,
    Processes,
    log_tail,
    netns_dir,
    pid_alive,
    signals_raise,
    uninterrupted,
    wait_for_port,
)

READY_TIMEOUT = 60.0  # seconds for SeaweedFS, PostgreSQL and HAProxy's first health checks


@dataclass
class ClusterReport:
    names: ClusterNames
    checks: list[Check] = field(default_factory=list)
    started: list[int] = field(default_factory=list)  # PIDs of every process the lab started
    workdir: str = ""
    seconds: float = 0.0

    @property
    def as_expected(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)


@dataclass
class Cluster:
    """The running cluster: what the checks need."""

    procs: Processes
    names: ClusterNames
    workdir: Path
    stats: Path
    nodes: dict[str, subprocess.Popen[bytes]]
    node_logs: dict[str, Path]
    users_db: str
    weed: svc.SeaweedFS
    timeout: float

    @property
    def url(self) -> str:
        return f"ftp://{USER}:{PASSWORD}@{BALANCER_ADDRESS}"

    def run(self, name: str, role: str, argv: list[str], limit: float = 60.0, stdin: bytes | None = None,
            stem: str | None = None) -> tuple[int | None, str, str]:
        """Run ``argv`` in the namespace of ``role`` to its end (killed after ``limit`` s): exit code (``None``:
        stopped at the limit), stdout, stderr."""
        stem = stem or name.replace(" ", "-")
        out_path, err_path = self.workdir / f"{stem}.out", self.workdir / f"{stem}.err"
        feed = self.workdir / f"{stem}.in"
        feed.write_bytes(stdin or b"")
        with out_path.open("wb") as out, err_path.open("wb") as err, feed.open("rb") as given:
            popen = self.procs.start(name, self.names[role], argv, stdout=out, stderr=err, stdin=given)
        code: int | None
        try:
            code = popen.wait(limit)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
            code = None
        return code, out_path.read_text(errors="replace"), err_path.read_text(errors="replace")

    def start_node(self, node: str) -> None:
        log = self.node_logs[node]
        with log.open("ab") as out:
            popen = self.procs.start(f"ftpkit {node}", self.names[node],
                                     svc.node_argv(node, self.users_db, self.weed, self.workdir, self.timeout),
                                     stdout=out, stderr=out)
        self.nodes[node] = popen
        wait_for_port(self.procs, self.names[node], NODE_ADDRESS[node], 21, popen, log)

    def wait_states(self, wanted: dict[str, str], timeout: float = READY_TIMEOUT) -> dict[str, str]:
        """Until HAProxy's state of each node starts with the wanted one ("UP L7OK", "DOWN"); the last states."""
        end = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < end:
            states = svc.haproxy_states(self.stats)
            if all(states.get(node, "").startswith(state) for node, state in wanted.items()):
                return states
            time.sleep(0.05)
        raise LabError(f"HAProxy's nodes are not {wanted} within {timeout:g} s: {states or 'no stats'}")


def _start_services(procs: Processes, names: ClusterNames, workdir: Path) -> tuple[str, svc.SeaweedFS]:
    """PostgreSQL and SeaweedFS in the services namespace, ready; the users database's URL and the S3 server."""
    pg = svc.Postgres.create(workdir)
    pg_log = workdir / "postgres.log"
    with pg_log.open("wb") as out:
        postgres = procs.start("postgres", names["services"], pg.argv(), stdout=out, stderr=out,
                               stop_signal=signal.SIGINT)  # its fast shutdown
    weed = svc.SeaweedFS.create(workdir)
    weed_log = workdir / "weed.log"
    with weed_log.open("wb") as out:
        weed_proc = procs.start("weed mini", names["services"], weed.argv(), stdout=out, stderr=out,
                                env=weed.env())
    wait_for_port(procs, names["services"], SERVICES_ADDRESS, svc.PG_PORT, postgres, pg_log, READY_TIMEOUT)
    ready = procs.start("S3 readiness", names["services"], [sys.executable, "-m", "ftpkit.lab.cluster_helpers",
                                                             "bucket", weed.endpoint, svc.BUCKET, svc.ACCESS_KEY,
                                                             weed.secret, f"{READY_TIMEOUT:g}"],
                        stderr=subprocess.PIPE)
    _, said = ready.communicate(timeout=READY_TIMEOUT + 15)
    if ready.returncode != 0:
        why = "exited" if weed_proc.poll() is not None else "does not answer"
        raise LabError(f"SeaweedFS {why}: {said.decode(errors='replace').strip()} | {log_tail(weed_log)}")
    return pg.url, weed


def start(procs: Processes, names: ClusterNames, workdir: Path, timeout: float) -> Cluster:
    users_db, weed = _start_services(procs, names, workdir)
    cluster = Cluster(procs, names, workdir, workdir / "haproxy.sock", {}, {n: workdir / f"{n}.log" for n in NODES},
                      users_db, weed, timeout)
    for argv, feed in ((["user", "init", "--db", users_db], None),
                       (["user", "add", "--db", users_db, "--password-stdin", USER], PASSWORD.encode() + b"\n")):
        code, said, err = cluster.run(f"ftpkit {argv[0]} {argv[1]}", "node1",
                                      [sys.executable, "-m", "ftpkit", *argv], stdin=feed)
        if code != 0:
            raise LabError(f"ftpkit {' '.join(argv[:2])} failed: {(err or said).strip().splitlines()[-1:]}")
    for node in NODES:
        cluster.start_node(node)
    config = workdir / "haproxy.cfg"
    config.write_text(svc.haproxy_config(cluster.stats), encoding="ascii")
    haproxy_log = workdir / "haproxy.log"
    with haproxy_log.open("wb") as out:
        procs.start("haproxy", names["balancer"], ["haproxy", "-db", "-f", str(config)], stdout=out, stderr=out)
    cluster.wait_states({node: "UP L7OK" for node in NODES})
    return cluster


def run_cluster(timeout: float = 2.0) -> ClusterReport:
    """Build the cluster, run every check, and remove everything again (in ``finally``, also on Ctrl-C and
    SIGTERM). Raises :class:`LabError` when a program is missing or the cluster cannot be built."""
    begun = time.monotonic()
    problem = svc.missing()
    if problem:
        raise LabError(problem)
    names = cluster_names()
    report = ClusterReport(names)
    topology = ClusterTopology(names)
    procs = Processes()
    workdir = Path(tempfile.mkdtemp(prefix=f"ftpkit-{names.tag}-"))  # ftpkit-lab<PID>-...: `down` knows it
    report.workdir = str(workdir)
    try:
        with signals_raise():
            workdir.chmod(0o755)
            topology.build()
            cluster = start(procs, names, workdir, timeout)
            report.checks = cluster_checks.run_all(cluster)
    finally:
        with uninterrupted():
            report.started = procs.pids
            try:
                procs.stop_all()
            finally:
                topology.destroy()
                shutil.rmtree(workdir, ignore_errors=True)
    report.checks.append(leftovers(report))
    report.seconds = time.monotonic() - begun
    return report


def leftovers(report: ClusterReport) -> Check:
    """6. Nothing left behind: the run's namespaces, processes, folder and SeaweedFS's sockets are gone."""
    namespaces = [name for name in report.names.all if (netns_dir() / name).exists()]
    alive = [pid for pid in report.started if pid_alive(pid)]
    folder = Path(report.workdir).exists()
    sockets = sorted(str(p) for p in Path(tempfile.gettempdir()).glob("seaweedfs-*-grpc-*.sock"))
    ok = not namespaces and not alive and not folder
    lines = [f"{len(report.started)} processes started, each stopped by its PID: "
             f"{'none left' if not alive else 'still running: ' + ', '.join(map(str, alive))}",
             f"{len(report.names.all)} namespaces removed" if not namespaces else f"left: {', '.join(namespaces)}",
             f"{report.workdir} (PostgreSQL's cluster, SeaweedFS's bucket, the logs) "
             f"{'removed' if not folder else 'still there'}"]
    return Check("nothing-left", ok, lines, {"namespaces": namespaces, "alive": alive, "folder": folder,
                                            "weed_sockets_in_tmp": sockets})
