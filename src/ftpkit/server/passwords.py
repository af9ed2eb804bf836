"""Password hashes: new ones in argon2id, existing ones from other servers' user databases verified too.

- New hashes are argon2id with OWASP's first recommended setting (19 MiB, 2 passes, 1 lane; RFC 9106 allows it
  for memory-constrained servers): about 40 ms of one core and 19 MiB per verification. Configurable.
- ``$6$`` (SHA-512 crypt, vsftpd/pure-ftpd/PAM), ``$5$``, ``$y$`` (yescrypt, Debian 11+'s default) and ``$2b$``
  (bcrypt) are verified by the platform's own ``crypt_rn(3)`` (libxcrypt, the library PAM uses), where it
  supports the scheme, so users move from vsftpd or pure-ftpd without a password reset.
- :class:`PasswordVerifier` runs verifications in threads of its own, at most ``concurrency`` at once (so a login
  storm costs at most that many hashes' memory and never takes the file-I/O threads), serves waiting sources in
  turn (a storm from one address does not starve the others), and remembers successful verifications for
  ``cache_ttl`` seconds (as SFTPGo's password cache), so a client that reconnects for every file pays the hash
  once. The cache keeps an HMAC of the password under a key of this process, bound to the stored hash: a changed
  hash (a new password) misses the cache.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ARGON2_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
CRYPT_SCHEMES = {"$6$": "SHA-512 crypt", "$5$": "SHA-256 crypt", "$y$": "yescrypt", "$gy$": "gost-yescrypt",
                 "$2b$": "bcrypt", "$2y$": "bcrypt", "$2a$": "bcrypt"}


@dataclass(frozen=True, slots=True)
class HashSettings:
    """Cost of new argon2id hashes (``ftpkit user add``, ``--user``)."""

    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1

    def hasher(self) -> PasswordHasher:
        return PasswordHasher(time_cost=self.time_cost, memory_cost=self.memory_kib, parallelism=self.parallelism)


def hash_password(password: str, settings: HashSettings | None = None) -> str:
    return (settings or HashSettings()).hasher().hash(password)


class _LibCrypt:
    """``crypt_rn(3)`` of the platform's libcrypt (libxcrypt), loaded once; thread-safe (own data per call)."""

    DATA_SIZE = 65536  # >= sizeof(struct crypt_data) (32768 in libxcrypt)

    def __init__(self) -> None:
        self.fn = None
        name = ctypes.util.find_library("crypt")
        for candidate in ([name] if name else []) + ["libcrypt.so.1"]:
            try:
                lib = ctypes.CDLL(candidate)
                fn = lib.crypt_rn
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
            self.fn = fn
            break

    def crypt(self, password: bytes, setting: bytes) -> bytes | None:
        if self.fn is None:
            return None
        data = ctypes.create_string_buffer(self.DATA_SIZE)
        out = self.fn(password, setting, data, self.DATA_SIZE)
        if out is None or out.startswith(b"*"):
            return None
        return bytes(out)


_libcrypt: _LibCrypt | None = None
_libcrypt_lock = threading.Lock()


def libcrypt() -> _LibCrypt:
    global _libcrypt
    with _libcrypt_lock:
        if _libcrypt is None:
            _libcrypt = _LibCrypt()
        return _libcrypt


def scheme_of(stored: str) -> str | None:
    """The scheme's name (``argon2``, ``yescrypt`` ...), or ``None`` for something that is not a known hash."""
    if stored.startswith(ARGON2_PREFIXES):
        return "argon2"
    for prefix, name in CRYPT_SCHEMES.items():
        if stored.startswith(prefix):
            return name
    return None


def check_hash(stored: str) -> str | None:
    """Why ``stored`` cannot be used as a password hash here, or ``None`` when it can."""
    scheme = scheme_of(stored)
    if scheme is None:
        return ("is not a password hash this server verifies (argon2, $6$ SHA-512 crypt, $5$, $y$ yescrypt, "
                "$2b$ bcrypt; plaintext passwords are not stored)")
    if scheme == "argon2":
        try:
            PasswordHasher().check_needs_rehash(stored)  # parses it
        except (InvalidHashError, ValueError):
            return "is not a valid argon2 hash"
        return None
    lib = libcrypt()
    if lib.fn is None:
        return f"is a {scheme} hash, but this platform has no libcrypt to verify it (install libcrypt1)"
    setting = stored.encode("ascii", "replace")
    probe = lib.crypt(b"probe", setting)
    if probe is None or len(probe) != len(setting):  # a setting alone ("$6$salt") is not a stored hash
        return f"is a {scheme} hash that this platform's libcrypt cannot verify (malformed, or scheme unsupported)"
    return None


