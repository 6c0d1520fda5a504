"""Who is calling: the caller's identity as its verified certificate's credex URI name
states it (never the common name), and the refusals that depend on it."""

from __future__ import annotations

from typing import Any

import grpc

from credex.protocol.errors import CredexError, Reason, Unauthenticated, refused
from credex.protocol.identity import CertificateIdentity, peer_identities
from credex.runtime.gate import caller_key


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> CertificateIdentity:
    """Who the caller's verified certificate says it is, read from its credex URI name (never
    the common name); Unauthenticated if it showed no certificate or one without a credex
    identity (issued before identities were URI names: renew it)."""
    pems = list(context.auth_context().get("x509_pem_cert") or [])
    if len(pems) != 1:
        raise refused(Reason.UNKNOWN_SIGNER, "caller presented no member certificate")
    identity = peer_identities.identity(bytes(pems[0]))
    if identity is None:
        raise refused(
            Reason.UNKNOWN_SIGNER,
            "caller's certificate names no credex identity (renew it: `credex renew` or "
            "`credex-node renew`)",
        )
    return identity


def peer_member_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The member id in the caller's verified certificate; Unauthenticated if there is none.
    The directory's own certificate yields the directory's id."""
    return peer_identity(context).member_id


def caller_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Who per-caller limits count a call against: the member its certificate names, or, for a
    caller without one, its address (an IPv6 caller by its /64)."""
    try:
        return peer_member_id(context)
    except Unauthenticated:
        return f"address {caller_key(context.peer())}"


def peer_or_unknown(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's member id for logs, or "(no certificate)" when it showed none."""
    try:
        return peer_member_id(context)
    except Unauthenticated:
        return "(no certificate)"


def require_peer(context: grpc.aio.ServicerContext[Any, Any], member_id: str) -> None:
    """Refuse unless the caller's certificate is member `member_id`'s: nobody signs as
    another."""
    peer = peer_identity(context)
    if peer.directory or peer.member_id != member_id:
        raise refused(
            Reason.PEER_MISMATCH,
            f"certificate is {peer.member_id!r} but the request is by {member_id!r}",
        )


def is_directory(context: grpc.aio.ServicerContext[Any, Any], directory_id: str) -> bool:
    """Whether the caller's certificate is the directory's own (see `require_directory`)."""
    try:
        require_directory(context, directory_id)
    except CredexError:
        return False
    return True


def require_directory(context: grpc.aio.ServicerContext[Any, Any], directory_id: str) -> None:
    """Refuse unless the caller's certificate is the directory's own (`credex:directory:…`,
    which the CA never gives a member)."""
    peer = peer_identity(context)
    if not peer.directory or peer.member_id != directory_id:
        raise refused(
            Reason.PEER_MISMATCH, f"certificate is {peer.member_id!r}, not the directory's"
        )
