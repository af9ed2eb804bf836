"""Event hooks: a command (argv, never a shell) and/or an HTTP POST of a JSON document when something happens.

Events: ``upload`` and ``download`` (complete), ``delete``, ``rename``, ``mkdir``, ``rmdir``, ``login-failed``,
and ``pre-upload`` (before an upload starts: a hook that exits non-zero, or a URL that answers other than 2xx,
refuses it with 550 and the first line of its output as the reason).

A command gets the event's fields in environment variables in the style of pure-ftpd's uploadscript
(``FTPKIT_EVENT``, ``FTPKIT_USER``, ``FTPKIT_PATH``, ``FTPKIT_LOCAL_PATH``, ``FTPKIT_SIZE``, ``FTPKIT_CLIENT_IP``,
``FTPKIT_MODE``, ...), and ``{path}``, ``{local_path}``, ... in its arguments are replaced by them (inside one
argument each: no shell ever reads them). A URL gets the same fields as one JSON object.

Hooks after the fact never hold up the session: they run in tasks of their own, at most ``concurrency`` at once,
each within its timeout (a command is then killed), at most :data:`MAX_PENDING` waiting (more are dropped);
failures are logged and counted. A pre-upload hook is waited for, within its timeout (an upload whose check does
not answer gets 451).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("ftpkit.server")

EVENTS = ("upload", "download", "delete", "rename", "mkdir", "rmdir", "login-failed", "pre-upload")
MAX_PENDING = 1000  # hooks after the fact waiting or running at once; beyond, an event's hook is dropped
OUTPUT_LIMIT = 4096  # bytes of a command's output kept (for the log and a refusal's reason)
DEFAULT_TIMEOUT = 30.0
FIELDS = ("event", "user", "anonymous", "client_ip", "session", "path", "local_path", "from", "size", "mode",
          "method", "seconds", "reason", "time")


class HookError(ValueError):
    """A hook that is not configured right: ``field`` (``hooks[2].event``) and the one-line message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class HookSpec:
    event: str
    command: tuple[str, ...] = ()
    url: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def describe(self) -> str:
        return shlex.join(self.command) if self.command else str(self.url)


def _url(field: str, value: Any) -> str:
    text = str(value)
    if not text.startswith(("http://", "https://")) or len(text) < 10 or any(c.isspace() for c in text):
        raise HookError(field, f"{text!r} is not an http:// or https:// URL")
    return text


