"""RSA API keys for tests of the simulated gateway.

A 2048-bit RSA key takes tens to hundreds of milliseconds to generate, so keys are made once
per process per *slot* (a name) and reused by every gateway and test that asks for the same
slot. Key ids are derived from the slot, so they are the same in every run — wire logs that
contain them stay reproducible.

:class:`DeterministicSigner` signs with an empty PSS salt: the gateway verifies PSS with any salt
length (REFERENCE §2.2 allows the simulator that leniency), and without a random salt the Logon's
RawData — and therefore the whole wire log — is byte-identical from run to run.
"""

from __future__ import annotations

import base64
import functools
import os
import uuid
from pathlib import Path

import attrs
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..signature import LogonSigner

__all__ = ["DeterministicSigner", "TestKey", "key_id_for", "make_test_key", "rsa_key_for"]

# A fixed namespace: key ids are uuid5(namespace, slot), stable across runs and machines.
_NAMESPACE = uuid.UUID("6f3c0b1e-5d7a-4c59-9f0e-6b8a4f7d2c10")


def key_id_for(slot: str) -> str:
    """The API key id (a UUID string, like Kalshi's) belonging to ``slot``."""
    return str(uuid.uuid5(_NAMESPACE, slot))


@functools.lru_cache(maxsize=None)
def rsa_key_for(slot: str) -> rsa.RSAPrivateKey:
    """The RSA-2048 private key of ``slot``, generated on first use and cached per process."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@attrs.define(frozen=True, repr=False, eq=False)
class DeterministicSigner:
    """A Logon signer with PSS salt length 0, so equal pre-hashes give equal RawData.

    Same interface as :class:`~sessions.signature.LogonSigner` (``key_id``, ``sign``). Only for
    the simulator: Kalshi's sample signer uses a 32-byte random salt.
    """

    key_id: str
    _key: rsa.RSAPrivateKey = attrs.field(alias="key")

    def sign(self, pre_hash: bytes) -> bytes:
        pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=0)
        return base64.b64encode(self._key.sign(pre_hash, pad, hashes.SHA256()))

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"DeterministicSigner(key_id={self.key_id!r})"


@attrs.frozen(repr=False)
class TestKey:
    """One API key of a test: its id, the PEM files and a ready signer.

    ``private_key_path`` is what a :class:`~sessions.config.SessionConfig` wants;
    ``public_key_path`` is what the gateway registers.
    """

    __test__ = False  # not a pytest test class, despite the name

    slot: str
    key_id: str
    private_key_path: Path
    public_key_path: Path
    signer: LogonSigner

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.signer.public_key()

    def deterministic_signer(self) -> DeterministicSigner:
        """A signer for reproducible wire logs (see :class:`DeterministicSigner`)."""
        return DeterministicSigner(self.key_id, rsa_key_for(self.slot))

    def __repr__(self) -> str:
        return f"TestKey(slot={self.slot!r}, key_id={self.key_id!r})"


def make_test_key(slot: str, directory: str | os.PathLike[str]) -> TestKey:
    """Write ``slot``'s key pair into ``directory`` (PKCS#8 private key, mode 0600) and return it.

    Files that already exist there are reused as they are.
    """
    key = rsa_key_for(slot)
    key_id = key_id_for(slot)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    private = d / f"{slot}.pem"
    public = d / f"{slot}.pub.pem"
    if not private.exists():
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    if not public.exists():
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return TestKey(
        slot=slot,
        key_id=key_id,
        private_key_path=private,
        public_key_path=public,
        signer=LogonSigner.from_private_key(key, key_id),
    )
