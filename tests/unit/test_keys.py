"""Signing keys on disk: round trips, file modes, and refusals of bad key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from credex.protocol.keys import (
    KeyFileError,
    SigningKey,
    VerifyKey,
    key_id,
    load_public,
    public_path,
    save_public,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_save_load_round_trip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "keys" / "node.key"
    key.save(path)

    loaded = SigningKey.load(path)
    assert loaded.key_id == key.key_id
    assert loaded.public == key.public
    message = b"a message signed after loading"
    assert key.public.verify(loaded.sign(message), message)
    assert loaded.public.verify(key.sign(message), message)
    assert not loaded.public.verify(key.sign(message), message + b"!")


def test_saved_private_key_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "node.key"
        SigningKey.generate().save(path)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert b"PRIVATE KEY" in path.read_bytes()


def test_save_overwrite_keeps_the_file_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    key = SigningKey.generate()
    key.save(path, overwrite=True)
    assert mode(path) == 0o600
    assert SigningKey.load(path).key_id == key.key_id


def test_save_writes_the_public_key_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = SigningKey.generate()
    key.save(path)
    assert public_path(path) == tmp_path / "node.pub"
    assert load_public(tmp_path / "node.pub") == key.public


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first = SigningKey.generate()
    first.save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        SigningKey.generate().save(path)
    assert path.read_bytes() == before
    assert SigningKey.load(path).key_id == first.key_id
    assert load_public(public_path(path)) == first.public


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660, 0o610])
def test_load_refuses_a_key_file_others_can_access(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "node.key"
    SigningKey.generate().save(path)
    path.chmod(bad_mode)
    with pytest.raises(KeyFileError, match="chmod 600"):
        SigningKey.load(path)


def test_load_accepts_owner_read_only(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key = SigningKey.generate()
    key.save(path)
    path.chmod(0o400)
    assert SigningKey.load(path).key_id == key.key_id


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key at all", os.urandom(64), b"-----BEGIN PRIVATE KEY-----\nAAAA\n"],
    ids=["empty", "text", "random", "truncated-pem"],
)
def test_load_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        SigningKey.load(path)


def test_load_refuses_a_key_of_another_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "ec.key"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        SigningKey.load(path)


def test_load_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key"):
        SigningKey.load(tmp_path / "absent.key")


def test_public_key_file_round_trip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "pub" / "directory.pub"
    save_public(key.public, path)
    loaded = load_public(path)
    assert loaded == key.public
    assert loaded.key_id == key.key_id == key_id(key.public.raw)
    assert loaded.verify(key.sign(b"m"), b"m")


def test_load_public_refuses_garbage_and_private_keys(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pub"
    garbage.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public(garbage)
    private = tmp_path / "private.pub"
    private.write_bytes(SigningKey.generate().to_pem())
    with pytest.raises(KeyFileError):
        load_public(private)
    with pytest.raises(KeyFileError, match="cannot read public key"):
        load_public(tmp_path / "absent.pub")


def test_load_public_refuses_a_key_of_another_algorithm(tmp_path: Path) -> None:
    path = tmp_path / "ec.pub"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_public(path)


def test_from_seed_is_deterministic() -> None:
    a = SigningKey.from_seed(b"subject S1")
    b = SigningKey.from_seed(b"subject S1")
    c = SigningKey.from_seed(b"subject S2")
    assert a.key_id == b.key_id
    assert a.public == b.public
    assert a.to_pem() == b.to_pem()
    assert a.sign(b"x") == b.sign(b"x")  # Ed25519 signatures are deterministic too
    assert c.key_id != a.key_id
    assert not c.public.verify(a.sign(b"x"), b"x")


def test_generated_keys_differ() -> None:
    assert SigningKey.generate().key_id != SigningKey.generate().key_id


def test_key_id_is_a_fingerprint_of_the_public_key() -> None:
    key = SigningKey.from_seed(b"fingerprint")
    assert key.key_id == key_id(key.public.raw)
    assert len(key.key_id) == 32
    assert int(key.key_id, 16) >= 0


def test_verify_key_from_hex() -> None:
    key = SigningKey.generate()
    assert VerifyKey.from_hex(key.public.raw.hex()) == key.public
    with pytest.raises(KeyFileError):
        VerifyKey.from_hex("zz")
    with pytest.raises(KeyFileError):
        VerifyKey.from_hex("ab" * 31)
    with pytest.raises(ValueError, match="32 bytes"):
        VerifyKey(b"\x00" * 33)
