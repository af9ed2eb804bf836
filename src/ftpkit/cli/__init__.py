"""The ``ftpkit`` command: thin; parses arguments, builds typed configuration, calls one entry point per part.

Usage errors are one line on stderr and exit code 2; no traceback for anything a user typed.
"""

from __future__ import annotations

import sys

import click

from ftpkit import __version__
from ftpkit.cli.analyze import analyze_command
from ftpkit.cli.cert import cert_command
from ftpkit.cli.client import COMMANDS as CLIENT_COMMANDS
from ftpkit.cli.doctor import doctor_command
from ftpkit.cli.lab import lab_group
from ftpkit.cli.serve import serve_command
from ftpkit.cli.shell import shell_command
from ftpkit.cli.user import user_group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ftpkit")
def cli() -> None:
    """ftpkit: an FTP toolkit that makes FTP work and makes its failures obvious."""


cli.add_command(serve_command)
cli.add_command(user_group)
cli.add_command(shell_command)
cli.add_command(doctor_command)
cli.add_command(cert_command)
cli.add_command(analyze_command)
cli.add_command(lab_group)
for _command in CLIENT_COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="ftpkit", standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "ftpkit"
        click.echo(f"{where}: {exc.format_message()} (see --help)", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"ftpkit: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("ftpkit: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
