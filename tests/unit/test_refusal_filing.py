"""One rule for both of the directory's services: a refusal is filed under the subject a request
names only once the sender's signature checked out; before that, what it claims is quoted in
the detail and filed under nobody (so nobody can fill another person's access log)."""

from __future__ import annotations

import pytest

from credex.directory.verify import file_refusal
from credex.protocol.errors import UNAUTHENTICATED_REASONS, PermissionDenied, Reason


@pytest.mark.parametrize("reason", sorted(UNAUTHENTICATED_REASONS))
@pytest.mark.parametrize("signed_by_subject", [True, False])
def test_a_refusal_before_the_signature_checked_out_is_filed_under_nobody(
    reason: Reason, signed_by_subject: bool
) -> None:
    filing = file_refusal(
        PermissionDenied(reason, "refused"), "S1", "'S1'", signed_by_subject=signed_by_subject
    )
    assert (filing.proven, filing.subject_ref, filing.detail) == (
        False, "", "refused (claimed: 'S1')",
    )  # fmt: skip


def test_an_unknown_subject_is_unproven_only_when_the_subject_signs() -> None:
    """For a subject's own message the subject is the signer: an unknown subject is an unknown
    signer. A requester's request names a subject after its signature checked out."""
    err = PermissionDenied(Reason.UNKNOWN_SUBJECT, "no subject 'S404'")
    by_subject = file_refusal(err, "S404", "'S404'", signed_by_subject=True)
    by_requester = file_refusal(err, "S404", "'S404'", signed_by_subject=False)
    assert (by_subject.proven, by_subject.subject_ref) == (False, "")
    assert (by_requester.proven, by_requester.subject_ref, by_requester.detail) == (
        True, "S404", "no subject 'S404'",
    )  # fmt: skip


@pytest.mark.parametrize("signed_by_subject", [True, False])
def test_a_refusal_after_the_signature_is_filed_under_the_subject(signed_by_subject: bool) -> None:
    err = PermissionDenied(Reason.CONSENT_PAUSED, "consent is paused")
    filing = file_refusal(err, "S" * 300, "ignored", signed_by_subject=signed_by_subject)
    assert (filing.proven, filing.subject_ref, filing.detail) == (
        True, "S" * 128, "consent is paused",
    )  # fmt: skip
