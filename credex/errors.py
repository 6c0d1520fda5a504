"""The one place where credex failures map to gRPC status codes, and back.

Servers raise a `CredexError` subclass; `credex.handlers.rpc_handler` sends it as a gRPC
status whose message starts with a machine-readable reason. Clients turn an `AioRpcError`
back into the same typed exception with `from_rpc_error`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

import grpc

REASON_KEY = "credex-reason"
RETRY_KEY = "credex-retry-after-ms"


class Reason(StrEnum):
    """Why a request was refused; stable strings for clients and tests."""

    MALFORMED = "MALFORMED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNKNOWN_SIGNER = "UNKNOWN_SIGNER"
    UNKNOWN_REQUESTER = "UNKNOWN_REQUESTER"
    UNKNOWN_SUBJECT = "UNKNOWN_SUBJECT"
    SUBJECT_MISMATCH = "SUBJECT_MISMATCH"
    REQUEST_EXPIRED = "REQUEST_EXPIRED"
    REQUEST_NOT_YET_VALID = "REQUEST_NOT_YET_VALID"
    REPLAY = "REPLAY"
    WRONG_NODE = "WRONG_NODE"
    PEER_MISMATCH = "PEER_MISMATCH"
    MEMBER_SUSPENDED = "MEMBER_SUSPENDED"
    REGISTRY_STALE = "REGISTRY_STALE"
    ENROLLMENT_REFUSED = "ENROLLMENT_REFUSED"
    # The caller's certificate is listed as revoked (rotated away, reset by the operator, a
    # replaced directory certificate); a suspended or removed member's is MEMBER_SUSPENDED.
    CERTIFICATE_REVOKED = "CERTIFICATE_REVOKED"
    # An endpoint that is not host:port with a DNS name or an IP address the directory may dial.
    ENDPOINT_REFUSED = "ENDPOINT_REFUSED"
    ATTESTATION_MISMATCH = "ATTESTATION_MISMATCH"
    ATTESTATION_EXPIRED = "ATTESTATION_EXPIRED"
    CONSENT_NOT_FOUND = "CONSENT_NOT_FOUND"
    CONSENT_EXISTS = "CONSENT_EXISTS"
    CONSENT_REVOKED = "CONSENT_REVOKED"
    CONSENT_PAUSED = "CONSENT_PAUSED"
    CONSENT_STATE = "CONSENT_STATE"
    # A consent change signed before (or at) the consent's last change: it would undo a later one.
    STALE_CHANGE = "STALE_CHANGE"
    CONSENT_EXPIRED = "CONSENT_EXPIRED"
    CONSENT_NOT_YET_VALID = "CONSENT_NOT_YET_VALID"
    CONSENT_USED_UP = "CONSENT_USED_UP"
    CONSENT_WRONG_REQUESTER = "CONSENT_WRONG_REQUESTER"
    CONSENT_WRONG_PURPOSE = "CONSENT_WRONG_PURPOSE"
    CATEGORY_NOT_CONSENTED = "CATEGORY_NOT_CONSENTED"
    CATEGORY_NOT_SERVED = "CATEGORY_NOT_SERVED"
    CONSENT_EXCEEDS_PURPOSE = "CONSENT_EXCEEDS_PURPOSE"
    NO_RECORDS = "NO_RECORDS"
    RATE_LIMITED = "RATE_LIMITED"
    # A witness already holds a checkpoint of the log at this sequence number or later.
    CHECKPOINT_STALE = "CHECKPOINT_STALE"
    PURPOSE_LIMIT = "PURPOSE_LIMIT"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE = "DEADLINE"
    INTERNAL = "INTERNAL"
    # A node could not read its records for a query (the operator's log says why).
    ADAPTER_FAILED = "ADAPTER_FAILED"
    # A subject filed more disputes than the directory takes (per hour, or open at once).
    DISPUTE_LIMIT = "DISPUTE_LIMIT"
    # A subject holds as many live (not expired, not revoked) consents as the directory keeps.
    CONSENT_LIMIT = "CONSENT_LIMIT"


# Refusals decided before the sender was authenticated: whatever the request claims about
# itself (who sent it, which subject) is unproven and must not be filed under that subject.
UNAUTHENTICATED_REASONS = frozenset(
    {
        Reason.MALFORMED,
        Reason.BAD_SIGNATURE,
        Reason.UNKNOWN_SIGNER,
        Reason.UNKNOWN_REQUESTER,
        Reason.PEER_MISMATCH,
        Reason.RATE_LIMITED,
        Reason.MEMBER_SUSPENDED,
        Reason.CERTIFICATE_REVOKED,
    }
)


class CredexError(Exception):
    """A refusal or failure with a gRPC status code and a reason."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, reason: Reason, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidArgument(CredexError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(CredexError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(CredexError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(CredexError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CredexError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CredexError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(CredexError):
    """A limit was reached; `retry_after_s` says when trying again can succeed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(CredexError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(CredexError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(CredexError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[CredexError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
}
_DEFAULT_REASON: dict[grpc.StatusCode, Reason] = {
    grpc.StatusCode.UNAVAILABLE: Reason.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: Reason.DEADLINE,
}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> CredexError:
    """The typed exception for a failed call, reason included when the server sent one."""
    code = exc.code()
    details = exc.details() or ""
    reason = _DEFAULT_REASON.get(code, Reason.INTERNAL)
    retry_after_s: float | None = None
    metadata: Any = exc.trailing_metadata() or ()
    for key, value in metadata:
        if key == REASON_KEY and value in Reason.__members__:
            reason = Reason(value)
            details = details.removeprefix(f"{reason}: ")
        elif key == RETRY_KEY and str(value).isdigit():
            retry_after_s = int(value) / 1000
    cls = _BY_CODE.get(code, Internal)
    return cls(reason, details or code.name, retry_after_s=retry_after_s)


class ProfileVerificationError(Exception):
    """A profile the server delivered that does not verify on the requester's side (the
    directory's or a node's signature, or what the profile claims to answer): unlike a
    CredexError it is no refusal by a server, and the profile must not be used."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


MAX_DETAIL_CHARS = 512


def bounded(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Messages quote what callers sent; keep them short enough to travel as gRPC metadata."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
