"""TLS for FTP control connections, shared by the server and the client, on the standard ``ssl`` module.

:class:`ControlStream` carries a control connection over a plain asyncio stream and can start TLS on it (AUTH TLS,
or at once for implicit FTPS) and stop it again (CCC, RFC 4217 §6), which asyncio's own SSL transport cannot do.
TLS runs through an :class:`ssl.SSLObject` with memory BIOs: a peer that never finishes its handshake costs no CPU
while it is awaited, and the wait is bounded. As a server with a :class:`ServerContext`, it reads the client's
ClientHello before OpenSSL does (:mod:`ftpkit.tls_hello`): what is not a ClientHello is dropped at once, and a
client that offers ALPN protocols but not ``ftp`` gets the ``no_application_protocol`` alert (RFC 7301, the ALPACA
mitigation), which Python's ``ssl`` cannot send by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, Literal, Protocol

from ftpkit.tls_hello import (
    NO_APPLICATION_PROTOCOL,
    UNRECOGNIZED_NAME,
    ClientHello,
    NotClientHello,
    alpn_refusal,
    fatal_alert,
    read_client_hello,
    sni_refusal,
)

READ_SIZE = 65536
FTP_ALPN = "ftp"  # the IANA ALPN protocol ID of FTP


class ByteReader(Protocol):
    """What :class:`ControlStream` reads from: an ``asyncio.StreamReader``, or the server's ``ControlConnection``."""

    async def read(self, n: int = ...) -> bytes: ...


class WriteState(Protocol):
    """What :meth:`ControlStream.write_pending` asks of a writer's transport (an asyncio transport has it)."""

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...


class ByteWriter(Protocol):
    """What :class:`ControlStream` writes to: an ``asyncio.StreamWriter``, or the server's ``ControlConnection``."""

    @property
    def transport(self) -> WriteState: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class ServerContext(ssl.SSLContext):
    """A server's TLS context: the ClientHello is screened first (:meth:`refusal`), by :class:`ControlStream` on a
    control connection and by the server's data connections."""

    alpn_protocol: str = FTP_ALPN
    strict_names: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    """With strict SNI: the certificate's DNS names and IP addresses, which a client's server_name must match."""

    def refusal(self, hello: ClientHello) -> tuple[int, str] | None:
        """The fatal alert and the reason to refuse this ClientHello with, or ``None`` to go on."""
        reason = alpn_refusal(hello, self.alpn_protocol.encode("ascii"))
        if reason is not None:
            return NO_APPLICATION_PROTOCOL, f"{reason}: refused with the no_application_protocol alert (RFC 7301)"
        if self.strict_names is not None:
            reason = sni_refusal(hello, *self.strict_names)
            if reason is not None:
                return UNRECOGNIZED_NAME, f"{reason}: refused with the unrecognized_name alert (tls_strict_sni)"
        return None


