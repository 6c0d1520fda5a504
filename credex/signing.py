"""Signed envelopes: the signature covers a per-message-type domain tag plus the exact body.

Verification parses the body only after the signature over those bytes checks out, so
nothing is ever re-serialized and a signature for one message type never verifies as another.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from credex.errors import InvalidArgument, Reason, Unauthenticated
from credex.keys import SigningKey, VerifyKey
from credex.v1.common_pb2 import Signed

M = TypeVar("M", bound=Message)

_PREFIX = b"credex-signed-v1\x00"
MAX_BODY_BYTES = 4 * 1024 * 1024
VERIFIED_CACHE_SIZE = 16_384


class _VerifiedCache:
    """Signatures already found valid, by digest of (key, signature, tagged body): a consent
    or attestation arrives with every query, and an Ed25519 check costs about 0.1 ms. Only
    successes are kept, so a forgery is checked (and refused) every time; LRU-bounded."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def key(signed: Signed, tag: bytes, key: VerifyKey) -> bytes:
        h = hashlib.sha256(key.raw)
        h.update(len(signed.signature).to_bytes(4, "big") + signed.signature + tag)
        h.update(signed.body)
        return h.digest()

    def __contains__(self, item: bytes) -> bool:
        if item in self._seen:
            self._seen.move_to_end(item)
            return True
        return False

    def add(self, item: bytes) -> None:
        self._seen[item] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)


_verified = _VerifiedCache(VERIFIED_CACHE_SIZE)


def domain_tag(message_type: type[Message]) -> bytes:
    """The bytes prefixed to a body of this type before signing."""
    return _PREFIX + message_type.DESCRIPTOR.full_name.encode() + b"\x00"


def seal(message: Message, key: SigningKey) -> Signed:
    """Serialize `message` once and sign the tagged bytes."""
    body = message.SerializeToString(deterministic=True)
    return Signed(
        body=body, signature=key.sign(domain_tag(type(message)) + body), key_id=key.key_id
    )


def verify(
    signed: Signed, message_type: type[Message], key: VerifyKey, *, cache: bool = False
) -> bool:
    """True when `signed` is `key`'s signature over a body of `message_type`. With `cache`,
    a signature verified before is not verified again (for messages that recur, such as
    consents and attestations; one-off requests would only churn the cache)."""
    if signed.key_id != key.key_id:
        return False
    tag = domain_tag(message_type)
    if not cache:
        return key.verify(signed.signature, tag + signed.body)
    seen = _verified.key(signed, tag, key)
    if seen in _verified:
        return True
    if not key.verify(signed.signature, tag + signed.body):
        return False
    _verified.add(seen)
    return True


def open_signed(
    signed: Signed, message_type: type[M], key: VerifyKey, *, what: str, cache: bool = False
) -> M:
    """Verify, then parse. Raises Unauthenticated(BAD_SIGNATURE) or InvalidArgument(MALFORMED).
    `cache`: see `verify`."""
    if not signed.body or not signed.signature:
        raise InvalidArgument(Reason.MALFORMED, f"{what} is not signed")
    if len(signed.body) > MAX_BODY_BYTES:
        raise InvalidArgument(Reason.MALFORMED, f"{what} is larger than {MAX_BODY_BYTES} bytes")
    if not verify(signed, message_type, key, cache=cache):
        raise Unauthenticated(Reason.BAD_SIGNATURE, f"{what} signature does not verify")
    return parse(signed.body, message_type, what=what)


def parse(body: bytes, message_type: type[M], *, what: str) -> M:
    """Parse an (already verified or not yet trusted) body; MALFORMED on garbage."""
    message = message_type()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidArgument(Reason.MALFORMED, f"{what} does not decode: {exc}") from exc
    return message


def digest(signed: Signed) -> bytes:
    """SHA-256 of the signed body: what an answer or a log entry refers to."""
    return hashlib.sha256(signed.body).digest()
