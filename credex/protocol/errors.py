"""The one place where credex failures map to gRPC status codes, and back.

Every `Reason` has exactly one entry in `CATALOG`: its status code, whether a client may try
again, and whether the refusal was decided only after the sender's signature checked out.
Servers raise `refused(reason, message)`, which builds the `CredexError` subclass of that
code; `credex.runtime.handlers.rpc_handler` sends it as a gRPC status whose message starts with the
reason. Clients turn an `AioRpcError` back into the same typed exception with
`from_rpc_error`, which keeps the original call on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

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
    # An authenticated member asks for what its role does not allow (a requester following a
    # node's feed, a node asking for a profile).
    WRONG_ROLE = "WRONG_ROLE"
    # A consent names a requester the directory does not know.
    REQUESTER_NOT_FOUND = "REQUESTER_NOT_FOUND"
    # An enrollment for a member id that is taken.
    MEMBER_EXISTS = "MEMBER_EXISTS"
    # A public key already registered (a member's signing key, a subject's key for a node).
    KEY_IN_USE = "KEY_IN_USE"
    DISPUTE_EXISTS = "DISPUTE_EXISTS"
    DISPUTE_NOT_FOUND = "DISPUTE_NOT_FOUND"
    # A decision about a dispute that was decided already.
    DISPUTE_RESOLVED = "DISPUTE_RESOLVED"


_C = grpc.StatusCode


@dataclass(frozen=True)
class ReasonInfo:
    """What a reason means to a client: its one status code, whether the same request can
    succeed later (after `credex-retry-after-ms` when the server sends it), and whether the
    refusal was decided only after the sender proved who it is (else what the request claims
    about itself is unproven and is filed under nobody)."""

    code: grpc.StatusCode
    retryable: bool = False
    proves_sender: bool = True


CATALOG: dict[Reason, ReasonInfo] = {
    Reason.MALFORMED: ReasonInfo(_C.INVALID_ARGUMENT, proves_sender=False),
    Reason.BAD_SIGNATURE: ReasonInfo(_C.UNAUTHENTICATED, proves_sender=False),
    Reason.UNKNOWN_SIGNER: ReasonInfo(_C.UNAUTHENTICATED, proves_sender=False),
    Reason.UNKNOWN_REQUESTER: ReasonInfo(_C.UNAUTHENTICATED, proves_sender=False),
    Reason.UNKNOWN_SUBJECT: ReasonInfo(_C.NOT_FOUND),
    Reason.SUBJECT_MISMATCH: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.REQUEST_EXPIRED: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.REQUEST_NOT_YET_VALID: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.REPLAY: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.WRONG_NODE: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.PEER_MISMATCH: ReasonInfo(_C.PERMISSION_DENIED, proves_sender=False),
    Reason.MEMBER_SUSPENDED: ReasonInfo(_C.PERMISSION_DENIED, proves_sender=False),
    Reason.REGISTRY_STALE: ReasonInfo(_C.UNAVAILABLE, retryable=True),
    Reason.ENROLLMENT_REFUSED: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CERTIFICATE_REVOKED: ReasonInfo(_C.UNAUTHENTICATED, proves_sender=False),
    Reason.ENDPOINT_REFUSED: ReasonInfo(_C.INVALID_ARGUMENT),
    Reason.ATTESTATION_MISMATCH: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.ATTESTATION_EXPIRED: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CONSENT_NOT_FOUND: ReasonInfo(_C.NOT_FOUND),
    Reason.CONSENT_EXISTS: ReasonInfo(_C.ALREADY_EXISTS),
    Reason.CONSENT_REVOKED: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CONSENT_PAUSED: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CONSENT_STATE: ReasonInfo(_C.FAILED_PRECONDITION),
    Reason.STALE_CHANGE: ReasonInfo(_C.FAILED_PRECONDITION),
    Reason.CONSENT_EXPIRED: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CONSENT_NOT_YET_VALID: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CONSENT_USED_UP: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CONSENT_WRONG_REQUESTER: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CONSENT_WRONG_PURPOSE: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CATEGORY_NOT_CONSENTED: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.CATEGORY_NOT_SERVED: ReasonInfo(_C.INVALID_ARGUMENT),
    Reason.CONSENT_EXCEEDS_PURPOSE: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.NO_RECORDS: ReasonInfo(_C.NOT_FOUND),
    Reason.RATE_LIMITED: ReasonInfo(_C.RESOURCE_EXHAUSTED, retryable=True, proves_sender=False),
    Reason.CHECKPOINT_STALE: ReasonInfo(_C.FAILED_PRECONDITION),
    Reason.PURPOSE_LIMIT: ReasonInfo(_C.RESOURCE_EXHAUSTED, retryable=True),
    Reason.UNAVAILABLE: ReasonInfo(_C.UNAVAILABLE, retryable=True),
    Reason.DEADLINE: ReasonInfo(_C.DEADLINE_EXCEEDED, retryable=True),
    Reason.INTERNAL: ReasonInfo(_C.INTERNAL),
    Reason.ADAPTER_FAILED: ReasonInfo(_C.INTERNAL, retryable=True),
    Reason.DISPUTE_LIMIT: ReasonInfo(_C.RESOURCE_EXHAUSTED, retryable=True),
    Reason.CONSENT_LIMIT: ReasonInfo(_C.RESOURCE_EXHAUSTED),
    Reason.WRONG_ROLE: ReasonInfo(_C.PERMISSION_DENIED),
    Reason.REQUESTER_NOT_FOUND: ReasonInfo(_C.NOT_FOUND),
    Reason.MEMBER_EXISTS: ReasonInfo(_C.ALREADY_EXISTS),
    Reason.KEY_IN_USE: ReasonInfo(_C.ALREADY_EXISTS),
    Reason.DISPUTE_EXISTS: ReasonInfo(_C.ALREADY_EXISTS),
    Reason.DISPUTE_NOT_FOUND: ReasonInfo(_C.NOT_FOUND),
    Reason.DISPUTE_RESOLVED: ReasonInfo(_C.FAILED_PRECONDITION),
}

# Refusals decided before the sender was authenticated: whatever the request claims about
# itself (who sent it, which subject) is unproven and must not be filed under that subject.
UNAUTHENTICATED_REASONS = frozenset(r for r, info in CATALOG.items() if not info.proves_sender)


class CredexError(Exception):
    """A refusal or failure with a gRPC status code and a reason. `call` is the failed call
    it was made from, on the client side (see `from_rpc_error`)."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        reason: Reason,
        message: str,
        *,
        retry_after_s: float | None = None,
        call: grpc.aio.AioRpcError | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s
        self.call = call

    @property
    def retryable(self) -> bool:
        return CATALOG[self.reason].retryable if self.reason in CATALOG else False


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


def refused(reason: Reason, message: str, *, retry_after_s: float | None = None) -> CredexError:
    """The exception for `reason`, of the class of its one status code in `CATALOG`."""
    return _BY_CODE[CATALOG[reason].code](reason, message, retry_after_s=retry_after_s)


def from_rpc_error(exc: grpc.aio.AioRpcError) -> CredexError:
    """The typed exception for a failed call, reason included when the server sent one; the
    call stays on it as `call` (its code, details and trailing metadata as received)."""
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
    return cls(reason, details or code.name, retry_after_s=retry_after_s, call=exc)


R = TypeVar("R")


async def call_rpc(method: Callable[..., Awaitable[R]], request: Any, *, deadline_s: float) -> R:
    """One call; its failure raised as the `CredexError` of its status (`from_rpc_error`):
    the one place outgoing calls turn gRPC failures into credex ones."""
    try:
        return await method(request, timeout=deadline_s)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


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
