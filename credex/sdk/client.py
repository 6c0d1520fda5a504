"""Client SDK for requesters and subjects: signs requests, verifies what comes back.

A requester checks the directory's signature on a profile and every node's signature on
its records, with keys from the registry, so it need not trust the directory's word.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from credex.protocol import vocab
from credex.protocol.clock import Clock, from_timestamp, system_clock, to_timestamp
from credex.protocol.consents import check_covers, create_consent, open_consent
from credex.protocol.errors import (
    CredexError,
    InvalidArgument,
    ProfileVerificationError,
    Reason,
    Unauthenticated,
    refused,
)
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.registry_view import RegistryView
from credex.protocol.signing import M, open_signed, parse, seal
from credex.protocol.tickets import SubjectKeys, coarse_window, tickets_for
from credex.protocol.tls import TlsIdentity
from credex.sdk.link import AsyncClosing, DirectoryLink
from credex.sdk.renewal import CertificateRenewal
from credex.v1 import dispute_pb2, member_pb2, requester_pb2, subject_pb2
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import Consent, ConsentPause, ConsentRevocation, ConsentStatus
from credex.v1.node_pb2 import NodeAnswer

DEFAULT_TIMEOUT_S = 30.0
REQUEST_LIFETIME_S = 120.0
NONCE_BYTES = 16  # every subject-signed message carries a fresh one: the directory refuses repeats
DAY_S = 86_400.0
HOLDERS_TTL_S = 300.0  # how long a subject client trusts what it learned of its data's holders


@dataclass(frozen=True)
class ProfileRecord:
    """One record of a profile with the node that signed it."""

    node_id: str
    category: str
    record_id: str
    kind: str
    value: float
    unit: str
    occurred_at: float
    attributes: dict[str, str]
    # The id of an open dispute about this record ("" if none).
    disputed_by: str = ""


@dataclass(frozen=True)
class NodeOutcome:
    node_id: str
    status: str
    detail: str
    categories: list[str]
    records: int
    elapsed_ms: float


@dataclass(frozen=True)
class FactorView:
    label: str
    kind: str
    effect: float
    records: list[str]


@dataclass(frozen=True)
class ScoreView:
    """The directory's score of the profile under its policy, with the key factors."""

    policy: str
    policy_version: str
    policy_digest: str
    value: float
    band: str
    as_of: float
    factors: list[FactorView]


@dataclass(frozen=True)
class VerifiedProfile:
    """A profile whose directory signature and node signatures all checked out."""

    request_id: str
    subject_id: str
    requester_id: str
    consent_id: str
    purpose: str
    categories: list[str]
    assembled_at: float
    nodes: list[NodeOutcome]
    records: list[ProfileRecord] = field(default_factory=list)
    score: ScoreView | None = None

    def by_category(self) -> dict[str, list[ProfileRecord]]:
        grouped: dict[str, list[ProfileRecord]] = {}
        for record in self.records:
            grouped.setdefault(record.category, []).append(record)
        return grouped


@dataclass(frozen=True)
class ConsentView:
    consent_id: str
    requester_id: str
    purpose: str
    categories: list[str]
    status: str
    uses: int
    max_uses: int
    not_before: float
    not_after: float
    # The nodes that hold a ticket of this consent (only they are asked under it).
    ticket_nodes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HolderView:
    """A node that holds some of the subject's data."""

    node_id: str
    name: str
    categories: list[str]
    # Whether the subject's key for this node is registered (tickets for it can be checked).
    key_registered: bool


@dataclass(frozen=True)
class AccessView:
    """One profile request about a subject, as the directory recorded it."""

    request_id: str
    at: float
    requester_id: str
    purpose: str
    consent_id: str
    outcome: str
    categories: list[str]
    nodes: dict[str, str]
    # How many requests this record stands for (repeated refusals are counted, not listed).
    count: int = 1


