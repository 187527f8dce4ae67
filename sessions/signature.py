"""The Logon ``RawData(96)`` signature and the handling of the RSA keys behind it (REFERENCE §2.2).

Kalshi authenticates a FIX session by an RSA-PSS signature over five header values of the Logon.
The private key never leaves :class:`LogonSigner`: its repr, its str and every error raised here
name the API key id and the file, never key material or a passphrase.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn, Union

import attrs
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .errors import KeyLoadError, LocalProtocolError

PathLike = Union[str, "os.PathLike[str]"]

SOH = b"\x01"

#: Kalshi's keys are 2048-bit RSA; anything smaller is refused rather than sent to the exchange.
MIN_KEY_BITS = 2048

# Salt length 32 = SHA-256 digest length: the defaults of the signer in Kalshi's sample code.
_SIGN_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
_VERIFY_PADDINGS_STRICT = (_SIGN_PADDING,)
# The simulator may be lenient about the salt (REFERENCE §2.2): AUTO reads it from the signature.
_VERIFY_PADDINGS_LENIENT = (
    _SIGN_PADDING,
    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
)


def logon_pre_hash(
    sending_time: bytes,
    msg_type: bytes,
    msg_seq_num: bytes,
    sender_comp_id: bytes,
    target_comp_id: bytes,
) -> bytes:
    """The bytes Kalshi expects to be signed: 52, 35, 34, 49 and 56 joined by single SOH bytes.

    The values must be exactly what goes on the wire (e.g. ``b"1"``, not ``b"0001"``), because the
    gateway rebuilds the string from the received message. Raises :class:`LocalProtocolError` for a
    value that could not appear in a FIX field (empty or containing SOH).
    """
    values = (sending_time, msg_type, msg_seq_num, sender_comp_id, target_comp_id)
    names = (
        "SendingTime(52)", "MsgType(35)", "MsgSeqNum(34)", "SenderCompID(49)", "TargetCompID(56)"
    )
    for name, value in zip(names, values):
        if not value:
            raise LocalProtocolError(f"cannot sign a Logon with an empty {name}")
        if SOH in value:
            raise LocalProtocolError(f"cannot sign a Logon whose {name} contains SOH")
    return SOH.join(bytes(v) for v in values)


def _describe(path: PathLike, key_id: str | None) -> str:
    return f"{os.fspath(path)}" + (f" (key id {key_id})" if key_id else "")


def _read_key_file(path: PathLike, key_id: str | None, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyLoadError(f"{what} file {_describe(path, key_id)} does not exist") from None
    except IsADirectoryError:
        raise KeyLoadError(f"{what} file {_describe(path, key_id)} is a directory") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise KeyLoadError(f"cannot read {what} file {_describe(path, key_id)}: {reason}") from None


def _check_rsa_size(key_size: int, where: str) -> None:
    if key_size < MIN_KEY_BITS:
        raise KeyLoadError(
            f"{where}: RSA key is {key_size} bits; Kalshi keys must be at least {MIN_KEY_BITS} bits"
        )


@attrs.define(frozen=True, repr=False, eq=False)
class LogonSigner:
    """Signs Logon pre-hashes with one API key's RSA private key.

    ``key_id`` is the Kalshi API key id (the session's SenderCompID). Build it with
    :meth:`from_pem_file` or :meth:`from_private_key`; pass :meth:`sign` wherever a
    ``Callable[[bytes], bytes]`` producing RawData is wanted.
    """

    key_id: str
    _key: rsa.RSAPrivateKey = attrs.field(alias="key")

    @classmethod
    def from_private_key(cls, key: rsa.RSAPrivateKey, key_id: str) -> LogonSigner:
        """Wrap an already loaded ``cryptography`` RSA private key."""
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyLoadError(
                f"key id {key_id}: a {type(key).__name__} was given; "
                "Kalshi signatures need an RSA key"
            )
        _check_rsa_size(key.key_size, f"key id {key_id}")
        return cls(key_id=key_id, key=key)

    @classmethod
    def from_pem_file(
        cls,
        path: PathLike,
        key_id: str,
        passphrase_env: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> LogonSigner:
        """Load a PEM private key (PKCS#8, optionally encrypted; traditional RSA PEM also works).

        ``passphrase_env`` names the environment variable holding the passphrase of an encrypted
        key (``environ`` replaces ``os.environ`` for the lookup). Every problem raises
        :class:`KeyLoadError` naming the file, the key id and what to fix.
        """
        where = _describe(path, key_id)
        data = _read_key_file(path, key_id, "private key")
        password: bytes | None = None
        if passphrase_env is not None:
            env = os.environ if environ is None else environ
            value = env.get(passphrase_env)
            if value is None:
                raise KeyLoadError(
                    f"private key {where}: environment variable {passphrase_env} "
                    "(the key's passphrase) is not set"
                )
            if value == "":
                raise KeyLoadError(
                    f"private key {where}: environment variable {passphrase_env} "
                    "(the key's passphrase) is empty"
                )
            password = value.encode("utf-8")
        if b"-----BEGIN" not in data:
            raise KeyLoadError(
                f"private key {where}: not a PEM file (expected '-----BEGIN PRIVATE KEY-----', "
                "as written by 'openssl genpkey -algorithm RSA')"
            )
        # PKCS#8 encrypted, or traditional OpenSSL PEM with an encryption header.
        encrypted = (
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data
        )
        if encrypted and password is None:
            raise KeyLoadError(
                f"private key {where} is encrypted but no passphrase was configured; "
                "name the environment variable holding it (private_key_passphrase_env)"
            )
        if not encrypted and password is not None:
            raise KeyLoadError(
                f"private key {where} is not encrypted but a passphrase variable "
                f"({passphrase_env}) was configured; remove the setting or encrypt the key"
            )
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError):
            # cryptography's own text is not forwarded: it is generic, and we want no chance of
            # key bytes ending up in an error.
            if encrypted:
                raise KeyLoadError(
                    f"private key {where}: cannot decrypt; the passphrase in "
                    f"{passphrase_env} is wrong or the file is damaged"
                ) from None
            raise KeyLoadError(
                f"private key {where}: the PEM data is damaged or is not a private key"
            ) from None
        except UnsupportedAlgorithm:
            raise KeyLoadError(
                f"private key {where}: unsupported key type or encryption algorithm"
            ) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyLoadError(
                f"private key {where} is not an RSA key; Kalshi signatures need RSA"
            )
        _check_rsa_size(key.key_size, f"private key {where}")
        return cls(key_id=key_id, key=key)

    def sign(self, pre_hash: bytes) -> bytes:
        """RawData(96): standard Base64 of the RSA-PSS/SHA-256 (MGF1-SHA256, salt 32) signature."""
        signature = self._key.sign(pre_hash, _SIGN_PADDING, hashes.SHA256())
        return base64.b64encode(signature)

    def public_key(self) -> rsa.RSAPublicKey:
        """The matching public key (what is registered with Kalshi)."""
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"LogonSigner(key_id={self.key_id!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the private key into wherever the pickle goes (logs, queues).
        raise TypeError(f"LogonSigner for key id {self.key_id} cannot be pickled")


def load_public_key(path: PathLike, key_id: str | None = None) -> rsa.RSAPublicKey:
    """Load an RSA public key from a PEM file (SubjectPublicKeyInfo or PKCS#1).

    ``key_id`` only serves to name the key in errors. Raises :class:`KeyLoadError`.
    """
    where = _describe(path, key_id)
    data = _read_key_file(path, key_id, "public key")
    if b"-----BEGIN" not in data:
        raise KeyLoadError(
            f"public key {where}: not a PEM file (expected '-----BEGIN PUBLIC KEY-----')"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyLoadError(
            f"public key {where}: the PEM data is damaged or is not a public key"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyLoadError(f"public key {where} is not an RSA key")
    _check_rsa_size(key.key_size, f"public key {where}")
    return key


def verify_logon_signature(
    public_key: rsa.RSAPublicKey,
    pre_hash: bytes,
    raw_data: bytes,
    *,
    strict_salt: bool = False,
) -> bool:
    """Whether ``raw_data`` (Base64 text from tag 96) is a valid Logon signature of ``pre_hash``.

    Accepts RSA-PSS/SHA-256 with salt 32; unless ``strict_salt``, any PSS salt length too (the
    reference suggests that leniency for the simulator). Never raises on bad input.
    """
    try:
        signature = base64.b64decode(raw_data, validate=True)
    except (binascii.Error, ValueError):
        return False
    paddings = _VERIFY_PADDINGS_STRICT if strict_salt else _VERIFY_PADDINGS_LENIENT
    for pad in paddings:
        try:
            public_key.verify(signature, pre_hash, pad, hashes.SHA256())
        except InvalidSignature:
            continue
        return True
    return False


def generate_key_pair(
    private_path: PathLike,
    public_path: PathLike,
    *,
    passphrase: bytes | None = None,
    bits: int = 2048,
) -> None:
    """Create an RSA key pair for a Kalshi API key.

    Writes the private key as PKCS#8 PEM (encrypted with ``passphrase`` when given) with mode 0600,
    and the public key as SubjectPublicKeyInfo PEM, the form Kalshi's account page takes — the same
    files as ``openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`` followed by
    ``openssl rsa -pubout``. Existing files are never overwritten (:class:`KeyLoadError`).
    """
    if bits < MIN_KEY_BITS:
        raise KeyLoadError(f"refusing to generate a {bits}-bit key; use at least {MIN_KEY_BITS}")
    if passphrase is not None and not passphrase:
        raise KeyLoadError("refusing to encrypt a private key with an empty passphrase")
    priv = Path(private_path)
    pub = Path(public_path)
    if priv == pub:
        raise KeyLoadError(f"private and public key paths are the same file: {priv}")
    for p in (priv, pub):
        if p.exists() or p.is_symlink():
            raise KeyLoadError(f"{p} already exists; refusing to overwrite a key file")
        if not p.parent.is_dir():
            raise KeyLoadError(f"cannot write {p}: directory {p.parent} does not exist")

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase is not None
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(priv, private_pem, 0o600)
    try:
        _write_new(pub, public_pem, 0o644)
    except BaseException:
        # Do not leave half a pair behind: a lone private key would block the next attempt.
        priv.unlink(missing_ok=True)
        raise


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL closes the window between the existence check and the write; the mode is applied at
    # creation so the private key is never readable by others, not even briefly.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise KeyLoadError(f"{path} already exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise KeyLoadError(f"cannot create {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)  # the umask may have narrowed or (for 0644) masked the mode
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise KeyLoadError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
