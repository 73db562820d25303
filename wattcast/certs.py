"""``wattcast broker certs``: a private CA and the certificates of a TLS deployment.

Makes, in one folder (every file mode 600; never commit it, ``certs/`` is ignored):

* ``ca.pem`` / ``ca.key``: a CA of this deployment only;
* ``broker.pem`` / ``broker.key``: the broker's certificate, for the host names and
  IP addresses clients use to reach it (default: ``mosquitto``, ``localhost``, ``127.0.0.1``);
* ``<user>.pem`` / ``<user>.key``: a client certificate per MQTT user, for brokers
  that require one (``require_certificate true``).

Clients trust the broker with ``--ca-file ca.pem``.  mosquitto/init-auth.sh gives the
compose broker a TLS listener when the folder holds ``broker.pem`` (docs/deployment.md).
Needs the ``cryptography`` package (``pip install 'wattcast[tls]'``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from pathlib import Path

from wattcast.credentials import add_users_arg, write_private

DEFAULT_HOSTS = ("mosquitto", "localhost", "127.0.0.1")
#: the CA and broker certificates' lifetime (825 days: the most browsers and Apple accept)
DEFAULT_DAYS = 825


class CertError(ValueError):
    """Certificates that cannot be made (one line)."""


def make_certs(out: Path, hosts: list[str], users: list[str], days: int = DEFAULT_DAYS, force: bool = False) -> list[Path]:
    """Write the CA, the broker's and each user's certificate and key to ``out``; the paths written."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise CertError("making certificates needs cryptography: pip install 'wattcast[tls]'") from None
    if days < 1:
        raise CertError(f"--days must be at least 1, got {days}")
    names = ["ca", "broker", *users]
    existing = [out / f"{n}{ext}" for n in names for ext in (".pem", ".key") if (out / f"{n}{ext}").exists()]
    if existing and not force:
        raise CertError(f"{existing[0]} exists (and {len(existing) - 1} more): --force replaces them")
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        organization = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wattcast")
        return x509.Name([organization, x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject: str, issuer_key, issuer: x509.Name | None, ca: bool = False, san=None, usage=None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer if issuer is not None else name(subject))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return key, builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())

    def save(stem: str, key, cert) -> list[Path]:
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        write_private(out / f"{stem}.pem", pem)
        write_private(out / f"{stem}.key", private)
        return [out / f"{stem}.pem", out / f"{stem}.key"]

    san: list[x509.GeneralName] = []
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    ca_key, ca = issue("wattcast deployment CA", None, None, ca=True)
    written = save("ca", ca_key, ca)
    key, cert = issue(hosts[0], ca_key, ca.subject, san=san, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    written += save("broker", key, cert)
    for user in users:
        key, cert = issue(user, ca_key, ca.subject, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        written += save(user, key, cert)
    return written


def add_certs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="certs", help="folder to write to (default %(default)s; never commit it)")
    p.add_argument(
        "--host",
        action="append",
        default=None,
        metavar="NAME",
        help=f"a host name or IP address clients reach the broker by (repeat; default {', '.join(DEFAULT_HOSTS)})",
    )
    add_users_arg(p, "MQTT users to make client certificates for")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days (default %(default)s)")
    p.add_argument("--force", action="store_true", help="replace certificates that exist")


def certs_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    written = make_certs(out, args.host or list(DEFAULT_HOSTS), args.users, args.days, args.force)
    print(
        f"{out}: CA, broker ({', '.join(args.host or DEFAULT_HOSTS)}) and {len(args.users)} client certificates, "
        f"{len(written)} files (mode 600); clients trust the broker with --ca-file {out / 'ca.pem'}",
        file=sys.stderr,
    )
    return 0
