"""The ftpkit FTP server (asyncio). Entry point: :func:`serve`; embeddable: :class:`FTPServer`."""

from __future__ import annotations

import asyncio

from ftpkit.server.app import FTPServer
from ftpkit.server.config import ConfigError, ServerConfig, validate

__all__ = ["ConfigError", "FTPServer", "ServerConfig", "serve", "validate"]


def serve(cfg: ServerConfig, announce: bool = True) -> int:
    """Run the server until SIGINT/SIGTERM; returns the exit code."""

    async def main() -> None:
        server = FTPServer(cfg)
        await server.start()
        if announce:
            print(describe(cfg, server.port), flush=True)
        await server.serve_until_signalled()

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
    masq = cfg.masquerade_address or "control connection's local address"
    if cfg.masquerade_map:
        masq += f" (+{len(cfg.masquerade_map)} network map entries)"
    low, high = cfg.passive_ports
    served = f"{cfg.storage} (object storage)" if cfg.storage else str(cfg.root)
    return (f"ftpkit: serving {served} at ftp://{host}:{port}/ ({anon}{users}); "
            f"passive ports {low}-{high}, announced address: {masq}")
