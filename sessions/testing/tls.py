"""TLS material for the simulated gateway: a throw-away CA and a server certificate.

Kalshi's endpoints only speak TLS 1.2+ (REFERENCE §1.5). The simulator mints its own CA and a
certificate for ``127.0.0.1``/``localhost`` on the fly (like ``trustme``, but with
``cryptography`` only, so the ``kalshi-fix gateway`` command needs no test dependency); clients
trust it through the CA file written by :meth:`GatewayTls.write_ca`, or pin the certificate with
:attr:`GatewayTls.pin_sha256`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ConfigError

__all__ = ["GatewayTls"]


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kalshi-fix-supervisor simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hostnames: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


@attrs.frozen(repr=False)
class GatewayTls:
    """A server certificate chain (PEM), its private key and the CA that issued it."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"GatewayTls(pin_sha256={self.pin_sha256[:16]}…)"

    @classmethod
    def generate(cls, hostnames: Sequence[str] = ("127.0.0.1", "localhost", "::1")) -> GatewayTls:
        """A fresh CA and a server certificate for ``hostnames`` (IP addresses or DNS names)."""
        # Validity is judged by OpenSSL against the real system clock, not the gateway's
        # (possibly mocked) clock, so the real time is the right anchor here.
        now = _dt.datetime.now(_dt.timezone.utc)
        not_before, not_after = now - _dt.timedelta(days=1), now + _dt.timedelta(days=3650)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("kalshi-fix simulator CA")
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hostnames[0] if hostnames else "localhost"))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_san(hostnames), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cls(
            ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )

    @classmethod
    def from_files(cls, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str],
                   ca_file: str | os.PathLike[str] | None = None) -> GatewayTls:
        """Operator-supplied certificate and key (PEM). Raises :class:`ConfigError`."""
        try:
            cert = Path(cert_file).read_bytes()
            key = Path(key_file).read_bytes()
            ca = Path(ca_file).read_bytes() if ca_file is not None else cert
        except OSError as exc:
            raise ConfigError(
                f"cannot read the gateway's TLS files: {exc.strerror or type(exc).__name__} "
                f"({exc.filename})"
            ) from None
        tls = cls(ca_pem=ca, cert_pem=cert, key_pem=key)
        tls.server_context()  # fail now, with a clear error, rather than at the first client
        return tls

    @property
    def pin_sha256(self) -> str:
        """SHA-256 of the server certificate (DER) as 64 hex digits (for ``pin_sha256``)."""
        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(
            serialization.Encoding.DER
        )
        return hashlib.sha256(der).hexdigest()

    def server_context(self) -> ssl.SSLContext:
        """A server-side context, TLS 1.2 or newer, as Kalshi's load balancers require."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # ssl only loads chains from files; the key lives on disk for the blink of this call.
        with tempfile.TemporaryDirectory(prefix="kalshi-gw-tls-") as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert.write_bytes(self.cert_pem)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key_pem)
            try:
                ctx.load_cert_chain(cert, key)
            except (ssl.SSLError, ValueError):
                raise ConfigError(
                    "the gateway's TLS certificate and key do not load or do not match"
                ) from None
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this gateway's CA (handy in tests)."""
        ctx = ssl.create_default_context(cadata=self.ca_pem.decode("ascii"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def write_ca(self, path: str | os.PathLike[str]) -> Path:
        """Write the CA certificate (PEM) for clients' ``ca_file``; returns the path."""
        p = Path(path)
        p.write_bytes(self.ca_pem)
        return p
