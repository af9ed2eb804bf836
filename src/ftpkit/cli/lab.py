"""``ftpkit lab list|run|up|exec|down``: firewall and NAT failures of active and passive mode, for real, in network
namespaces. ``run`` exits 0 when the scenario behaved as expected, 1 when not, 2 when the lab could not be built
(no privileges, a lab already up, a program missing)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ftpkit.diagnosis import catalog, choose_language
from ftpkit.lab import (
    SCENARIOS,
    LabError,
    LabOptions,
    down,
    lab_namespaces,
    privilege_problem,
    run_scenario,
    state,
    up,
)
from ftpkit.lab.peers import CLIENTS, SERVERS
from ftpkit.lab.processes import in_namespace
from ftpkit.lab.report import list_scenarios, render, to_json
from ftpkit.lab.topology import HANDS_ON, ROLES

LANG = click.option("--lang", type=click.Choice(["en", "ja"]), help="language (default: from LANG)")


def _fail(message: str) -> None:
    click.echo(f"ftpkit lab: {message}", err=True)
    sys.exit(2)


def _need_privileges() -> None:
    problem = privilege_problem()
    if problem:
        _fail(problem)


@click.group("lab")
def lab_group() -> None:
    """Reproduce firewall and NAT failures of active and passive mode for real: client, router and server in
    network namespaces (198.18.0.0/15 only), the scenario's iptables rules, real transfers, a capture on the router,
    the doctor and the analyzer. Needs root."""


@lab_group.command("list")
@LANG
def list_command(lang: str | None) -> None:
    """The scenarios, each with what it shows."""
    language = choose_language(lang)
    console = Console(highlight=False, soft_wrap=True)
    list_scenarios(console, language)
    console.print(f"{'cluster'.ljust(max(map(len, SCENARIOS)))}  {catalog(language).text('lab', 'cluster-summary')}",
                  markup=False)


@lab_group.command("run")
@click.argument("scenario", type=click.Choice([*SCENARIOS, "cluster"]), metavar="SCENARIO")
@click.option("--mode", type=click.Choice(["both", "active", "passive"]), default="both", show_default=True,
              help="which data connection modes to try")
@click.option("--server", type=click.Choice(SERVERS), default="ftpkit", show_default=True,
              help="the server in the server namespace")
@click.option("--client", type=click.Choice(CLIENTS), default="ftpkit", show_default=True,
              help="the client in the client namespace")
@click.option("--capture", metavar="FILE.pcap", type=click.Path(dir_okay=False),
              help="keep the router's captures as FILE-client-side.pcap and FILE-server-side.pcap")
@click.option("--timeout", default=2.0, show_default=True, type=click.FloatRange(0.5, 60),
              help="the server's data connection timeouts (the client waits one second more)")
@click.option("--doctor-timeout", default=1.0, show_default=True, type=click.FloatRange(0.2, 30),
              help="the doctor's timeout for each step")
@click.option("--no-doctor", is_flag=True, help="do not run the doctor")
@click.option("--live", is_flag=True, help="also run `ftpkit analyze --live` on the router during the transfers, "
                                           "its findings beside those of the capture files")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@LANG
def run_command(scenario: str, mode: str, server: str, client: str, capture: str | None, timeout: float,
                doctor_timeout: float, no_doctor: bool, live: bool, as_json: bool, lang: str | None) -> None:
    """Build SCENARIO, run transfers in both modes, diagnose them, and remove everything again."""
    _need_privileges()
    language = choose_language(lang)
    if scenario == "cluster":
        given = [flag for flag, used in (("--mode", mode != "both"), ("--server", server != "ftpkit"),
                                         ("--client", client != "ftpkit"), ("--capture", capture is not None),
                                         ("--no-doctor", no_doctor), ("--live", live)) if used]
        if given:
            _fail(f"{', '.join(given)}: not for the cluster scenario (ftpkit nodes and clients, its own checks); "
                  "it takes --timeout, --json and --lang")
        _run_cluster(timeout, as_json, language)
    modes = ("active", "passive") if mode == "both" else (mode,)
    options = LabOptions(modes=modes, server=server, client=client, timeout=timeout, doctor=not no_doctor,
                         doctor_timeout=doctor_timeout, capture=Path(capture) if capture else None, lang=language,
                         live=live)
    _report(lambda: run_scenario(SCENARIOS[scenario], options), to_json, render, as_json, language)


def _report(run: Callable[[], Any], as_json_of: Callable[[Any, str], Any], show: Callable[[Any, Console, str], None],
            as_json: bool, language: str) -> None:
    """Run a lab, print its report (JSON or the terminal's) and exit: 0 as expected, 1 not, 2 a lab error."""
    try:
        report = run()
    except LabError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        click.echo("ftpkit lab: interrupted; everything it started was removed", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(as_json_of(report, language), ensure_ascii=False, indent=2))
    else:
        show(report, Console(highlight=False), language)
    sys.exit(0 if report.as_expected else 1)


def _run_cluster(timeout: float, as_json: bool, language: str) -> None:
    """``run cluster``: its own programs and checks (--server, --client, --mode, --capture do not apply)."""
    from ftpkit.lab.cluster import run_cluster
    from ftpkit.lab.cluster_report import render as render_cluster
    from ftpkit.lab.cluster_report import to_json as cluster_json

    _report(lambda: run_cluster(timeout), cluster_json, render_cluster, as_json, language)


@lab_group.command("up")
@click.argument("scenario", type=click.Choice(list(SCENARIOS)), metavar="SCENARIO")
@click.option("--server", type=click.Choice(SERVERS), default="ftpkit", show_default=True)
@click.option("--timeout", default=2.0, show_default=True, type=click.FloatRange(0.5, 60),
              help="the server's data connection timeouts")
@LANG
def up_command(scenario: str, server: str, timeout: float, lang: str | None) -> None:
    """Build SCENARIO and leave it running with a server, to experiment with `ftpkit lab exec`."""
    _need_privileges()
    language = choose_language(lang)
    try:
        info = up(SCENARIOS[scenario], server, timeout)
    except LabError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        click.echo("ftpkit lab: interrupted; everything it started was removed", err=True)
        sys.exit(130)
    target = info["target"]
    tls = f" --tls --ca-file {info['ca_file']}" if info.get("ca_file") else ""
    click.echo(catalog(language).text("lab", "up", scenario=scenario))
    click.echo(f"  ftpkit lab exec client -- ftpkit ls -v --active --no-eprt{tls} ftp://{target}/")
    click.echo(f"  ftpkit lab exec client -- ftpkit doctor{tls} ftp://{target}/")
    click.echo("  ftpkit lab exec router -- tcpdump -ni to-server port 21")
    click.echo("  ftpkit lab exec router -- iptables-save")
    click.echo("  ftpkit lab down")


@lab_group.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("where", type=click.Choice(ROLES), metavar="client|router|server")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(where: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside the namespace of the client, the router or the server of the lab that is up."""
    _need_privileges()
    namespace = HANDS_ON[where]
    if command[:1] == ("--",):
        command = command[1:]
    if not command:
        raise click.UsageError("no COMMAND given: ftpkit lab exec client -- COMMAND [ARGS]...")
    if namespace not in lab_namespaces(HANDS_ON):
        _fail("no lab is up: start one with `ftpkit lab up SCENARIO`")
    argv = in_namespace(namespace, list(command))
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        _fail(f"{command[0]}: {exc.strerror or exc}")


@lab_group.command("down")
@LANG
def down_command(lang: str | None) -> None:
    """Remove the hands-on lab and the leftovers of interrupted runs, with every rule and process inside."""
    _need_privileges()
    language = choose_language(lang)
    running = state()
    removed = down()
    if removed:
        scenario = f" ({running['scenario']})" if running else ""
        click.echo(catalog(language).text("lab", "down", names=", ".join(removed)) + scenario)
    else:
        click.echo(catalog(language).text("lab", "down-nothing"))
    busy = lab_namespaces()
    if busy:
        click.echo(catalog(language).text("lab", "down-running", names=", ".join(busy)))
