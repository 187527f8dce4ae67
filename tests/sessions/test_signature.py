"""Logon RawData signature (REFERENCE §2.2) and key handling."""

from __future__ import annotations

import base64
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from sessions.errors import KeyLoadError, LocalProtocolError
from sessions.signature import (
    LogonSigner,
    generate_key_pair,
    load_public_key,
    logon_pre_hash,
    verify_logon_signature,
)

KEY_ID = "3f1c2a9e-0000-4000-8000-000000000001"
PASSPHRASE = "correct horse battery staple"
PRE_HASH = b"20260301-12:00:00.000\x01A\x011\x01" + KEY_ID.encode() + b"\x01KalshiNR"


class Keys:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.private = root / "plain.pem"
        self.public = root / "plain.pub.pem"
        self.enc_private = root / "enc.pem"
        self.enc_public = root / "enc.pub.pem"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    k = Keys(tmp_path_factory.mktemp("keys"))
    generate_key_pair(k.private, k.public)
    generate_key_pair(k.enc_private, k.enc_public, passphrase=PASSPHRASE.encode())
    return k


@pytest.fixture(scope="module")
def signer(keys: Keys) -> LogonSigner:
    return LogonSigner.from_pem_file(keys.private, KEY_ID)


def assert_no_secret(exc: BaseException, *secrets: str) -> None:
    text = str(exc) + repr(exc)
    assert "-----BEGIN" not in text
    assert "PRIVATE KEY-----" not in text
    for s in secrets:
        assert s not in text


# --- pre-hash -------------------------------------------------------------------------------


def test_pre_hash_is_the_five_wire_values_joined_by_single_soh() -> None:
    got = logon_pre_hash(b"20260301-12:00:00.000", b"A", b"1", KEY_ID.encode(), b"KalshiNR")
    assert got == PRE_HASH
    assert not got.startswith(b"\x01") and not got.endswith(b"\x01")
    assert got.count(b"\x01") == 4


def test_pre_hash_keeps_values_exactly_as_given() -> None:
    got = logon_pre_hash(b"20260301-12:00:00.123", b"A", b"1042", b"k", b"KalshiRT")
    assert got.split(b"\x01") == [b"20260301-12:00:00.123", b"A", b"1042", b"k", b"KalshiRT"]


def test_pre_hash_rejects_soh_inside_a_value() -> None:
    with pytest.raises(LocalProtocolError, match="SenderCompID"):
        logon_pre_hash(b"20260301-12:00:00.000", b"A", b"1", b"a\x01b", b"KalshiNR")


def test_pre_hash_rejects_an_empty_value() -> None:
    with pytest.raises(LocalProtocolError, match="MsgSeqNum"):
        logon_pre_hash(b"20260301-12:00:00.000", b"A", b"", b"k", b"KalshiNR")


# --- signing and verifying ------------------------------------------------------------------


def test_signature_verifies_over_the_exact_pre_hash(signer: LogonSigner, keys: Keys) -> None:
    raw = signer.sign(PRE_HASH)
    assert verify_logon_signature(load_public_key(keys.public), PRE_HASH, raw)
    assert verify_logon_signature(signer.public_key(), PRE_HASH, raw, strict_salt=True)


def test_tampered_pre_hash_fails(signer: LogonSigner) -> None:
    raw = signer.sign(PRE_HASH)
    tampered = PRE_HASH.replace(b"A\x011\x01", b"A\x012\x01")
    assert tampered != PRE_HASH
    assert not verify_logon_signature(signer.public_key(), tampered, raw)


def test_signature_from_another_key_fails(signer: LogonSigner) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = signer.sign(PRE_HASH)
    assert not verify_logon_signature(other.public_key(), PRE_HASH, raw)


def test_signature_is_344_standard_base64_chars_for_2048_bits(signer: LogonSigner) -> None:
    raw = signer.sign(PRE_HASH)
    assert isinstance(raw, bytes)
    assert len(raw) == 344
    assert raw.endswith(b"=")
    assert b"\n" not in raw and b"-" not in raw and b"_" not in raw
    assert len(base64.b64decode(raw, validate=True)) == 256


def test_signature_is_pss_sha256_with_salt_32(signer: LogonSigner) -> None:
    sig = base64.b64decode(signer.sign(PRE_HASH))
    pub = signer.public_key()
    # An independent check with cryptography's explicit parameters: salt 32 passes ...
    pub.verify(
        sig, PRE_HASH, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    # ... and any other explicit salt length fails, so the salt really is 32.
    with pytest.raises(InvalidSignature):
        pub.verify(
            sig, PRE_HASH, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20),
            hashes.SHA256(),
        )


def test_pss_signatures_are_randomised_but_all_verify(signer: LogonSigner) -> None:
    a, b = signer.sign(PRE_HASH), signer.sign(PRE_HASH)
    assert a != b
    assert verify_logon_signature(signer.public_key(), PRE_HASH, a)
    assert verify_logon_signature(signer.public_key(), PRE_HASH, b)