def certificate_names(cert: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The DNS names and IP addresses the (first) certificate of a PEM file is for: its subjectAltName entries, or
    its subject's common name when it has no subjectAltName extension at all (RFC 6125 §6.4.4)."""
    from cryptography import x509

    with open(cert, "rb") as fh:
        certificate = x509.load_pem_x509_certificate(fh.read())
    try:
        alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return tuple(str(a.value) for a in common), ()
    dns = tuple(alt.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in alt.get_values_for_type(x509.IPAddress))
    return dns, ips

TLSMaxVersion = Literal["1.2", "1.3"]
"""The highest TLS version a server offers (see :func:`server_context` for why 1.2 is the default)."""


class TLSError(ConnectionError):
    """A TLS handshake or record failure, with a one-line reason."""


def describe_ssl_error(exc: BaseException) -> str:
    """One line naming the problem: expired, wrong host name, self-signed, unknown CA, protocol version..."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or str(exc)
        code = exc.verify_code
        if code == 10:
            return "the server's certificate has expired"
        if code in (18, 19):
            return "the server's certificate is self-signed (use --ca-file with it, or --insecure)"
        if code == 20:
            return "the server's certificate is signed by an unknown authority (use --ca-file)"
        if code == 62 or "hostname" in message.lower() or "ip address mismatch" in message.lower():
            return f"the server's certificate does not match the host name ({message})"
        return f"certificate verification failed: {message}"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or str(exc)
        return f"TLS failed: {str(reason).lower().replace('_', ' ')}"
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return f"TLS failed: {exc}"


def cipher_name(tls: ssl.SSLObject) -> str | None:
    """The name of the negotiated cipher suite, or ``None`` before the handshake."""
    cipher = tls.cipher()
    return cipher[0] if cipher else None


class ControlStream:
    """Read/write a control connection, in clear or through TLS, switching between the two when told."""

    __slots__ = ("_in", "_out", "_plain_leftover", "reader", "tls", "writer")

    def __init__(self, reader: ByteReader, writer: ByteWriter, early: bytes = b"") -> None:
        """``early``: bytes already read from the connection (those that followed a PROXY protocol header)."""
        self.reader = reader
        self.writer = writer
        self.tls: ssl.SSLObject | None = None
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._plain_leftover = early  # clear text read ahead: after a PROXY header, or after a close_notify (CCC)

    @property
    def encrypted(self) -> bool:
        return self.tls is not None

    def get_extra_info(self, name: str) -> object:
        return self.writer.get_extra_info(name)

    def _flush(self) -> None:
        assert self._out is not None
        data = self._out.read()
        if data:
            self.writer.write(data)

    async def _fill(self, timeout: float | None) -> bool:
        """Read ciphertext into the TLS engine; False at end of stream."""
        assert self._in is not None
        data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    async def start_tls(self, context: ssl.SSLContext, server_side: bool, server_hostname: str | None = None,
                        timeout: float = 10.0, session: ssl.SSLSession | None = None) -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        leftover = self._plain_leftover
        self._plain_leftover = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if server_side and isinstance(context, ServerContext):
            leftover = await self._screen_client_hello(leftover, context, deadline)
        if leftover:
            self._in.write(leftover)
        tls = context.wrap_bio(self._in, self._out, server_side=server_side, server_hostname=server_hostname,
                               session=session)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                await self.writer.drain()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TLSError(describe_ssl_error(TimeoutError())) from None
                try:
                    if not await self._fill(remaining):
                        raise TLSError("the peer closed the connection during the TLS handshake")
                except TimeoutError:
                    raise TLSError(describe_ssl_error(TimeoutError())) from None
            except ssl.SSLError as exc:
                with contextlib.suppress(Exception):
                    self._flush()
                raise TLSError(describe_ssl_error(exc)) from exc
        self._flush()
        await self.writer.drain()
        self.tls = tls

    async def _screen_client_hello(self, data: bytes, context: ServerContext, deadline: float) -> bytes:
        """Read until ``data`` holds the whole ClientHello and check it; returns the bytes read, for OpenSSL."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                hello = read_client_hello(data)
            except NotClientHello as exc:
                raise TLSError(f"not a TLS ClientHello: {exc}") from None
            if hello is not None:
                break
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                chunk = await asyncio.wait_for(self.reader.read(READ_SIZE), remaining)
            except TimeoutError:
                raise TLSError(describe_ssl_error(TimeoutError())) from None
            if not chunk:
                raise TLSError("the peer closed the connection during the TLS handshake")
            data += chunk
        refusal = context.refusal(hello)
        if refusal is not None:
            self.writer.write(fatal_alert(refusal[0]))
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.drain()
            raise TLSError(refusal[1])
        return data

    async def stop_tls(self, timeout: float = 10.0) -> None:
        """Send close_notify, wait for the peer's, and carry on in clear (CCC)."""
        assert self.tls is not None and self._in is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                self.tls.unwrap()
                break
            except ssl.SSLWantReadError:
                self._flush()
                await self.writer.drain()
                if not await self._fill(max(0.0, deadline - loop.time())):
                    break
            except ssl.SSLError as exc:
                raise TLSError(describe_ssl_error(exc)) from exc
        self._flush()
        await self.writer.drain()
        self._plain_leftover = self._in.read()
        self.tls = self._in = self._out = None

    async def read(self, n: int = READ_SIZE) -> bytes:
        if self.tls is None:
            if self._plain_leftover:
                data, self._plain_leftover = self._plain_leftover, b""
                return data
            return await self.reader.read(n)
        while True:
            clear = self._decrypted(n)
            if clear is not None:
                return clear
            if not await self._fill(None):
                return b""  # the peer went away without close_notify

    def _decrypted(self, n: int) -> bytes | None:
        """Clear text the TLS engine has (``b""`` after the peer's close_notify), or ``None`` when it needs more
        ciphertext first."""
        assert self.tls is not None
        try:
            data = self.tls.read(n)
            self._flush()  # TLS 1.3 may answer (key update)
            return data
        except ssl.SSLWantReadError:
            self._flush()
            return None
        except ssl.SSLZeroReturnError:
            return b""  # close_notify: the peer ended the connection cleanly
        except ssl.SSLError as exc:
            raise TLSError(describe_ssl_error(exc)) from exc

    def write(self, data: bytes) -> None:
        if self.tls is None:
            self.writer.write(data)
            return
        self.tls.write(data)
        self._flush()

    async def drain(self) -> None:
        await self.writer.drain()

    def write_pending(self) -> bool:
        """Whether :meth:`drain` may have to wait: bytes still queued in the transport, or it is closing (then
        drain raises the connection's error)."""
        transport = self.writer.transport
        return transport.is_closing() or transport.get_write_buffer_size() > 0

    def close(self) -> None:
        if self.tls is not None:
            with contextlib.suppress(ssl.SSLError, ssl.SSLWantReadError):
                self.tls.unwrap()
            with contextlib.suppress(Exception):
                self._flush()
        self.writer.close()

    async def wait_closed(self) -> None:
        await self.writer.wait_closed()


def server_context(cert: str, key: str, max_version: TLSMaxVersion = "1.2", strict_sni: bool = False) -> ServerContext:
    """TLS 1.2 at least; by default at most, too.

    With TLS 1.2 and no session tickets, a data connection that resumes the control connection's session has the
    same session id, so ``require_session_reuse`` can check exactly that (Python cannot tell which session a TLS
    1.3 connection resumed). TLS 1.3 also sends session tickets after every handshake, data connections included;
    clients that never read them (curl) then end an upload with a TCP reset instead of a clean close, and the
    upload fails. ``tls_max_version = "1.3"`` opts in anyway.

    ALPN selects ``ftp`` when a client offers it (a client offering others only is refused by
    :class:`ControlStream`); a client may not renegotiate (TLS 1.2: a renegotiation costs the server a handshake).
    ``strict_sni``: a client whose server_name the certificate does not cover gets the ``unrecognized_name`` alert
    (one without SNI is served: see :func:`ftpkit.tls_hello.sni_refusal`).
    """
    ctx = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3 if max_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols([FTP_ALPN])
    if strict_sni:
        ctx.strict_names = certificate_names(cert)
    return ctx


def client_context(verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
