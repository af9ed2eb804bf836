"""``ftpkit shell [URL]``: the commands people know from BSD ``ftp``, on the ftpkit client.

Readline editing, history (~/.ftpkit_history) and tab completion of local and remote names on a terminal; reads
commands from standard input otherwise (``ftpkit shell -n ftp://host < script``), so it can be scripted like
``ftp -n``. Every failure is one line naming the connection, the mode and the server's reply; in a script, any
failed command makes the exit code 1.
"""

from __future__ import annotations

import cmd
import contextlib
import fnmatch
import getpass
import glob
import os
import posixpath
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

import click

from ftpkit.client.errors import FTPError
from ftpkit.client.options import ClientOptions
from ftpkit.client.session import credentials
from ftpkit.client.sync import Client
from ftpkit.client.url import URLError, parse_url
from ftpkit.protocol.errors import CommandError
from ftpkit.protocol.hashes import ALGORITHMS, normalize_algorithm
from ftpkit.protocol.modify import parse_mode, parse_time_val
from ftpkit.protocol.pathname import format_257_path

HISTORY = os.path.expanduser("~/.ftpkit_history")


class FTPShell(cmd.Cmd):
    intro = ""

    def __init__(self, interactive: bool, auto_login: bool, options: ClientOptions, out: Any = None) -> None:
        super().__init__(stdin=sys.stdin, stdout=out or sys.stdout)
        self.interactive = interactive
        self.use_rawinput = interactive
        self.prompt = "ftp> " if interactive else ""
        self.auto_login = auto_login
        self.base = options
        self.passive = options.passive
        self.epsv = options.epsv
        self.verbose = interactive
        self.debug = False
        self.hash = False
        self.prompting = interactive
        self.ascii = options.ascii
        self.client: Client | None = None
        self.host = ""
        self.failures = 0
        self._remote_cache: tuple[str, list[str]] | None = None
        self._last_verb = ""
        self._quiet = False  # while completing names: the listing is not the user's command

    # --- plumbing -------------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def fail(self, text: str) -> None:
        self.failures += 1
        self.say(text)

    def _transcript(self, direction: str, text: str) -> None:
        if self._quiet:
            return
        if direction == "-->":
            self._last_verb = text.split(" ", 1)[0]
        if direction == "<--" and self.verbose and (self.debug or self._last_verb not in ("FEAT", "OPTS")):
            self.say(text)
        elif direction == "-->" and self.debug:
            self.say(f"---> {text}")
        elif direction == "===" and self.debug:
            self.say(f"=== {text}")
        elif direction == "!!!":
            self.say(f"note: {text}")

    def options(self) -> ClientOptions:
        return replace(self.base, passive=self.passive, epsv=self.epsv, ascii=self.ascii, transcript=self._transcript)

    def need(self) -> Client | None:
        if self.client is None:
            self.fail("Not connected.")
        return self.client

    def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FTPError as exc:
            self.fail(str(exc))
        except OSError as exc:
            self.fail(f"local error: {exc}")
        return None

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> None:
        self.fail(f"?Invalid command: {line.split()[0]}")

    def onecmd(self, line: str) -> bool:
        line = line.strip()
        if not line or line.startswith("#"):
            return False
        if not self.interactive and self.debug:
            self.say(f"ftp> {line}")
        try:
            return bool(super().onecmd(line))  # the do_ method's result: None (as from default()) goes on
        except ValueError as exc:  # shlex on an unbalanced quote
            self.fail(f"?{exc}")
            return False

    @staticmethod
    def args(line: str) -> list[str]:
        return shlex.split(line)

    def _transfer_stats(self, count: int | None, started: float, verb: str) -> None:
        if count is None:
            return
        if self.hash:
            self.say("#" * max(1, count // 1024 // 16))
        elapsed = max(time.monotonic() - started, 1e-6)
        if self.verbose:
            self.say(f"{count} bytes {verb} in {elapsed:.2f} secs ({count / elapsed / 1024:.1f} KiB/s)")

    # --- connection -----------------------------------------------------------------------------------------
    def connect(self, target: str, port: str | None = None) -> None:
        try:
            url = parse_url(target if "://" in target else f"ftp://{target}" + (f":{port}" if port else ""))
        except URLError as exc:
            self.fail(f"?{exc}")
            return
        if self.client is not None:
            self.do_close("")
        client = Client(self.options())
        if self.run(client.connect, url.host, url.port) is None:
            client.close()
            return
        self.client = client
        self.host = url.host
        if self.auto_login:
            user, password = credentials(url)
            if url.user is None and self.interactive:
                name = input(f"Name ({url.host}:{getpass.getuser()}): ").strip() or getpass.getuser()
                user, password = name, ""
            if password == "" and self.interactive and user not in ("anonymous", "ftp"):
                password = getpass.getpass("Password: ")
            self.login(user, password)
        if url.path and self.client is not None and self.client.ftp.user is not None:
            self.run(self.client.cwd, url.path)

    def login(self, user: str, password: str) -> None:
        client = self.need()
        if client is None:
            return
        self.run(client.login, user, password)

    def do_open(self, line: str) -> None:
        """open host [port]: connect to an FTP server."""
        args = self.args(line)
        if not args:
            self.fail("usage: open host [port]")
            return
        self.connect(args[0], args[1] if len(args) > 1 else None)

    def do_user(self, line: str) -> None:
        """user name [password]: log in."""
        args = self.args(line)
        if not args:
            self.fail("usage: user name [password]")
            return
        password = args[1] if len(args) > 1 else (getpass.getpass("Password: ") if self.interactive else "")
        self.login(args[0], password)

    def do_close(self, line: str) -> None:
        """close: end the session and stay in the shell."""
        if self.client is not None:
            with contextlib.suppress(FTPError):
                self.client.close()
            self.client = None
            self._remote_cache = None

    do_disconnect = do_close

    def do_bye(self, line: str) -> bool:
        """bye: end the session and leave."""
        self.do_close("")
        return True

    do_quit = do_exit = do_bye

    def do_EOF(self, line: str) -> bool:
        if self.interactive:
            self.say("")
        return self.do_bye("")

    # --- settings -------------------------------------------------------------------------------------------
    def _toggle(self, name: str, line: str) -> bool:
        arg = line.strip().lower()
        value = getattr(self, name)
        value = True if arg == "on" else False if arg == "off" else not value
        setattr(self, name, value)
        return value

    def _apply(self) -> None:
        if self.client is not None:
            self.client.ftp.options = self.options()
            self.client.ftp.control.options = self.client.ftp.options

    def do_passive(self, line: str) -> None:
        """passive [on|off]: toggle passive mode (off = active)."""
        self.say(f"Passive mode: {'on' if self._toggle('passive', line) else 'off'}.")
        self._apply()

    def do_epsv(self, line: str) -> None:
        """epsv [on|off]: try EPSV/EPRT before PASV/PORT."""
        self.say(f"EPSV/EPRT: {'on' if self._toggle('epsv', line) else 'off'}.")
        self.base = replace(self.base, eprt=self.epsv)
        self._apply()

    def do_verbose(self, line: str) -> None:
        """verbose [on|off]: show the server's replies."""
        self.say(f"Verbose mode: {'on' if self._toggle('verbose', line) else 'off'}.")

    def do_debug(self, line: str) -> None:
        """debug [on|off]: also show the commands sent and the data connections."""
        self.say(f"Debugging: {'on' if self._toggle('debug', line) else 'off'}.")

    def do_hash(self, line: str) -> None:
        """hash [on|off]: print # marks for transfers; hash FILE [ALGORITHM]: the server's digest of FILE (HASH,
        else XSHA256/XSHA1/XMD5/XCRC; the best algorithm both sides have unless one is named)."""
        args = self.args(line)
        if not args or (len(args) == 1 and args[0].lower() in ("on", "off")):
            self.say(f"Hash mark printing: {'on' if self._toggle('hash', line) else 'off'}.")
            return
        if len(args) > 2:
            self.fail("usage: hash FILE [ALGORITHM]")
            return
        algorithm = None
        if len(args) == 2:
            algorithm = normalize_algorithm(args[1])
            if algorithm is None:
                self.fail(f"?{args[1]}: not a hash algorithm (one of {', '.join(ALGORITHMS)})")
                return
        client = self.need()
        if client is not None:
            result = self.run(client.remote_hash, args[0], algorithm)
            if result is not None:
                self.say(f"{result.algorithm} ({args[0]}) = {result.digest}")

    def do_chmod(self, line: str) -> None:
        """chmod MODE FILE: set a remote file's permission bits (SITE CHMOD; octal 000-777)."""
        args = self.args(line)
        if len(args) != 2:
            self.fail("usage: chmod MODE FILE (MODE octal, e.g. 644)")
            return
        try:
            mode = parse_mode(args[0])
        except CommandError as exc:
            self.fail(f"?chmod: {exc}")
            return
        self._simple("chmod", args[1], mode)

    def do_touch(self, line: str) -> None:
        """touch FILE [YYYYMMDDHHMMSS]: set a remote file's modification time (MFMT; UTC, now by default)."""
        args = self.args(line)
        if len(args) not in (1, 2):
            self.fail("usage: touch FILE [YYYYMMDDHHMMSS]")
            return
        try:
            mtime = parse_time_val(args[1]) if len(args) == 2 else time.time()
        except CommandError as exc:
            self.fail(f"?touch: {exc}")
            return
        client = self.need()
        if client is not None and self.run(client.set_mtime, args[0], mtime) is not None and not self.verbose:
            self.say(f"{args[0]}\t{time.strftime('%m/%d/%Y %H:%M:%S GMT', time.gmtime(mtime))}")

    do_utime = do_touch

    def do_df(self, line: str) -> None:
        """df [DIR]: bytes free for uploads in a remote directory (AVBL)."""
        args = self.args(line)
        client = self.need()
        if client is not None:
            free = self.run(client.available, args[0] if args else "")
            if free is not None:
                self.say(f"{args[0] if args else '.'}\t{free} bytes available ({free / (1 << 30):.1f} GiB)")

    def do_prompt(self, line: str) -> None:
        """prompt [on|off]: ask before each file of mget/mput/mdelete."""
        self.say(f"Interactive mode: {'on' if self._toggle('prompting', line) else 'off'}.")

    def do_ascii(self, line: str) -> None:
        """ascii: TYPE A (convert line endings)."""
        self.ascii = True
        self._apply()
        self.say("Type set to A.")

    def do_binary(self, line: str) -> None:
        """binary: TYPE I (bytes as they are)."""
        self.ascii = False
        self._apply()
        self.say("Type set to I.")

    do_image = do_binary

    def do_type(self, line: str) -> None:
        """type [ascii|binary]: show or set the transfer type."""
        arg = line.strip().lower()
        if arg in ("ascii", "a"):
            self.do_ascii("")
        elif arg in ("binary", "image", "i"):
            self.do_binary("")
        elif not arg:
            self.say(f"Using {'ascii' if self.ascii else 'binary'} mode to transfer files.")
        else:
            self.fail(f"{arg}: unknown type (ascii or binary)")

    def do_status(self, line: str) -> None:
        """status: what this shell is connected to and how it transfers."""
        if self.client is not None:
            ctl = self.client.ftp.control
            self.say(f"Connected to {self.host} ({ctl.peer_ip}:{ctl.port}) as {self.client.ftp.user or '-'}.")
        else:
            self.say("Not connected.")
        self.say(f"Mode: {'passive' if self.passive else 'active'}; EPSV/EPRT: {'on' if self.epsv else 'off'}; "
                 f"type: {'ascii' if self.ascii else 'binary'}; verbose: {'on' if self.verbose else 'off'}; "
                 f"hash: {'on' if self.hash else 'off'}; prompt: {'on' if self.prompting else 'off'}.")

    # --- navigation and files -------------------------------------------------------------------------------
    def _simple(self, method: str, *args: Any) -> None:
        client = self.need()
        if client is not None:
            self.run(getattr(client, method), *args)
            self._remote_cache = None

    def do_cd(self, line: str) -> None:
        """cd dir: change the remote directory."""
        self._simple("cwd", line.strip() or "/")

    def do_cdup(self, line: str) -> None:
        """cdup: go to the parent remote directory."""
        self._simple("cdup")

    def do_pwd(self, line: str) -> None:
        """pwd: print the remote directory."""
        client = self.need()
        if client is not None:
            path = self.run(client.pwd)
            if path is not None and not self.verbose:
                self.say(f"{format_257_path(path)} is the current directory.")

    def do_lcd(self, line: str) -> None:
        """lcd [dir]: change the local directory."""
        target = os.path.expanduser(line.strip() or "~")
        try:
            os.chdir(target)
        except OSError as exc:
            self.fail(f"local: {target}: {exc.strerror}")
            return
        self.say(f"Local directory now {os.getcwd()}")

    def do_lpwd(self, line: str) -> None:
        """lpwd: print the local directory."""
        self.say(f"Local directory {os.getcwd()}")

    def do_mkdir(self, line: str) -> None:
        """mkdir dir: create a remote directory."""
        self._simple("mkdir", line.strip())

    def do_rmdir(self, line: str) -> None:
        """rmdir dir: remove a remote directory."""
        self._simple("rmdir", line.strip())

    def do_delete(self, line: str) -> None:
        """delete file: delete a remote file."""
        self._simple("delete", line.strip())

    def do_rename(self, line: str) -> None:
        """rename from to: rename a remote file."""
        args = self.args(line)
        if len(args) != 2:
            self.fail("usage: rename from to")
            return
        self._simple("rename", args[0], args[1])

    def do_size(self, line: str) -> None:
        """size file: the remote file's size."""
        client = self.need()
        if client is not None:
            size = self.run(client.size, line.strip())
            if size is not None and not self.verbose:
                self.say(f"{line.strip()}\t{size}")

    def do_modtime(self, line: str) -> None:
        """modtime file: the remote file's modification time."""
        client = self.need()
        if client is not None:
            mtime = self.run(client.mdtm, line.strip())
            if mtime is not None:
                self.say(f"{line.strip()}\t{time.strftime('%m/%d/%Y %H:%M:%S GMT', time.gmtime(mtime))}")

    def do_quote(self, line: str) -> None:
        """quote LINE: send LINE as a command and show the reply."""
        client = self.need()
        if client is not None:
            reply = self.run(client.raw, line)
            if reply is not None and reply.is_error:
                self.failures += 1

    do_literal = do_quote

    # --- listings ---------------------------------------------------------------------------------------------
    def _listing(self, verb: str, line: str) -> None:
        client = self.need()
        if client is None:
            return
        args = self.args(line)
        text = self.run(client.listing_text, args[0] if args else "", verb)
        if text is None:
            return
        if len(args) > 1:
            with open(args[1], "w", encoding="utf-8", errors="surrogateescape") as fh:
                fh.write(text)
        else:
            self.stdout.write(text)
            self.stdout.flush()

    def do_ls(self, line: str) -> None:
        """ls [path [localfile]]: list names (NLST)."""
        self._listing("NLST", line)

    def do_nlist(self, line: str) -> None:
        """nlist [path]: list names (NLST)."""
        self._listing("NLST", line)

    def do_dir(self, line: str) -> None:
        """dir [path [localfile]]: long listing (LIST)."""
        self._listing("LIST", line)

    # --- transfers --------------------------------------------------------------------------------------------
    def _get(self, remote: str, local: str, resume: bool = False) -> None:
        client = self.need()
        if client is None:
            return
        if self.verbose:
            self.say(f"local: {local} remote: {remote}")
        started = time.monotonic()
        count = self.run(client.download, remote, local, resume)
        self._transfer_stats(count, started, "received")

    def _put(self, local: str, remote: str, append: bool = False) -> None:
        client = self.need()
        if client is None:
            return
        if self.verbose:
            self.say(f"local: {local} remote: {remote}")
        started = time.monotonic()
        if append:
            try:
                fh = open(local, "rb")  # noqa: SIM115
            except OSError as exc:
                self.fail(f"local: {local}: {exc.strerror}")
                return
            with fh:
                count = self.run(client.store, remote, fh, 0, True)
        else:
            if not os.path.isfile(local):
                self.fail(f"local: {local}: No such file")
                return
            count = self.run(client.upload, local, remote)
        self._remote_cache = None
        self._transfer_stats(count, started, "sent")

    def do_get(self, line: str) -> None:
        """get remote [local]: download a file."""
        args = self.args(line)
        if not args:
            self.fail("usage: get remote [local]")
            return
        self._get(args[0], args[1] if len(args) > 1 else posixpath.basename(args[0]))

    do_recv = do_get

    def do_reget(self, line: str) -> None:
        """reget remote [local]: continue a partial download."""
        args = self.args(line)
        if not args:
            self.fail("usage: reget remote [local]")
            return
        self._get(args[0], args[1] if len(args) > 1 else posixpath.basename(args[0]), resume=True)

    def do_put(self, line: str) -> None:
        """put local [remote]: upload a file."""
        args = self.args(line)
        if not args:
            self.fail("usage: put local [remote]")
            return
        self._put(args[0], args[1] if len(args) > 1 else os.path.basename(args[0]))

    do_send = do_put

    def do_append(self, line: str) -> None:
        """append local [remote]: append a local file to a remote one."""
        args = self.args(line)
        if not args:
            self.fail("usage: append local [remote]")
            return
        self._put(args[0], args[1] if len(args) > 1 else os.path.basename(args[0]), append=True)

    def _confirm(self, verb: str, name: str) -> bool:
        if not self.prompting:
            return True
        answer = input(f"{verb} {name}? ").strip().lower()
        return answer in ("", "y", "yes")

    def _remote_glob(self, pattern: str) -> list[str]:
        client = self.need()
        if client is None:
            return []
        if not any(c in pattern for c in "*?["):
            return [pattern]
        names = self.run(client.nlst, posixpath.dirname(pattern)) or []
        base = posixpath.basename(pattern)
        directory = posixpath.dirname(pattern)
        return [posixpath.join(directory, posixpath.basename(n)) if directory else posixpath.basename(n)
                for n in names if fnmatch.fnmatchcase(posixpath.basename(n), base)]

    def do_mget(self, line: str) -> None:
        """mget pattern...: download the remote files that match."""
        for pattern in self.args(line):
            matches = self._remote_glob(pattern)
            if not matches:
                self.fail(f"{pattern}: no remote files match")
            for name in matches:
                if self._confirm("mget", name):
                    self._get(name, posixpath.basename(name))

    def do_mput(self, line: str) -> None:
        """mput pattern...: upload the local files that match."""
        for pattern in self.args(line):
            matches = sorted(p for p in glob.glob(os.path.expanduser(pattern)) if os.path.isfile(p))
            if not matches:
                self.fail(f"{pattern}: no local files match")
            for name in matches:
                if self._confirm("mput", name):
                    self._put(name, os.path.basename(name))

    def do_mdelete(self, line: str) -> None:
        """mdelete pattern...: delete the remote files that match."""
        for pattern in self.args(line):
            for name in self._remote_glob(pattern):
                if self._confirm("mdelete", name):
                    self._simple("delete", name)

    # --- local commands, help, completion ---------------------------------------------------------------------
    def do_shell(self, line: str) -> None:
        """!command: run a local shell command."""
        result = subprocess.run(line or os.environ.get("SHELL", "/bin/sh"), shell=True, check=False)
        if result.returncode:
            self.failures += 1

    def do_help(self, arg: str) -> None:
        """help [command]: list commands or describe one."""
        if arg:
            func = getattr(self, f"do_{arg}", None)
            self.say(func.__doc__ if func and func.__doc__ else f"?Invalid help command {arg}")
            return
        names = sorted(name[3:] for name in self.get_names() if name.startswith("do_") and name != "do_EOF")
        self.say("Commands may be abbreviated.  Commands are:")
        for i in range(0, len(names), 6):
            self.say("".join(f"{n:<13}" for n in names[i:i + 6]).rstrip())

    def _remote_names(self) -> list[str]:
        if self.client is None:
            return []
        self._quiet = True
        try:
            cwd = self.client.pwd()
            if self._remote_cache is None or self._remote_cache[0] != cwd:
                entries = self.client.listdir("")
                self._remote_cache = (cwd, [e.name + ("/" if e.is_dir else "") for e in entries])
        except FTPError:
            return []
        finally:
            self._quiet = False
        return self._remote_cache[1]

    def _complete_remote(self, text: str, *ignored: Any) -> list[str]:
        return [n for n in self._remote_names() if n.startswith(text)]

    def _complete_local(self, text: str, *ignored: Any) -> list[str]:
        return [p + ("/" if os.path.isdir(p) else "") for p in glob.glob(os.path.expanduser(text) + "*")]

    complete_get = complete_reget = complete_mget = complete_delete = complete_mdelete = _complete_remote
    complete_cd = complete_ls = complete_dir = complete_size = complete_modtime = complete_rename = _complete_remote
    complete_rmdir = complete_hash = complete_touch = complete_utime = complete_df = _complete_remote

    def complete_chmod(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self._complete_remote(text) if len(line[:begidx].split()) >= 2 else []
    complete_put = complete_mput = complete_append = complete_lcd = _complete_local

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [name for name in super().completenames(text, *ignored) if name != "EOF"]


def _setup_readline() -> None:
    try:
        import readline
    except ImportError:
        return
    with contextlib.suppress(OSError):
        readline.read_history_file(HISTORY)
    readline.set_history_length(1000)
    readline.set_completer_delims(" \t\n")
    import atexit

    def save() -> None:
        with contextlib.suppress(OSError):
            readline.write_history_file(HISTORY)

    atexit.register(save)


@click.command("shell")
@click.argument("url", required=False)
@click.option("-n", "no_login", is_flag=True, help="no auto-login: log in with the `user` command")
@click.option("--passive/--active", "passive", default=True, help="start in passive (default) or active mode")
@click.option("--encoding", default="utf-8", show_default=True, help="file names and replies (shift_jis, cp932...)")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("-v", "--verbose", is_flag=True, help="show replies also when reading a script")
@click.option("-d", "--debug", is_flag=True, help="show commands sent and data connections")
def shell_command(url: str | None, no_login: bool, passive: bool, encoding: str, timeout: float, verbose: bool,
                  debug: bool) -> None:
    """An interactive FTP shell in the tradition of BSD ftp (reads a script from stdin when it is not a terminal)."""
    interactive = sys.stdin.isatty()
    try:
        options = ClientOptions(passive=passive, encoding=encoding, timeout=timeout)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    shell = FTPShell(interactive, auto_login=not no_login, options=options)
    shell.verbose = shell.verbose or verbose
    shell.debug = debug
    if interactive:
        _setup_readline()
    if url:
        shell.connect(url)
    try:
        shell.cmdloop()
    except KeyboardInterrupt:
        shell.say("")
    finally:
        shell.do_close("")
    sys.exit(1 if shell.failures and not interactive else 0)
