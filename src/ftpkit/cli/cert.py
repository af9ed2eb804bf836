"""``ftpkit cert --host NAME``: a self-signed certificate and key for trying FTPS out (not for production)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from pathlib import Path

import click


def write_self_signed(host: str, cert_path: Path, key_path: Path, days: int) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@click.command("cert")
@click.option("--host", required=True, help="host name or address clients will use (goes into the certificate)")
@click.option("--cert", "cert_file", default="ftpkit-cert.pem", show_default=True, help="certificate file to write")
@click.option("--key", "key_file", default="ftpkit-key.pem", show_default=True, help="private key file to write")
@click.option("--days", default=30, show_default=True, type=click.IntRange(1, 3650), help="validity")
def cert_command(host: str, cert_file: str, key_file: str, days: int) -> None:
    """Write a self-signed certificate and key for FTPS tests (`ftpkit serve --tls required --tls-cert ...`)."""
    write_self_signed(host, Path(cert_file), Path(key_file), days)
    click.echo(f"ftpkit: wrote {cert_file} and {key_file} (self-signed for {host}, {days} days)")
    click.echo("ftpkit: WARNING: a self-signed certificate proves nothing to clients; use it for tests only. "
               f"Clients must trust it explicitly (ftpkit get --ca-file {cert_file}, curl --cacert {cert_file}).",
               err=True)
    sys.exit(0)
