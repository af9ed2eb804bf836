"""The ``ftpkit`` command: thin; parses arguments, builds typed configuration, calls one entry point per part.

Usage errors are one line on stderr and exit code 2; no traceback for anything a user typed.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ftpkit import __version__

# Each command is imported when it is used, so ``ftpkit get`` does not pay for the analyzer, the lab and the server.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("ftpkit.cli.serve", "serve_command"),
    "user": ("ftpkit.cli.user", "user_group"),
    "ban": ("ftpkit.cli.ban", "ban_group"),
    "cert": ("ftpkit.cli.cert", "cert_command"),
    "get": ("ftpkit.cli.client", "get_command"),
    "put": ("ftpkit.cli.client", "put_command"),
    "ls": ("ftpkit.cli.client", "ls_command"),
    "mkdir": ("ftpkit.cli.client", "mkdir_command"),
    "rm": ("ftpkit.cli.client", "rm_command"),
    "rmdir": ("ftpkit.cli.client", "rmdir_command"),
    "mv": ("ftpkit.cli.client", "mv_command"),
    "mirror": ("ftpkit.cli.client", "mirror_command"),
    "shell": ("ftpkit.cli.shell", "shell_command"),
    "doctor": ("ftpkit.cli.doctor", "doctor_command"),
    "analyze": ("ftpkit.cli.analyze", "analyze_command"),
    "lab": ("ftpkit.cli.lab", "lab_group"),
}


# One-shot client commands: once one has finished and said everything, the process has nothing left to do, so the
# program exits without the interpreter's finalization (tens of milliseconds of freeing modules on every `ftpkit get`).
QUICK_EXIT = frozenset({"get", "put", "ls", "mkdir", "rm", "rmdir", "mv", "mirror"})


class LazyGroup(click.Group):
    invoked: str | None = None

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        LazyGroup.invoked = name
        return name, command, rest

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ftpkit")
def cli() -> None:
    """ftpkit: an FTP toolkit that makes FTP work and makes its failures obvious."""


def main(argv: list[str] | None = None) -> None:
    """The program (``argv`` None: ``sys.argv``), or a command line run in this process (``argv`` given)."""
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
    code = code if isinstance(code, int) else 0
    if argv is None and LazyGroup.invoked in QUICK_EXIT:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            sys.exit(code)  # a closed pipe: the interpreter's own exit says so, as before
        os._exit(code)
    sys.exit(code)
