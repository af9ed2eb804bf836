"""Small programs the ``cluster`` scenario runs inside its namespaces (``python -m ftpkit.lab.cluster_helpers``):

``bucket ENDPOINT NAME ACCESS SECRET TIMEOUT``
    until SeaweedFS answers S3: create the bucket, write and read back a probe object (the volume server is known
    to the master), delete it. Exit 0 when ready, 1 with the last error on stderr.
``conversation HOST PORT USER PASSWORD THIRD``
    a raw control conversation through the balancer: the greeting, login, ``SITE WHOAMI`` (the address the node
    sees), and a PORT naming the third address ``THIRD`` (RFC 2577: refused). One JSON object on stdout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from typing import Any

from ftpkit.protocol.hostport import HostPort, format_port


async def _bucket(endpoint: str, name: str, access: str, secret: str) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2,
                       read_timeout=10)
    async with get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                           aws_access_key_id=access, aws_secret_access_key=secret,
                                           config=config) as s3:
        try:
            await s3.head_bucket(Bucket=name)
        except Exception:
            await s3.create_bucket(Bucket=name)
        await s3.put_object(Bucket=name, Key=".ready", Body=b"probe")
        response = await s3.get_object(Bucket=name, Key=".ready")
        async with response["Body"] as body:
            if await body.read() != b"probe":
                raise RuntimeError("the probe object did not read back")
        await s3.delete_object(Bucket=name, Key=".ready")


def bucket(endpoint: str, name: str, access: str, secret: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(_bucket(endpoint, name, access, secret))
            return 0
        except Exception as exc:  # not answering yet: S3 comes up after master, volume and filer
            if time.monotonic() > deadline:
                print(f"S3 at {endpoint} not ready: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.25)


class _Control:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), 10)
        self.file = self.sock.makefile("rb")

    def reply(self) -> str:
        line = self.file.readline().decode("utf-8", "replace").rstrip("\r\n")
        if len(line) > 3 and line[3] == "-":  # multi-line: until "NNN "
            while True:
                more = self.file.readline().decode("utf-8", "replace").rstrip("\r\n")
                if not more or (more[:3] == line[:3] and more[3:4] == " "):
                    return line[:3] + " " + more[4:]
        return line

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()


def conversation(host: str, port: int, user: str, password: str, third: str) -> dict[str, Any]:
    control = _Control(host, port)
    out: dict[str, Any] = {"greeting": control.reply(), "local": control.sock.getsockname()[0]}
    out["user"] = control.command(f"USER {user}")
    out["pass"] = control.command(f"PASS {password}")
    out["whoami"] = control.command("SITE WHOAMI")
    out["port_third"] = control.command(f"PORT {format_port(HostPort(third, 40000))}")
    out["quit"] = control.command("QUIT")
    control.sock.close()
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["bucket"] and len(argv) == 6:
        return bucket(argv[1], argv[2], argv[3], argv[4], float(argv[5]))
    if argv[:1] == ["conversation"] and len(argv) == 6:
        print(json.dumps(conversation(argv[1], int(argv[2]), argv[3], argv[4], argv[5])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