@dataclass(frozen=True)
class DisputeView:
    dispute_id: str
    node_id: str
    record_id: str
    reason: str
    status: str
    resolution: str
    filed_at: float
    resolved_at: float | None
    # The category the record was disclosed under ("" for disputes filed before they had one).
    category: str = ""


@dataclass(frozen=True)
class AccessLog:
    """Access records, newest first, and the subject's consents now."""

    records: list[AccessView]
    consents: list[ConsentView]
    # Whether older records exist than these (a limit or `since` stopped the reading).
    more: bool = False


def status_name(value: ConsentStatus.ValueType) -> str:
    return ConsentStatus.Name(value).removeprefix("CONSENT_STATUS_").lower()


def node_status_name(value: requester_pb2.NodeStatus.ValueType) -> str:
    return requester_pb2.NodeStatus.Name(value).removeprefix("NODE_STATUS_")


class _Client(AsyncClosing):
    """A link to the directory; failures raised as typed exceptions."""

    def __init__(
        self,
        target: str,
        tls: TlsIdentity,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Clock = system_clock,
    ) -> None:
        self._tls = tls  # replaced by a renewal; the link dials again with it
        self._link = DirectoryLink(target, lambda: self._tls, deadline_s=timeout_s)
        self._clock = clock

    async def close(self) -> None:
        await self._link.close()


