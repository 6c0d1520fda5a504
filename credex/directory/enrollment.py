"""Enrollment: one-time tokens issued by the operator, redeemed for a certificate and a place
in the registry (or, after an operator's key reset, new keys for an existing member); and
certificate renewal. The member's private keys never reach the directory."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509

from credex.directory.identity import IdentityDesk
from credex.directory.registry import ROLE_NAMES, ROLES_BY_NAME, MemberInfo, Registry
from credex.protocol import vocab
from credex.protocol.clock import Clock
from credex.protocol.errors import Reason, refused
from credex.protocol.identity import is_directory_name
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.pki import cert_pem
from credex.protocol.signing import open_signed, parse
from credex.runtime.handlers import RpcRuntime, rpc_handler
from credex.runtime.storage import Connection, require_unit
from credex.v1 import enrollment_pb2, enrollment_pb2_grpc, member_pb2

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class TokenGrant:
    """What the operator decided when issuing a token."""

    member_id: str
    role: str
    name: str
    jurisdiction: str
    categories: tuple[str, ...]
    hosts: tuple[str, ...]
    # A token from `credex-directory reset-key`: the member exists and enrolls again with new
    # keys (its old key and certificates were revoked when the token was issued).
    reset: bool = False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens are kept only as hashes; each works once and until it expires."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def issue(self, grant: TokenGrant, expires_at: float) -> str:
        if grant.role not in ROLES_BY_NAME:
            raise ValueError(f"role must be one of {', '.join(ROLES_BY_NAME)}")
        if grant.role == "node" and not grant.categories:
            raise ValueError("a node needs at least one category")
        for category in grant.categories:
            vocab.parse_category(category)
        token = secrets.token_urlsafe(24)
        require_unit(self._conn)
        self._conn.execute(
            "INSERT INTO enrollment_tokens VALUES (?, ?, ?, NULL)",
            (_digest(token), json.dumps(grant.__dict__), expires_at),
        )
        return token

    def peek(self, token: str, now: float) -> TokenGrant:
        """The grant behind a usable token; PermissionDenied if unknown, used or expired."""
        row = self._conn.execute(
            "SELECT grant_json, expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?",
            (_digest(token),),
        ).fetchone()
        if row is None:
            raise refused(Reason.ENROLLMENT_REFUSED, "unknown enrollment token")
        grant_json, expires_at, used_at = row
        if used_at is not None:
            raise refused(Reason.ENROLLMENT_REFUSED, "enrollment token already used")
        if now >= expires_at:
            raise refused(Reason.ENROLLMENT_REFUSED, "enrollment token expired")
        data = json.loads(grant_json)
        return TokenGrant(
            member_id=data["member_id"],
            role=data["role"],
            name=data["name"],
            jurisdiction=data["jurisdiction"],
            categories=tuple(data["categories"]),
            hosts=tuple(data["hosts"]),
            reset=bool(data.get("reset", False)),
        )

    def redeem(self, token: str, now: float) -> None:
        """Mark used, atomically; fails if another redemption won the race."""
        require_unit(self._conn)
        cur = self._conn.execute(
            "UPDATE enrollment_tokens SET used_at = ? "
            "WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?",
            (now, _digest(token), now),
        )
        if cur.rowcount != 1:
            raise refused(Reason.ENROLLMENT_REFUSED, "enrollment token already used")


class EnrollmentService(enrollment_pb2_grpc.EnrollmentServiceServicer):
    def __init__(
        self,
        *,
        tokens: TokenStore,
        registry: Registry,
        identity: IdentityDesk,
        ca_cert: x509.Certificate,
        directory_key: SigningKey,
        directory_id: str,
        clock: Clock,
        runtime: RpcRuntime,
    ) -> None:
        self.runtime = runtime  # see rpc_handler
        self._tokens = tokens
        self._registry = registry
        self._identity = identity
        self._ca_cert = ca_cert
        self._directory_key = directory_key
        self._directory_id = directory_id
        self._clock = clock

    @rpc_handler
    async def Enroll(
        self, request: enrollment_pb2.EnrollRequest, context: Context
    ) -> enrollment_pb2.EnrollResponse:
        claimed = parse(request.enrollment.body, enrollment_pb2.Enrollment, what="enrollment")
        try:
            key = VerifyKey(claimed.signing_key)
        except ValueError as exc:
            raise refused(Reason.MALFORMED, f"signing key: {exc}") from None
        # Signed by the key it registers: the member holds that key.
        enrollment = open_signed(
            request.enrollment, enrollment_pb2.Enrollment, key, what="enrollment"
        )
        done = self._identity.stored(
            request.enrollment, enrollment_pb2.Enrollment, enrollment_pb2.EnrollResponse
        )
        if done is not None:  # exactly this request was answered: the member lost the reply
            return done  # type: ignore[no-any-return]
        now = self._clock()
        grant = self._tokens.peek(enrollment.token, now)
        if grant.member_id != enrollment.member_id:
            raise refused(
                Reason.ENROLLMENT_REFUSED, f"token is for {grant.member_id!r}, not this member"
            )
        if ROLE_NAMES.get(enrollment.role) != grant.role:
            raise refused(Reason.ENROLLMENT_REFUSED, f"token is for a {grant.role}")
        if is_directory_name(grant.member_id) or grant.member_id == self._directory_id:
            raise refused(Reason.ENROLLMENT_REFUSED, "that id is the directory's")
        existing = self._registry.get(grant.member_id)
        if grant.reset:
            if existing is None or existing.status == member_pb2.MemberStatus.MEMBER_STATUS_REMOVED:
                raise refused(Reason.ENROLLMENT_REFUSED, f"{grant.member_id} cannot enroll again")
        elif existing is not None:
            raise refused(Reason.MEMBER_EXISTS, f"{grant.member_id} is already a member")
        if self._registry.key_in_use(key.key_id):
            raise refused(Reason.KEY_IN_USE, "that signing key is already registered")
        with self.runtime.storage.unit():
            self._tokens.redeem(enrollment.token, now)
            if existing is not None:  # a reset: same member, same names, new keys
                cert = self._identity.issue(enrollment.csr_pem, grant.member_id, existing.hosts)
                self._identity.reset_key(existing, key)
            else:
                cert = self._identity.issue(enrollment.csr_pem, grant.member_id, grant.hosts)
                self._registry.put(
                    MemberInfo(
                        member_id=grant.member_id,
                        role=ROLES_BY_NAME[grant.role],
                        name=grant.name or grant.member_id,  # the operator's word, not the member's
                        jurisdiction=grant.jurisdiction,
                        categories=tuple(sorted(vocab.parse_category(c) for c in grant.categories)),
                        key=key,
                        hosts=grant.hosts,
                    )
                )
            member = self._registry.get(grant.member_id)
            assert member is not None
            return self._identity.remember(  # type: ignore[no-any-return]
                request.enrollment,
                enrollment_pb2.Enrollment,
                member.member_id,
                enrollment_pb2.EnrollResponse(
                    certificate_pem=cert_pem(cert),
                    ca_certificate_pem=cert_pem(self._ca_cert),
                    directory_public_key=self._directory_key.public.raw,
                    directory_id=self._directory_id,
                    member=member.to_proto(),
                ),
            )

    @rpc_handler
    async def RenewCertificate(
        self, request: enrollment_pb2.RenewCertificateRequest, context: Context
    ) -> enrollment_pb2.RenewCertificateResponse:
        """A fresh certificate, authorised by the member's current signing key alone."""
        return self._identity.renew(request)
