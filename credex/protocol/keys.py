"""Ed25519 signing keys: create, save (mode 0600), load, fingerprint."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_SIZE = 32


class KeyFileError(Exception):
    """A key file is missing, unreadable, malformed or too widely readable."""


def key_id(public_key: bytes) -> str:
    """Short stable fingerprint of a raw Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()[:32]


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key with its fingerprint."""

    raw: bytes
    key_id: str = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_SIZE:
            raise ValueError(
                f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(self.raw)}"
            )
        object.__setattr__(self, "key_id", key_id(self.raw))
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.raw))

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when `signature` is this key's signature over `data`."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_hex(cls, text: str) -> VerifyKey:
        try:
            return cls(bytes.fromhex(text))
        except ValueError as exc:
            raise KeyFileError(f"not a hex Ed25519 public key: {exc}") from exc


class SigningKey:
    """An Ed25519 private key; never leaves the machine of its owner."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = VerifyKey(raw)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Deterministic key from 32 seed bytes (synthetic identities only)."""
        return cls(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def private_seed(self) -> bytes:
        """The 32-byte Ed25519 seed (RFC 8032's private key): for deriving keys from it."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Write the private key as PEM, readable by its owner only (atomically, so a reader
        never sees half a key); the public key beside it."""
        if not overwrite and path.exists():
            raise KeyFileError(f"{path} exists; refusing to overwrite a key")
        write_private(path, self.to_pem())
        save_public(self.public, public_path(path))

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        data = read_private(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path} is not a PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path} is not an Ed25519 key")
        return cls(key)


def write_private(path: Path, data: bytes) -> None:
    """Write secret bytes readable by the owner only, replacing any previous file at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_private(path: Path) -> bytes:
    """A secret file's bytes; refused when others may read it, as ssh does."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is accessible by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    return data


def public_path(private_path: Path) -> Path:
    """Where the public half of a saved key lives."""
    return private_path.with_suffix(".pub")


def save_public(key: VerifyKey, path: Path) -> None:
    write_public(path, key.to_pem())


def load_public(path: Path) -> VerifyKey:
    """Load a PEM public key (as written by `SigningKey.save`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return VerifyKey(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