class SubjectClient(_Client):
    """A subject: grants, revokes and lists its own consents, signing each request. Talks to the
    directory's public port; needs only the federation CA certificate to check the server."""

    def __init__(
        self, target: str, subject_id: str, key: SigningKey, *, ca_pem: bytes, **kwargs: Any
    ) -> None:
        super().__init__(target, TlsIdentity(ca_pem), **kwargs)
        self.subject_id = subject_id
        self._key = key
        self._keys = SubjectKeys(key)  # one key per node, derived from `key` on this device
        # The nodes that hold my data (node id -> categories) as last learned, and when.
        self._holders: tuple[float, dict[str, list[vocab.Category]]] | None = None

    async def grant(
        self,
        *,
        requester_id: str,
        purpose: vocab.Purpose,
        categories: Iterable[vocab.Category],
        valid_days: float = 30.0,
        max_uses: int = 1,
        consent_id: str | None = None,
    ) -> str:
        """Grant a consent, with a ticket for each node that holds my data in its categories
        (signed with my key for that node, registered first if it is not). Its times are whole
        hours (from the start of this hour), so they single out no grant at the nodes."""
        now = self._clock()
        not_before, not_after = coarse_window(now, now + valid_days * DAY_S)
        signed = create_consent(
            self._key,
            requester_id=requester_id,
            purpose=purpose,
            categories=categories,
            not_before=not_before,
            not_after=not_after,
            max_uses=max_uses,
            consent_id=consent_id,
        )
        consent = parse(signed.body, Consent, what="consent")
        for fresh in (False, True):
            holders = await self._registered_holders(fresh=fresh)
            tickets = tickets_for(consent, self._keys, holders)
            request = subject_pb2.GrantConsentRequest(
                consent=signed, subject_id=self.subject_id, tickets=tickets
            )
            try:
                response = await self._link.call(self._link.subjects.GrantConsent, request)
            except (InvalidArgument, Unauthenticated):
                if fresh or self._holders is None:
                    raise
                self._holders = None  # the holders changed since: learn them again, once
                continue
            return str(response.consent_id)
        raise AssertionError("unreachable")

    async def holders(self) -> list[HolderView]:
        """The nodes that hold my data, and whether my key for each is registered."""
        return [
            holder_view(h, h.key_id == self._keys.for_node(h.node_id).key_id)
            for h in await self._list_holders()
        ]

    async def _list_holders(self) -> list[subject_pb2.Holder]:
        query = subject_pb2.HolderListQuery(
            subject_id=self.subject_id,
            issued_at=to_timestamp(self._clock()),
            nonce=os.urandom(NONCE_BYTES),
        )
        response = await self._link.call(
            self._link.subjects.ListHolders,
            subject_pb2.ListHoldersRequest(query=seal(query, self._key)),
        )
        return list(response.holders)

    async def _registered_holders(self, *, fresh: bool = False) -> dict[str, list[vocab.Category]]:
        """node id -> categories, for every node that holds my data, after registering my key
        for each node that lacks it (or holds one not derived from my key). Learned once per
        HOLDERS_TTL_S (unless `fresh`): a grant then costs one call of my rate at the
        directory, not three."""
        now = self._clock()
        if not fresh and self._holders is not None and now - self._holders[0] < HOLDERS_TTL_S:
            return self._holders[1]
        holders = await self._list_holders()
        missing = [h for h in holders if h.key_id != self._keys.for_node(h.node_id).key_id]
        if missing:
            registration = subject_pb2.NodeKeyRegistration(
                subject_id=self.subject_id,
                issued_at=to_timestamp(self._clock()),
                nonce=os.urandom(NONCE_BYTES),
                keys=[
                    subject_pb2.NodeKey(
                        node_id=h.node_id, public_key=self._keys.for_node(h.node_id).public.raw
                    )
                    for h in missing
                ],
            )
            response = await self._link.call(
                self._link.subjects.RegisterNodeKeys,
                subject_pb2.RegisterNodeKeysRequest(registration=seal(registration, self._key)),
            )
            holders = list(response.holders)
        found = {h.node_id: list(h.categories) for h in holders}
        self._holders = (now, found)
        return found

    async def add_tickets(self, consent_id: str) -> list[str]:
        """Give a consent tickets for the nodes that hold my data and have none of it yet (a
        consent from before tickets, or a node that came to hold my data since); returns the
        nodes that hold a ticket of it now."""
        for state in await self._consent_states():
            consent = parse(state.consent.body, Consent, what="consent", strict=False)
            if consent.consent_id == consent_id:
                break
        else:
            raise refused(Reason.CONSENT_NOT_FOUND, f"you hold no consent {consent_id!r}")
        holders = await self._registered_holders(fresh=True)
        todo = {n: c for n, c in holders.items() if n not in set(state.ticket_nodes)}
        tickets = tickets_for(consent, self._keys, todo)
        if not tickets:
            return list(state.ticket_nodes)
        response = await self._link.call(
            self._link.subjects.AddTickets,
            subject_pb2.AddTicketsRequest(
                subject_id=self.subject_id, consent_id=consent_id, tickets=tickets
            ),
        )
        return list(response.ticket_nodes)

    async def revoke(self, consent_id: str) -> str:
        revocation = ConsentRevocation(
            consent_id=consent_id,
            subject_id=self.subject_id,
            issued_at=to_timestamp(self._clock()),
            nonce=os.urandom(NONCE_BYTES),
        )
        response = await self._link.call(
            self._link.subjects.RevokeConsent,
            subject_pb2.RevokeConsentRequest(revocation=seal(revocation, self._key)),
        )
        return status_name(response.status)

    async def pause(self, consent_id: str, *, paused: bool = True) -> str:
        """Pause a consent (refused everywhere until resumed); `paused=False` resumes it."""
        pause = ConsentPause(
            consent_id=consent_id,
            subject_id=self.subject_id,
            paused=paused,
            issued_at=to_timestamp(self._clock()),
            nonce=os.urandom(NONCE_BYTES),
        )
        response = await self._link.call(
            self._link.subjects.PauseConsent,
            subject_pb2.PauseConsentRequest(pause=seal(pause, self._key)),
        )
        return status_name(response.status)

    async def resume(self, consent_id: str) -> str:
        return await self.pause(consent_id, paused=False)

    async def consents(self) -> list[ConsentView]:
        return [consent_view(state) for state in await self._consent_states()]

    async def _consent_states(self) -> list[subject_pb2.ConsentState]:
        query = subject_pb2.ConsentListQuery(
            subject_id=self.subject_id,
            issued_at=to_timestamp(self._clock()),
            nonce=os.urandom(NONCE_BYTES),
        )
        response = await self._link.call(
            self._link.subjects.ListConsents,
            subject_pb2.ListConsentsRequest(query=seal(query, self._key)),
        )
        return list(response.consents)

    async def file_dispute(
        self,
        *,
        node_id: str,
        category: vocab.Category | str,
        record_id: str,
        reason: str,
    ) -> DisputeView:
        """Contest one record a node disclosed, named by its category and record id as the
        profile shows them; the node's operator decides. NotFound if the node holds no such
        record about me."""
        dispute = dispute_pb2.Dispute(
            dispute_id=f"d-{uuid.uuid4().hex}",
            subject_id=self.subject_id,
            node_id=node_id,
            record_id=record_id,
            reason=reason,
            issued_at=to_timestamp(self._clock()),
            category=vocab.parse_category(category) if isinstance(category, str) else category,
            nonce=os.urandom(NONCE_BYTES),
        )
        response = await self._link.call(
            self._link.subjects.FileDispute,
            subject_pb2.FileDisputeRequest(dispute=seal(dispute, self._key)),
        )
        return dispute_view(response.dispute)

    async def disputes(self) -> list[DisputeView]:
        query = subject_pb2.DisputeListQuery(
            subject_id=self.subject_id,
            issued_at=to_timestamp(self._clock()),
            nonce=os.urandom(NONCE_BYTES),
        )
        response = await self._link.call(
            self._link.subjects.ListDisputes,
            subject_pb2.ListDisputesRequest(query=seal(query, self._key)),
        )
        return [dispute_view(d) for d in response.disputes]

    async def access_log(
        self, *, limit: int | None = None, since: float | None = None, page_size: int = 0
    ) -> AccessLog:
        """The profile requests about me (who, when, why, which nodes answered), newest first,
        and my consents now. Reads page after page (`page_size` records each; 0: the
        directory's default) until the oldest, `limit` records, or a record before `since`."""
        records: list[AccessView] = []
        consents: list[ConsentView] = []
        token = ""
        while True:
            query = subject_pb2.AccessLogQuery(
                subject_id=self.subject_id,
                issued_at=to_timestamp(self._clock()),
                nonce=os.urandom(NONCE_BYTES),
                page_size=page_size,
                page_token=token,
            )
            response = await self._link.call(
                self._link.subjects.GetAccessLog,
                subject_pb2.GetAccessLogRequest(query=seal(query, self._key)),
            )
            if not token:
                consents = [consent_view(state) for state in response.consents]
            for r in response.records:
                view = access_view(r)
                if (since is not None and view.at < since) or (
                    limit is not None and len(records) >= limit
                ):
                    return AccessLog(records, consents, more=True)
                records.append(view)
            if not response.next_page_token or not response.records:
                return AccessLog(records, consents)
            if response.next_page_token == token:  # pages that do not advance: stop here
                return AccessLog(records, consents, more=True)
            token = response.next_page_token


