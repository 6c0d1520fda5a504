"""Signed envelopes: the signature covers a per-message-type domain tag plus the exact body.

Verification parses the body only after the signature over those bytes checks out, so
nothing is ever re-serialized and a signature for one message type never verifies as another.
Every body is held to its type's size cap (`MAX_SIGNED_BODY_BYTES`, checked before the
signature) and may carry no field its type does not define, at any depth (checked when it is
parsed): nothing can ride along in a signed message to be stored and passed on.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from credex.protocol.errors import Reason, refused
from credex.protocol.keys import SigningKey, VerifyKey
from credex.v1.common_pb2 import Signed

M = TypeVar("M", bound=Message)

_PREFIX = b"credex-signed-v1\x00"
VERIFIED_CACHE_SIZE = 16_384
KIB, MIB = 1024, 1024 * 1024
# The largest signed body of each type, in bytes (by full type name); a body over its cap is
# refused as MALFORMED before its signature is checked. Requests, consents and subject messages
# are small; answers, profiles and registry snapshots grow with what they carry (the directory
# caps a node's answer and a profile far lower: max_node_answer_bytes, max_profile_bytes).
MAX_SIGNED_BODY_BYTES: dict[str, int] = {
    "credex.v1.Consent": 4 * KIB,
    "credex.v1.ConsentTicket": 2 * KIB,
    "credex.v1.HolderListQuery": 1 * KIB,
    "credex.v1.NodeKeyRegistration": 16 * KIB,
    "credex.v1.ConsentRevocation": 1 * KIB,
    "credex.v1.ConsentPause": 1 * KIB,
    "credex.v1.SubjectAttestation": 1 * KIB,
    "credex.v1.ConsentListQuery": 1 * KIB,
    "credex.v1.AccessLogQuery": 1 * KIB,
    "credex.v1.DisputeListQuery": 1 * KIB,
    "credex.v1.Dispute": 8 * KIB,
    "credex.v1.DisputeNotice": 8 * KIB,
    "credex.v1.DisputeResolution": 8 * KIB,
    "credex.v1.NodeAnnouncement": 1 * KIB,
    "credex.v1.Enrollment": 16 * KIB,
    "credex.v1.KeyRotation": 16 * KIB,
    "credex.v1.ProfileRequest": 4 * KIB,
    "credex.v1.NodeQuery": 16 * KIB,
    "credex.v1.NodeAnswer": 16 * MIB,
    "credex.v1.Profile": 16 * MIB,
    "credex.v1.RegistrySnapshot": 8 * MIB,
    "credex.v1.RevocationFeed": 1 * MIB,
    "credex.v1.AuditCheckpoint": 1 * KIB,
    # The envelope itself, as stored on disk (a cached snapshot): its largest body and more.
    "credex.v1.Signed": 16 * MIB + 4 * KIB,
}
# The cap of a signed type the table does not list.
DEFAULT_MAX_SIGNED_BODY_BYTES = 64 * KIB
MAX_BODY_BYTES = 16 * MIB  # no signed body of any type is larger


def max_body_bytes(message_type: type[Message]) -> int:
    """The largest body of `message_type` any reader accepts."""
    name = message_type.DESCRIPTOR.full_name
    return MAX_SIGNED_BODY_BYTES.get(name, DEFAULT_MAX_SIGNED_BODY_BYTES)


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
        raise refused(Reason.MALFORMED, f"{what} is not signed")
    _check_size(signed.body, message_type, what)
    if not verify(signed, message_type, key, cache=cache):
        raise refused(Reason.BAD_SIGNATURE, f"{what} signature does not verify")
    return parse(signed.body, message_type, what=what)


def parse(body: bytes, message_type: type[M], *, what: str, strict: bool = True) -> M:
    """Parse an (already verified or not yet trusted) body; MALFORMED on garbage, on a body
    over its type's cap and on any field the type does not define. `strict=False` only for
    reading back what this server stored itself (rows from before these checks existed)."""
    if strict:
        _check_size(body, message_type, what)
    message = message_type()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise refused(Reason.MALFORMED, f"{what} does not decode: {exc}") from exc
    if strict and _has_unknown_fields(message):
        raise refused(
            Reason.MALFORMED,
            f"{what} carries an unknown field ({_first_unknown(body, message_type)}): "
            "a signed message may hold only the fields its type defines",
        )
    return message


def _check_size(body: bytes, message_type: type[Message], what: str) -> None:
    cap = max_body_bytes(message_type)
    if len(body) > cap:
        name = message_type.DESCRIPTOR.full_name
        raise refused(
            Reason.MALFORMED,
            f"{what} is {len(body)} bytes; a {name} may be at most {cap} bytes",
        )


def _has_unknown_fields(message: Message) -> bool:
    """Whether `message` or any message inside it holds fields its type does not define.
    Serialization keeps unknown fields, so dropping them (everywhere, in C) shrinks the
    message exactly when there were some: about a third of the cost of parsing, where walking
    the tree with UnknownFieldSet in Python costs ten times the parse."""
    before = message.ByteSize()
    message.DiscardUnknownFields()
    return message.ByteSize() != before


def _first_unknown(body: bytes, message_type: type[Message]) -> str:
    """Where the first unknown field sits, for the refusal: "field 100 in credex.v1.Consent"."""
    message = message_type()
    message.ParseFromString(body)
    found = _find_unknown(message)
    return found or "somewhere"


def _find_unknown(message: Message) -> str | None:
    unknown = UnknownFieldSet(message)
    if len(unknown):
        return f"field {unknown[0].field_number} in {message.DESCRIPTOR.full_name}"
    for field, value in message.ListFields():
        entry = field.message_type
        if field.type != FieldDescriptor.TYPE_MESSAGE or entry is None:
            continue
        if entry.GetOptions().map_entry:
            values = value.values()
            if entry.fields_by_name["value"].type != FieldDescriptor.TYPE_MESSAGE:
                continue
        elif field.is_repeated:
            values = value
        else:
            values = [value]
        for item in values:
            found = _find_unknown(item)
            if found:
                return found
    return None


def digest(signed: Signed) -> bytes:
    """SHA-256 of the signed body: what an answer or a log entry refers to."""
    return hashlib.sha256(signed.body).digest()