def test_pkcs1v15_signature_does_not_verify(keys: Keys) -> None:
    key = serialization.load_pem_private_key(keys.private.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    wrong = base64.b64encode(key.sign(PRE_HASH, padding.PKCS1v15(), hashes.SHA256()))
    assert len(wrong) == 344
    assert not verify_logon_signature(key.public_key(), PRE_HASH, wrong)


def test_other_salt_length_passes_only_when_lenient(keys: Keys) -> None:
    key = serialization.load_pem_private_key(keys.private.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    pad = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH)
    raw = base64.b64encode(key.sign(PRE_HASH, pad, hashes.SHA256()))
    assert verify_logon_signature(key.public_key(), PRE_HASH, raw)
    assert not verify_logon_signature(key.public_key(), PRE_HASH, raw, strict_salt=True)


def test_garbage_raw_data_is_false_not_an_exception(signer: LogonSigner) -> None:
    pub = signer.public_key()
    assert not verify_logon_signature(pub, PRE_HASH, b"not base64!!")
    assert not verify_logon_signature(pub, PRE_HASH, b"")
    assert not verify_logon_signature(pub, PRE_HASH, base64.b64encode(b"\x00" * 256))


# --- the signer object ----------------------------------------------------------------------


def test_repr_and_str_show_only_the_key_id(signer: LogonSigner, keys: Keys) -> None:
    pem = keys.private.read_text()
    body_line = pem.splitlines()[1]
    d = str(signer._key.private_numbers().d)  # noqa: SLF001 - the secret we look for
    for text in (repr(signer), str(signer), f"{signer}", repr([signer])):
        assert KEY_ID in text
        assert "BEGIN" not in text and body_line not in text and d not in text
    assert repr(signer) == f"LogonSigner(key_id={KEY_ID!r})"


def test_signer_refuses_to_be_pickled(signer: LogonSigner) -> None:
    with pytest.raises(TypeError, match=KEY_ID):
        pickle.dumps(signer)


def test_from_private_key_signs_like_from_pem(keys: Keys) -> None:
    key = serialization.load_pem_private_key(keys.private.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    s = LogonSigner.from_private_key(key, KEY_ID)
    assert s.key_id == KEY_ID
    assert verify_logon_signature(load_public_key(keys.public), PRE_HASH, s.sign(PRE_HASH))


def test_from_private_key_refuses_small_rsa_key() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyLoadError, match="1024 bits") as info:
        LogonSigner.from_private_key(small, KEY_ID)
    assert KEY_ID in str(info.value)


def test_from_private_key_refuses_non_rsa_key() -> None:
    with pytest.raises(KeyLoadError, match="RSA"):
        LogonSigner.from_private_key(ec.generate_private_key(ec.SECP256R1()), KEY_ID)  # type: ignore[arg-type]


# --- loading private keys -------------------------------------------------------------------


def test_encrypted_key_with_passphrase_from_env(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in keys.enc_private.read_bytes()
    monkeypatch.setenv("TEST_KEY_PASSPHRASE", PASSPHRASE)
    s = LogonSigner.from_pem_file(keys.enc_private, KEY_ID, passphrase_env="TEST_KEY_PASSPHRASE")
    assert verify_logon_signature(load_public_key(keys.enc_public), PRE_HASH, s.sign(PRE_HASH))
    assert PASSPHRASE not in repr(s)


def test_passphrase_from_explicit_environ_mapping(keys: Keys) -> None:
    s = LogonSigner.from_pem_file(
        keys.enc_private, KEY_ID, "PP", environ={"PP": PASSPHRASE}
    )
    assert s.key_id == KEY_ID


def test_missing_passphrase_env_var(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_KEY_PASSPHRASE_MISSING", raising=False)
    with pytest.raises(KeyLoadError) as info:
        LogonSigner.from_pem_file(keys.enc_private, KEY_ID, "TEST_KEY_PASSPHRASE_MISSING")
    msg = str(info.value)
    assert str(keys.enc_private) in msg and KEY_ID in msg
    assert "TEST_KEY_PASSPHRASE_MISSING" in msg and "not set" in msg
    assert_no_secret(info.value, PASSPHRASE)


def test_empty_passphrase_env_var(keys: Keys) -> None:
    with pytest.raises(KeyLoadError, match="is empty"):
        LogonSigner.from_pem_file(keys.enc_private, KEY_ID, "PP", environ={"PP": ""})


def test_wrong_passphrase(keys: Keys) -> None:
    wrong = "hunter2-wrong-passphrase"
    with pytest.raises(KeyLoadError) as info:
        LogonSigner.from_pem_file(keys.enc_private, KEY_ID, "PP", environ={"PP": wrong})
    msg = str(info.value)
    assert str(keys.enc_private) in msg and KEY_ID in msg and "PP" in msg
    assert "passphrase" in msg
    assert_no_secret(info.value, wrong, PASSPHRASE)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_encrypted_key_without_passphrase_setting(keys: Keys) -> None:
    with pytest.raises(KeyLoadError, match="encrypted") as info:
        LogonSigner.from_pem_file(keys.enc_private, KEY_ID)
    assert KEY_ID in str(info.value) and str(keys.enc_private) in str(info.value)


def test_passphrase_configured_for_unencrypted_key(keys: Keys) -> None:
    with pytest.raises(KeyLoadError, match="not encrypted") as info:
        LogonSigner.from_pem_file(keys.private, KEY_ID, "PP", environ={"PP": PASSPHRASE})
    assert_no_secret(info.value, PASSPHRASE)


def test_not_a_pem_file(tmp_path: Path) -> None:
    path = tmp_path / "orders.pem"
    path.write_bytes(b"this is not a key\n")
    with pytest.raises(KeyLoadError, match="not a PEM") as info:
        LogonSigner.from_pem_file(path, KEY_ID)
    assert str(path) in str(info.value) and KEY_ID in str(info.value)
    assert "this is not a key" not in str(info.value)


def test_damaged_pem(tmp_path: Path, keys: Keys) -> None:
    lines = keys.private.read_text().splitlines()
    damaged = "\n".join([lines[0], lines[1][:-8] + "AAAAAAAA", lines[-1]]) + "\n"
    path = tmp_path / "damaged.pem"
    path.write_text(damaged)
    with pytest.raises(KeyLoadError, match="damaged") as info:
        LogonSigner.from_pem_file(path, KEY_ID)
    assert_no_secret(info.value, lines[1][:20])


def test_public_key_given_as_private_key(keys: Keys) -> None:
    with pytest.raises(KeyLoadError, match="not a private key"):
        LogonSigner.from_pem_file(keys.public, KEY_ID)


def test_missing_private_key_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pem"
    with pytest.raises(KeyLoadError, match="does not exist") as info:
        LogonSigner.from_pem_file(path, KEY_ID)
    assert str(path) in str(info.value) and KEY_ID in str(info.value)


def test_ec_private_key_file_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    with pytest.raises(KeyLoadError, match="not an RSA key"):
        LogonSigner.from_pem_file(path, KEY_ID)


def test_traditional_rsa_pem_is_accepted(tmp_path: Path, keys: Keys) -> None:
    key = serialization.load_pem_private_key(keys.private.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    path = tmp_path / "trad.pem"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
    s = LogonSigner.from_pem_file(path, KEY_ID)
    assert verify_logon_signature(key.public_key(), PRE_HASH, s.sign(PRE_HASH))


# --- public keys ----------------------------------------------------------------------------


def test_load_public_key_matches_the_private_key(keys: Keys, signer: LogonSigner) -> None:
    assert load_public_key(keys.public).public_numbers() == signer.public_key().public_numbers()


def test_load_public_key_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "k.pub"
    path.write_text("ssh-rsa AAAA...\n")
    with pytest.raises(KeyLoadError, match="not a PEM") as info:
        load_public_key(path, key_id=KEY_ID)
    assert str(path) in str(info.value) and KEY_ID in str(info.value)


def test_load_public_key_given_a_private_key(keys: Keys) -> None:
    with pytest.raises(KeyLoadError, match="not a public key") as info:
        load_public_key(keys.private)
    assert_no_secret(info.value)


def test_load_public_key_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="does not exist"):
        load_public_key(tmp_path / "missing.pem")


# --- key generation -------------------------------------------------------------------------


def test_generated_files_look_like_openssl_output(keys: Keys) -> None:
    priv = keys.private.read_text()
    pub = keys.public.read_text()
    assert priv.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert priv.rstrip().endswith("-----END PRIVATE KEY-----")
    assert pub.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert load_public_key(keys.public).key_size == 2048


def test_private_key_file_mode_is_0600(keys: Keys) -> None:
    assert stat.S_IMODE(os.stat(keys.private).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys.enc_private).st_mode) == 0o600


def test_generate_refuses_to_overwrite_private_key(keys: Keys, tmp_path: Path) -> None:
    before = keys.private.read_bytes()
    with pytest.raises(KeyLoadError, match="already exists") as info:
        generate_key_pair(keys.private, tmp_path / "new.pub.pem")
    assert str(keys.private) in str(info.value)
    assert keys.private.read_bytes() == before
    assert not (tmp_path / "new.pub.pem").exists()


def test_generate_refuses_to_overwrite_public_key(keys: Keys, tmp_path: Path) -> None:
    before = keys.public.read_bytes()
    with pytest.raises(KeyLoadError, match="already exists"):
        generate_key_pair(tmp_path / "new.pem", keys.public)
    assert keys.public.read_bytes() == before
    assert not (tmp_path / "new.pem").exists()


def test_generate_refuses_small_keys(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="2048"):
        generate_key_pair(tmp_path / "a.pem", tmp_path / "a.pub", bits=1024)
    assert not (tmp_path / "a.pem").exists()


def test_generate_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="does not exist"):
        generate_key_pair(tmp_path / "no" / "a.pem", tmp_path / "a.pub")