def access_view(record: subject_pb2.AccessRecord) -> AccessView:
    return AccessView(
        request_id=record.request_id,
        at=from_timestamp(record.at),
        requester_id=record.requester_id,
        purpose=record.purpose,
        consent_id=record.consent_id,
        outcome=record.outcome,
        categories=list(record.categories),
        nodes={n.node_id: n.status for n in record.nodes},
        count=record.count or 1,
    )


def score_view(score: requester_pb2.Score) -> ScoreView:
    return ScoreView(
        policy=score.policy,
        policy_version=score.policy_version,
        policy_digest=score.policy_digest,
        value=score.value,
        band=score.band,
        as_of=from_timestamp(score.as_of),
        factors=[FactorView(f.label, f.kind, f.effect, list(f.records)) for f in score.factors],
    )


def dispute_view(state: dispute_pb2.DisputeState) -> DisputeView:
    return DisputeView(
        dispute_id=state.dispute_id,
        node_id=state.node_id,
        record_id=state.record_id,
        reason=state.reason,
        status=dispute_pb2.DisputeStatus.Name(state.status).removeprefix("DISPUTE_STATUS_").lower(),
        resolution=state.resolution,
        filed_at=from_timestamp(state.filed_at),
        resolved_at=from_timestamp(state.resolved_at) if state.HasField("resolved_at") else None,
        category=vocab.category_name(state.category) if state.category else "",
    )


