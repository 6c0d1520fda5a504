"""Signed envelopes: the signature covers a per-message-type domain tag plus the exact body.

Verification parses the body only after the signature over those bytes checks out, so
nothing is ever re-serialized and a signature for one message type never verifies as another.
"""

from __future__ import annotations

import hashlib
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from credex.errors import InvalidArgument, Reason, Unauthenticated
from credex.keys import SigningKey, VerifyKey
from credex.v1.common_pb2 import Signed

M = TypeVar("M", bound=Message)

_PREFIX = b"credex-signed-v1\x00"
MAX_BODY_BYTES = 4 * 1024 * 1024


def domain_tag(message_type: type[Message]) -> bytes:
    """The bytes prefixed to a body of this type before signing."""
    return _PREFIX + message_type.DESCRIPTOR.full_name.encode() + b"\x00"


def seal(message: Message, key: SigningKey) -> Signed:
    """Serialize `message` once and sign the tagged bytes."""
    body = message.SerializeToString(deterministic=True)
    return Signed(
        body=body, signature=key.sign(domain_tag(type(message)) + body), key_id=key.key_id
    )


def verify(signed: Signed, message_type: type[Message], key: VerifyKey) -> bool:
    """True when `signed` is `key`'s signature over a body of `message_type`."""
    if signed.key_id != key.key_id:
        return False
    return key.verify(signed.signature, domain_tag(message_type) + signed.body)


def open_signed(signed: Signed, message_type: type[M], key: VerifyKey, *, what: str) -> M:
    """Verify, then parse. Raises Unauthenticated(BAD_SIGNATURE) or InvalidArgument(MALFORMED)."""
    if not signed.body or not signed.signature:
        raise InvalidArgument(Reason.MALFORMED, f"{what} is not signed")
    if len(signed.body) > MAX_BODY_BYTES:
        raise InvalidArgument(Reason.MALFORMED, f"{what} is larger than {MAX_BODY_BYTES} bytes")
    if not verify(signed, message_type, key):
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
