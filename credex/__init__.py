"""credex: a federated credit-information exchange.

This package is the SDK of requesters and subjects; its public names are below and pinned
by tests/test_exports.py. Inside it, by audience (dependencies run down this list only):
`credex.protocol` (the kernel every party shares), `credex.sdk` (clients),
`credex.runtime` (what both servers run on), `credex.cli` (command lines),
`credex.directory` and `credex.node` (the two servers), `credex.lab` (the research lab).
"""

from credex.protocol.clock import Clock
from credex.protocol.errors import (
    AlreadyExists,
    CredexError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProfileVerificationError,
    Reason,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from credex.protocol.keys import KeyFileError, SigningKey, VerifyKey
from credex.protocol.tls import TlsIdentity
from credex.sdk.client import (
    AccessLog,
    AccessView,
    ConsentView,
    DisputeView,
    FactorView,
    HolderView,
    NodeOutcome,
    ProfileRecord,
    RequesterClient,
    ScoreView,
    SubjectClient,
    VerifiedProfile,
)
from credex.sdk.link import DirectoryLink
from credex.sdk.member_home import MemberHome, enroll_home
from credex.sdk.rotation import rotate_key

__version__ = "0.1.0"

__all__ = [
    "AccessLog",
    "AccessView",
    "AlreadyExists",
    "Clock",
    "ConsentView",
    "CredexError",
    "DeadlineExceeded",
    "DirectoryLink",
    "DisputeView",
    "FactorView",
    "FailedPrecondition",
    "HolderView",
    "Internal",
    "InvalidArgument",
    "KeyFileError",
    "MemberHome",
    "NodeOutcome",
    "NotFound",
    "PermissionDenied",
    "ProfileRecord",
    "ProfileVerificationError",
    "Reason",
    "RequesterClient",
    "ResourceExhausted",
    "ScoreView",
    "SigningKey",
    "SubjectClient",
    "TlsIdentity",
    "Unauthenticated",
    "Unavailable",
    "VerifiedProfile",
    "VerifyKey",
    "enroll_home",
    "rotate_key",
]