def consent_view(state: subject_pb2.ConsentState) -> ConsentView:
    # What the directory holds, as granted: shown, not relied on (it may predate the checks).
    consent = parse(state.consent.body, Consent, what="consent", strict=False)
    return ConsentView(
        consent_id=consent.consent_id,
        requester_id=consent.requester_id,
        purpose=vocab.purpose_name(consent.purpose),
        categories=vocab.category_names(consent.categories),
        status=status_name(state.status),
        uses=state.uses,
        max_uses=consent.max_uses,
        not_before=from_timestamp(consent.not_before),
        not_after=from_timestamp(consent.not_after),
        ticket_nodes=list(state.ticket_nodes),
    )


def holder_view(holder: subject_pb2.Holder, registered: bool) -> HolderView:
    return HolderView(
        node_id=holder.node_id,
        name=holder.name,
        categories=vocab.category_names(holder.categories),
        key_registered=registered,
    )


class RequesterClient(_Client):
    """A member (usually a requester): obtains profiles under a subject's consent and verifies
    them. Talks to the directory's member port over mutual TLS with its own certificate."""

    def __init__(
        self,
        target: str,
        requester_id: str,
        key: SigningKey,
        *,
        tls: TlsIdentity,
        directory_key: VerifyKey | None = None,
        renewal: CertificateRenewal | None = None,
        **kwargs: Any,
    ) -> None:
        """`directory_key` pins the directory's signing key (from enrollment); without it the
        key the directory reports about itself is used. With `renewal`, the certificate is
        renewed before a call once it is in the last third of its life (or expired)."""
        super().__init__(target, tls, **kwargs)
        self.requester_id = requester_id
        self._key = key
        self._directory_key = directory_key
        self._renewal = renewal
        self._members: member_pb2.ListMembersResponse | None = None
        self._registry: RegistryView | None = None

    async def _fresh_certificate(self) -> None:
        """Renew the certificate if due, and talk over the new one from now on."""
        if self._renewal is None:
            return
        renewed = await self._renewal.renew_if_due(clock=self._clock)
        if renewed is None:
            return
        self._tls = renewed

    async def members(self, *, refresh: bool = False) -> member_pb2.ListMembersResponse:
        """The member list as the directory reports it (members, their current and retired
        keys, and the directory key), fetched once and again on `refresh`. For listing; what
        verifies answers is `registry`, which the directory signs."""
        if self._members is None or refresh:
            await self._fresh_certificate()
            self._members = await self._link.call(
                self._link.members.ListMembers, member_pb2.ListMembersRequest()
            )
        return self._members

    async def _directory_public_key(self) -> VerifyKey:
        """The pinned directory key, or the one the directory reports about itself."""
        if self._directory_key is not None:
            return self._directory_key
        return VerifyKey((await self.members()).directory_public_key)

    async def registry(self, *, refresh: bool = False) -> RegistryView:
        """The directory-signed registry, fetched once and again on `refresh` (then only
        asking whether it changed); ProfileVerificationError if it does not verify."""
        if self._registry is not None and not refresh:
            return self._registry
        await self._fresh_certificate()
        held = self._registry
        response = await self._link.call(
            self._link.members.GetRegistry,
            member_pb2.GetRegistryRequest(known_version=held.version if held else 0),
        )
        now = self._clock()
        if response.HasField("snapshot"):
            key = await self._directory_public_key()
            try:
                self._registry = RegistryView.open(response.snapshot, key, known_current_at=now)
            except CredexError as err:
                raise ProfileVerificationError(err.message) from None
        elif held is not None and response.version == held.version:
            held.known_current_at = now
        else:
            raise ProfileVerificationError("the directory sent no registry snapshot")
        assert self._registry is not None
        return self._registry

    def profile_request(
        self,
        *,
        subject_id: str,
        consent_id: str,
        purpose: vocab.Purpose,
        categories: Sequence[vocab.Category] = (),
    ) -> requester_pb2.GetProfileRequest:
        """A signed, fresh, single-use profile request."""
        now = self._clock()
        request = requester_pb2.ProfileRequest(
            request_id=f"r-{uuid.uuid4().hex}",
            nonce=os.urandom(16),
            issued_at=to_timestamp(now),
            expires_at=to_timestamp(now + REQUEST_LIFETIME_S),
            requester_id=self.requester_id,
            subject_id=subject_id,
            consent_id=consent_id,
            purpose=purpose,
            categories=categories,
        )
        return requester_pb2.GetProfileRequest(request=seal(request, self._key))

    async def send_profile_request(
        self, request: requester_pb2.GetProfileRequest
    ) -> VerifiedProfile:
        """The profile, verified; a CredexError if the directory refused, a
        ProfileVerificationError if what it sent does not verify."""
        await self._fresh_certificate()
        response = await self._link.call(self._link.requesters.GetProfile, request)
        sent = parse(request.request.body, requester_pb2.ProfileRequest, what="profile request")
        return await self.verify_profile(response.profile, sent)

    async def get_profile(
        self,
        *,
        subject_id: str,
        consent_id: str,
        purpose: vocab.Purpose,
        categories: Sequence[vocab.Category] = (),
    ) -> VerifiedProfile:
        return await self.send_profile_request(
            self.profile_request(
                subject_id=subject_id,
                consent_id=consent_id,
                purpose=purpose,
                categories=categories,
            )
        )

    async def verify_profile(
        self, signed: Any, request: requester_pb2.ProfileRequest | None = None
    ) -> VerifiedProfile:
        """Check the directory's signature, that the profile answers `request`, and each node's
        signature on its answer with the node's key valid when it signed (its current key, or
        a retired one still valid then); a key the member list does not know yet makes it
        fetched again. ProfileVerificationError (no server refusal) if anything fails."""
        directory_key = await self._directory_public_key()
        profile = _verified(signed, requester_pb2.Profile, directory_key, "profile")
        if request is not None and (
            profile.request_id,
            profile.requester_id,
            profile.subject_id,
            profile.consent_id,
            profile.purpose,
        ) != (
            request.request_id,
            request.requester_id,
            request.subject_id,
            request.consent_id,
            request.purpose,
        ):
            raise ProfileVerificationError("profile does not answer this request")
        _check_consent_proof(profile)
        query_ids = [r.query_id for r in profile.nodes]
        if len(set(query_ids)) != len(query_ids):
            raise ProfileVerificationError("profile reuses a node query id")
        answers: dict[str, NodeAnswer] = {}
        for result in profile.nodes:
            if result.status == requester_pb2.NodeStatus.NODE_STATUS_OK:
                answers[result.query_id] = await self._node_answer(result)
        records: list[ProfileRecord] = []
        outcomes: list[NodeOutcome] = []
        for result in profile.nodes:
            count = 0
            if result.status == requester_pb2.NodeStatus.NODE_STATUS_OK:
                answer = answers[result.query_id]
                count = len(answer.records)
                records.extend(
                    ProfileRecord(
                        node_id=result.node_id,
                        category=vocab.category_name(r.category),
                        record_id=r.record_id,
                        kind=r.kind,
                        value=r.value,
                        unit=r.unit,
                        occurred_at=from_timestamp(r.occurred_at),
                        attributes=dict(r.attributes),
                        disputed_by=r.disputed_by,
                    )
                    for r in answer.records
                )
            outcomes.append(
                NodeOutcome(
                    node_id=result.node_id,
                    status=node_status_name(result.status),
                    detail=result.detail,
                    categories=vocab.category_names(result.categories),
                    records=count,
                    elapsed_ms=result.elapsed_ms,
                )
            )
        return VerifiedProfile(
            request_id=profile.request_id,
            subject_id=profile.subject_id,
            requester_id=profile.requester_id,
            consent_id=profile.consent_id,
            purpose=vocab.purpose_name(profile.purpose),
            categories=vocab.category_names(profile.categories),
            assembled_at=from_timestamp(profile.assembled_at),
            nodes=outcomes,
            records=sorted(records, key=lambda r: (r.category, r.node_id, r.occurred_at)),
            score=score_view(profile.score) if profile.HasField("score") else None,
        )

    async def _node_answer(self, result: requester_pb2.NodeResult) -> NodeAnswer:
        """The node's answer in `result`, verified with the node's key valid when it signed,
        as the directory-signed registry states it. The registry is fetched again, once, for
        a node or key it does not know yet, and for an answer signed later than the registry
        we hold can vouch for the node's current key (it may have been rotated since)."""
        for attempt in range(2):
            view = await self.registry(refresh=attempt > 0)
            member = view.get(result.node_id)
            if member is None:
                if attempt == 0:
                    continue  # a node that joined since the registry was fetched
                raise ProfileVerificationError(f"{result.node_id} is not a member")
            period = member.keys.period_of(result.answer.key_id)
            if period is None:
                if attempt == 0:
                    continue  # a key the node rotated to since the registry was fetched
                raise ProfileVerificationError(
                    f"{result.node_id} signed with key {result.answer.key_id[:32]!r}, "
                    "which is not one of its keys"
                )
            answer = _verified(result.answer, NodeAnswer, period.key, f"{result.node_id}'s answer")
            if from_timestamp(answer.answered_at) >= view.vouches_until(period):
                if period.until is None and attempt == 0:
                    continue  # the key may have been retired since: ask the registry again
                raise ProfileVerificationError(
                    f"{result.node_id}'s answer is signed with a key retired before it was given"
                    if period.until is not None
                    else f"{result.node_id}'s answer is dated after the registry vouches for "
                    "its key"
                )
            if answer.request_id != result.query_id or answer.node_id != result.node_id:
                raise ProfileVerificationError(f"{result.node_id}'s answer is for another query")
            return answer
        raise AssertionError("unreachable")


def _check_consent_proof(profile: requester_pb2.Profile) -> None:
    """The subject's own signature on the consent the profile was assembled under, and that it
    names this requester, purpose and consent id, covers the profile's categories and was
    valid when the profile was assembled: the directory cannot invent a permission."""
    if not profile.consent.body:
        raise ProfileVerificationError("profile carries no consent signed by the subject")
    try:
        consent = open_consent(profile.consent)
        if consent.consent_id != profile.consent_id:
            raise ProfileVerificationError("profile carries another consent than it names")
        check_covers(
            consent,
            requester_id=profile.requester_id,
            purpose=profile.purpose,
            categories=profile.categories,
            now=from_timestamp(profile.assembled_at),
        )
    except CredexError as err:
        raise ProfileVerificationError(f"the subject's consent: {err.message}") from None


def _verified(signed: Signed, message_type: type[M], key: VerifyKey, what: str) -> M:
    """`open_signed` for what the requester checks itself: a failure is a
    ProfileVerificationError, not a refusal."""
    try:
        return open_signed(signed, message_type, key, what=what)
    except CredexError as err:
        raise ProfileVerificationError(err.message) from None