def _command(field: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise HookError(field, f"{value!r}: {exc}") from None
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        argv = list(value)
    else:
        raise HookError(field, "must be a list of strings (the program and its arguments; no shell)")
    if not argv or not argv[0]:
        raise HookError(field, "must name a program")
    return tuple(argv)


def parse_hook(index: int, value: Any) -> HookSpec:
    """One ``[[hooks]]`` table (or ``EVENT:COMMAND``/``EVENT:URL`` from ``--hook``) -> :class:`HookSpec`."""
    where = f"hooks[{index}]"
    if isinstance(value, HookSpec):
        return value
    if isinstance(value, str):
        name, colon, rest = value.partition(":")
        if not colon or not rest.strip():
            raise HookError(where, f"{value!r} is not EVENT:COMMAND or EVENT:URL")
        value = {"event": name.strip(), "url" if rest.strip().startswith(("http://", "https://")) else "command":
                 rest.strip()}
    if not isinstance(value, Mapping):
        raise HookError(where, "must be a table with event and command or url")
    unknown = set(value) - {"event", "command", "url", "timeout"}
    if unknown:
        raise HookError(f"{where}.{sorted(unknown)[0]}", "unknown key; a hook has event, command, url, timeout")
    event = value.get("event")
    if event not in EVENTS:
        raise HookError(f"{where}.event", f"{event!r} is not one of {', '.join(EVENTS)}")
    command = _command(f"{where}.command", value["command"]) if "command" in value else ()
    url = _url(f"{where}.url", value["url"]) if "url" in value else None
    if not command and url is None:
        raise HookError(where, "needs a command or a url")
    if command and url is not None and event == "pre-upload":
        raise HookError(where, "a pre-upload hook has a command or a url, not both")
    raw = value.get("timeout", DEFAULT_TIMEOUT)
    try:
        timeout = float(raw)
    except (TypeError, ValueError):
        raise HookError(f"{where}.timeout", f"{raw!r} is not a number of seconds") from None
    if isinstance(raw, bool) or not 0.1 <= timeout <= 3600:
        raise HookError(f"{where}.timeout", f"{raw!r} is not within 0.1-3600 seconds")
    return HookSpec(str(event), command, url, timeout)


def environment(fields: Mapping[str, str]) -> dict[str, str]:
    """The server's environment and ``FTPKIT_<FIELD>`` for each field (``from`` is ``FTPKIT_FROM``)."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("FTPKIT_"):
            del env[key]  # only this event's fields
    env.update({f"FTPKIT_{key.upper()}": value for key, value in fields.items()})
    return env


def arguments(command: tuple[str, ...], fields: Mapping[str, str]) -> list[str]:
    """``{path}``, ``{local_path}``, ... replaced inside each argument (unknown names stay as they are)."""
    out = []
    for arg in command:
        for key in FIELDS:
            arg = arg.replace("{" + key + "}", fields.get(key, ""))
        out.append(arg)
    return out


def document(fields: Mapping[str, str]) -> bytes:
    data: dict[str, object] = dict(fields)
    for key in ("size",):
        if key in data:
            with contextlib.suppress(ValueError):
                data[key] = int(fields[key])
    if "anonymous" in data:
        data["anonymous"] = fields["anonymous"] == "true"
    return json.dumps(data, ensure_ascii=False).encode("utf-8")


class Counts(Protocol):
    def hook_done(self, event: str, result: str, seconds: float) -> None: ...


@dataclass
class Outcome:
    result: str  # ok | failed | timeout | refused
    detail: str  # the first line of the output, or what went wrong


class Hooks:
    """Runs the configured hooks; built once per server, used on its event loop."""

    def __init__(self, specs: tuple[HookSpec, ...], concurrency: int, counts: Counts | None = None) -> None:
        self.specs: dict[str, list[HookSpec]] = {}
        for spec in specs:
            self.specs.setdefault(spec.event, []).append(spec)
        self.concurrency = concurrency
        self.counts = counts
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: ThreadPoolExecutor | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def wanted(self, event: str) -> bool:
        return event in self.specs

    def fire(self, event: str, fields: Mapping[str, str]) -> None:
        """Run the hooks of ``event`` in the background (never waits)."""
        for spec in self.specs.get(event, ()):
            if len(self._tasks) >= MAX_PENDING:
                log.warning("hook %s (%s) dropped: %d hooks waiting or running already", event, spec.describe(),
                            len(self._tasks))
                self._count(event, "dropped", 0.0)
                continue
            task = asyncio.get_running_loop().create_task(self._background(spec, dict(fields)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def check(self, fields: Mapping[str, str]) -> str | None:
        """The pre-upload hooks, in order: the reason of the first refusal, or ``None`` when all allow it.
        :class:`TimeoutError` when one did not answer in time or could not run."""
        for spec in self.specs.get("pre-upload", ()):
            outcome = await self._run(spec, dict(fields))
            if outcome.result == "refused":
                return outcome.detail or "refused by the server's upload check"
            if outcome.result != "ok":
                raise TimeoutError(outcome.detail)
        return None

    async def close(self, grace: float) -> None:
        """Wait for running hooks within ``grace`` seconds, then stop them."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._http is not None:
            self._http.shutdown(wait=False, cancel_futures=True)

    # --- running one hook ------------------------------------------------------------------------------------
    def _count(self, event: str, result: str, seconds: float) -> None:
        if self.counts is not None:
            self.counts.hook_done(event, result, seconds)

    async def _background(self, spec: HookSpec, fields: dict[str, str]) -> None:
        await self._run(spec, fields)

    async def _run(self, spec: HookSpec, fields: dict[str, str]) -> Outcome:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            began = time.monotonic()
            try:
                if spec.command:
                    outcome = await self._run_command(spec, fields)
                else:
                    outcome = await self._post(spec, fields)
            except asyncio.CancelledError:
                self._count(spec.event, "failed", time.monotonic() - began)
                raise
            seconds = time.monotonic() - began
        self._count(spec.event, outcome.result, seconds)
        if outcome.result in ("failed", "timeout"):
            log.warning("hook %s (%s) %s after %.3f s: %s", spec.event, spec.describe(), outcome.result, seconds,
                        outcome.detail, extra={"hook": {"event": spec.event, "result": outcome.result,
                                                        "seconds": round(seconds, 6), "detail": outcome.detail}})
        else:
            log.debug("hook %s (%s) %s in %.3f s", spec.event, spec.describe(), outcome.result, seconds)
        return outcome

    async def _run_command(self, spec: HookSpec, fields: dict[str, str]) -> Outcome:
        argv = arguments(spec.command, fields)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=environment(fields), start_new_session=True)
        except OSError as exc:
            return Outcome("failed", f"cannot run {argv[0]}: {exc.strerror or exc}")
        assert proc.stdout is not None
        try:
            output = await asyncio.wait_for(_read_bounded(proc.stdout), spec.timeout)
            code = await asyncio.wait_for(proc.wait(), spec.timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            _kill(proc)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return Outcome("timeout", f"no end within {spec.timeout:g} s: killed")
        first = _first_line(output)
        if code == 0:
            return Outcome("ok", first)
        if spec.event == "pre-upload":
            return Outcome("refused", first)
        return Outcome("failed", f"exit {code}" + (f": {first}" if first else ""))

    async def _post(self, spec: HookSpec, fields: dict[str, str]) -> Outcome:
        assert spec.url is not None
        if self._http is None:
            self._http = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="ftpkit-hook")
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._http, self._post_blocking, spec.url, document(fields), spec.timeout)
        try:
            status, body = await asyncio.wait_for(asyncio.shield(job), spec.timeout + 1)
        except TimeoutError:
            return Outcome("timeout", f"no answer from {spec.url} within {spec.timeout:g} s")
        if status == 0:
            return Outcome("timeout" if "timed out" in body else "failed", body)
        if 200 <= status < 300:
            return Outcome("ok", _first_line(body.encode()))
        if spec.event == "pre-upload" and 400 <= status < 500:
            return Outcome("refused", _first_line(body.encode()))
        return Outcome("failed", f"HTTP {status}" + (f": {_first_line(body.encode())}" if body else ""))

    def _post_blocking(self, url: str, body: bytes, timeout: float) -> tuple[int, str]:
        """(HTTP status, body text) or (0, what went wrong); in a worker thread."""
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "ftpkit"})
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return response.status, response.read(OUTPUT_LIMIT).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            with contextlib.suppress(Exception):
                return exc.code, exc.read(OUTPUT_LIMIT).decode("utf-8", "replace")
            return exc.code, ""
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return 0, f"POST {url}: {reason}"


async def _read_bounded(stream: asyncio.StreamReader) -> bytes:
    """The first :data:`OUTPUT_LIMIT` bytes of the output; the rest is read and dropped (the hook never blocks
    on a full pipe)."""
    kept = bytearray()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(kept)
        if len(kept) < OUTPUT_LIMIT:
            kept += chunk[:OUTPUT_LIMIT - len(kept)]


def _first_line(output: bytes) -> str:
    for line in output.decode("utf-8", "replace").splitlines():
        text = "".join(c for c in line.strip() if c.isprintable())
        if text:
            return text[:200]
    return ""


def _kill(proc: asyncio.subprocess.Process) -> None:
    """The hook and what it started (its own session, by its process id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
