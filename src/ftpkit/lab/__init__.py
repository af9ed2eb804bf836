"""``ftpkit lab``: reproduce the firewall and NAT failures of active and passive mode for real, in network
namespaces on this machine, captured and diagnosed.

One entry point, :func:`run_scenario` (``ftpkit lab run``); :func:`up` / :func:`down` keep a scenario running to
experiment by hand. The modules: ``topology`` (namespaces, veth pairs, addresses, routes), ``scenarios`` (the
declarative table), ``peers`` (server and client command lines, reading a client's output), ``processes``
(starting, readiness, stopping and reaping processes), ``runner`` (the order of a run: rules, server, captures,
transfers, doctor, analyzer), ``report`` (terminal and JSON).
"""

from ftpkit.lab.processes import LabError
from ftpkit.lab.runner import LabOptions, LabReport, TransferResult, down, run_scenario, state, up
from ftpkit.lab.scenarios import ACTIVE, PASSIVE, SCENARIOS, TRUSTING, Scenario
from ftpkit.lab.topology import HANDS_ON, Names, lab_namespaces, names_for_run, privilege_problem

__all__ = [
    "ACTIVE",
    "HANDS_ON",
    "PASSIVE",
    "SCENARIOS",
    "TRUSTING",
    "LabError",
    "LabOptions",
    "LabReport",
    "Names",
    "Scenario",
    "TransferResult",
    "down",
    "lab_namespaces",
    "names_for_run",
    "privilege_problem",
    "run_scenario",
    "state",
    "up",
]
