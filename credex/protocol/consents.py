"""Consents: created and signed by the subject, verified by the directory and by every node."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from credex.protocol import vocab
from credex.protocol.clock import from_timestamp, to_timestamp
from credex.protocol.errors import Reason, refused
from credex.protocol.keys import SigningKey, VerifyKey
from credex.protocol.signing import open_signed, parse, seal
from credex.v1.common_pb2 import Signed
from credex.v1.consent_pb2 import Consent, ConsentTicket

MAX_CATEGORIES = 16


def create_consent(
    key: SigningKey,
    *,
    requester_id: str,
    purpose: vocab.Purpose,
    categories: Iterable[vocab.Category],
    not_before: float,
    not_after: float,
    max_uses: int,
    data_from: float | None = None,
    data_to: float | None = None,
    consent_id: str | None = None,
) -> Signed:
    """A consent signed by the subject's `key`."""
    consent = Consent(
        consent_id=consent_id or f"c-{uuid.uuid4().hex}",
        subject_key=key.public.raw,
        requester_id=requester_id,
        purpose=purpose,
        categories=sorted(set(categories)),
        not_before=to_timestamp(not_before),
        not_after=to_timestamp(not_after),
        max_uses=max_uses,
        issued_at=to_timestamp(not_before),
    )
    if data_from is not None:
        consent.data_from.CopyFrom(to_timestamp(data_from))
    if data_to is not None:
        consent.data_to.CopyFrom(to_timestamp(data_to))
    return seal(consent, key)


def open_consent(signed: Signed) -> Consent:
    """Verify a consent against the subject key it names; checks its shape, not its use."""
    unverified = parse(signed.body, Consent, what="consent")
    try:
        subject_key = VerifyKey(unverified.subject_key)
    except ValueError as exc:
        raise refused(Reason.MALFORMED, f"consent subject key: {exc}") from exc
    consent = open_signed(signed, Consent, subject_key, what="consent", cache=True)
    validate_shape(consent)
    return consent


def validate_shape(consent: Consent) -> None:
    """Reject consents no honest subject could have meant."""
    if not consent.consent_id or len(consent.consent_id) > 128:
        raise refused(Reason.MALFORMED, "consent id missing or too long")
    if not consent.requester_id:
        raise refused(Reason.MALFORMED, "consent names no requester")
    if consent.purpose not in vocab.PURPOSE_CATEGORIES:
        raise refused(Reason.MALFORMED, "consent purpose missing or unknown")
    cats = list(consent.categories)
    if not cats or len(cats) > MAX_CATEGORIES or len(set(cats)) != len(cats):
        raise refused(Reason.MALFORMED, "consent categories empty or repeated")
    if any(c not in vocab.ALL_CATEGORIES for c in cats):
        raise refused(Reason.MALFORMED, "consent names an unknown category")
    if from_timestamp(consent.not_after) <= from_timestamp(consent.not_before):
        raise refused(Reason.MALFORMED, "consent ends before it starts")
    if consent.max_uses < 1:
        raise refused(Reason.MALFORMED, "consent max_uses must be at least 1")


def check_within_purpose(consent: Consent | ConsentTicket) -> None:
    """A consent (or a node's ticket of one) may not cover more than its purpose allows."""
    allowed = vocab.PURPOSE_CATEGORIES[consent.purpose]
    extra = [c for c in consent.categories if c not in allowed]
    if extra:
        raise refused(
            Reason.CONSENT_EXCEEDS_PURPOSE,
            f"purpose {vocab.purpose_name(consent.purpose)} does not allow "
            f"{', '.join(vocab.category_names(extra))}",
        )


def check_covers(
    consent: Consent | ConsentTicket,
    *,
    requester_id: str,
    purpose: vocab.Purpose,
    categories: Iterable[vocab.Category],
    now: float,
) -> None:
    """Refuse unless `consent` is valid now for this requester, purpose and every category: the
    directory's check on a consent, a node's on its ticket (the refusals say which it was)."""
    what = "ticket" if isinstance(consent, ConsentTicket) else "consent"
    categories = list(categories)
    if purpose not in vocab.PURPOSE_CATEGORIES:
        raise refused(Reason.MALFORMED, f"unknown purpose {int(purpose)}")
    unknown = [int(c) for c in categories if c not in vocab.ALL_CATEGORIES]
    if unknown:
        raise refused(Reason.MALFORMED, f"unknown categories {unknown}")
    if consent.requester_id != requester_id:
        raise refused(Reason.CONSENT_WRONG_REQUESTER, f"{what} is not for requester {requester_id}")
    if consent.purpose != purpose:
        raise refused(
            Reason.CONSENT_WRONG_PURPOSE,
            f"{what} is for {vocab.purpose_name(consent.purpose)}, "
            f"not {vocab.purpose_name(purpose)}",
        )
    if now < from_timestamp(consent.not_before):
        raise refused(Reason.CONSENT_NOT_YET_VALID, f"{what} is not valid yet")
    if now >= from_timestamp(consent.not_after):
        raise refused(Reason.CONSENT_EXPIRED, f"{what} has expired")
    granted = set(consent.categories)
    missing = [c for c in categories if c not in granted]
    if missing:
        raise refused(
            Reason.CATEGORY_NOT_CONSENTED,
            f"{what} does not cover {', '.join(vocab.category_names(missing))}",
        )