def verify_hash(stored: str, password: str) -> bool:
    """Blocking (that is the point of a password hash): call from a worker thread."""
    if stored.startswith(ARGON2_PREFIXES):
        try:
            # bytes: a password that is not UTF-8 arrives with surrogate escapes, which argon2 cannot encode
            return PasswordHasher().verify(stored, password.encode("utf-8", "surrogateescape"))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    if scheme_of(stored) is None:
        return False
    try:
        setting = stored.encode("ascii")
    except UnicodeEncodeError:
        return False
    out = libcrypt().crypt(password.encode("utf-8", "surrogateescape"), setting)
    return out is not None and hmac.compare_digest(out, setting)


class FairGate:
    """At most ``slots`` holders at once; waiters are served one source at a time, in turn."""

    def __init__(self, slots: int) -> None:
        self.free = slots
        self.waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    def queued(self, source: str) -> int:
        return len(self.waiting.get(source, ()))

    async def acquire(self, source: str) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(source, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as the waiter went away: pass it on
            else:
                queue = self.waiting.get(source)
                if queue is not None and fut in queue:
                    queue.remove(fut)
                    if not queue:
                        del self.waiting[source]
            raise

    def release(self) -> None:
        while self.waiting:
            source, queue = self.waiting.popitem(last=False)
            fut = queue.popleft()
            if queue:
                self.waiting[source] = queue  # to the back of the line: the next source goes first
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to this waiter
                return
        self.free += 1


class PasswordVerifier:
    """Verifications off the event loop, bounded, fair between sources, with a cache of successes."""

    def __init__(self, concurrency: int = 0, cache_ttl: float = 600.0, cache_size: int = 10000) -> None:
        self.concurrency = concurrency or min(os.cpu_count() or 2, 8)
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self._gate = FairGate(self.concurrency)
        self._threads = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="ftpkit-hash")
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.hashed = 0  # verifications that ran the hash (for tests and metrics)
        self.cache_hits = 0
        self.running = 0  # hashes running now, in the threads
        self.peak = 0
        self._count_lock = threading.Lock()

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _hash(self, stored: str, password: str) -> bool:
        with self._count_lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return verify_hash(stored, password)
        finally:
            with self._count_lock:
                self.running -= 1

    def _tag(self, stored: str, password: str) -> bytes:
        message = stored.encode("utf-8", "surrogateescape") + b"\0" + password.encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def _cached(self, stored: str, tag: bytes) -> bool:
        entry = self._cache.get(stored)
        if entry is None:
            return False
        cached_tag, expires = entry
        if time.monotonic() >= expires:
            del self._cache[stored]
            return False
        return hmac.compare_digest(cached_tag, tag)

    def _remember(self, stored: str, tag: bytes) -> None:
        self._cache[stored] = (tag, time.monotonic() + self.cache_ttl)
        self._cache.move_to_end(stored)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget(self, stored: str) -> None:
        self._cache.pop(stored, None)

    async def verify(self, stored: str, password: str, source: str = "") -> bool:
        """Whether ``password`` matches ``stored``; ``source`` (the client's address) decides whose turn it is."""
        tag = self._tag(stored, password) if self.cache_ttl > 0 else b""
        if self.cache_ttl > 0 and self._cached(stored, tag):
            self.cache_hits += 1
            return True
        await self._gate.acquire(source)
        self.hashed += 1
        try:
            job = asyncio.get_running_loop().run_in_executor(self._threads, self._hash, stored, password)
        except BaseException:
            self._gate.release()
            raise
        # The slot is free when the hash is done, not when a waiter goes away (its thread still runs): so no more
        # than ``concurrency`` hashes ever run, whatever clients do.
        job.add_done_callback(lambda _job: self._gate.release())
        ok = await asyncio.shield(job)
        if ok and self.cache_ttl > 0:
            self._remember(stored, tag)
        return ok
