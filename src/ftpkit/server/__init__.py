"""The ftpkit FTP server (asyncio). Entry point: :func:`serve`; embeddable: :class:`FTPServer`."""

from __future__ import annotations

import asyncio
import gc

from ftpkit.server.app import FTPServer
from ftpkit.server.config import ConfigError, ServerConfig, redact_url, validate

__all__ = ["ConfigError", "FTPServer", "ServerConfig", "serve", "validate"]


def serve(cfg: ServerConfig, announce: bool = True) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit code."""

    async def main() -> None:
        server = FTPServer(cfg)
        await server.start()
        # What start-up made (modules, configuration, TLS context, accounts) lives as long as the process: out of
        # the cycle collector's sight, its collections walk only what sessions create.
        gc.freeze()
        def announce_line() -> None:
            line = describe(cfg, server.port)
            if server.metrics_server is not None:
                line += f"; metrics at {server.metrics_server.url}/metrics"
            print(line, flush=True)

        await server.serve_until_signalled(announce_line if announce else None)

    asyncio.run(main())
    return 0


def describe(cfg: ServerConfig, port: int) -> str:
    """The one line printed at start-up."""
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    anon = ("anonymous read-write" if cfg.anonymous_write else "anonymous read-only") if cfg.anonymous else \
        "no anonymous"
    users = f", {len(cfg.users)} quick user(s)" if cfg.users else ""
    if cfg.users_file:
        users += f", users from {cfg.users_file}"
    if cfg.users_db:
        users += f", users from {redact_url(cfg.users_db)}"
    masq = cfg.masquerade_address or "control connection's local address"
    if cfg.masquerade_map:
        masq += f" (+{len(cfg.masquerade_map)} network map entries)"
    low, high = cfg.passive_ports
    proxy = ""
    if cfg.proxy_protocol != "off":
        proxy = f"; PROXY protocol {cfg.proxy_protocol} from {', '.join(str(n) for n in cfg.proxy_allowed)}"
    served = f"{cfg.storage} (object storage)" if cfg.storage else str(cfg.root)
    return (f"ftpkit: serving {served} at ftp://{host}:{port}/ ({anon}{users}); "
            f"passive ports {low}-{high}, announced address: {masq}{proxy}")
