"""Tables show other parties' text literally: a node cannot inject markup or break the CLI."""

from __future__ import annotations

import io

from rich.console import Console

from credex.client import (
    AccessLog,
    AccessView,
    ConsentView,
    NodeOutcome,
    ProfileRecord,
    VerifiedProfile,
)
from credex.render import print_access_log, print_consents, print_profile

HOSTILE = "see [/b] clause [red]x"


def render(fn: object, *args: object) -> str:
    out = io.StringIO()
    fn(Console(file=out, width=250, color_system=None), *args)  # type: ignore[operator]
    return out.getvalue()


def test_profile_with_markup_in_node_text_prints_it_literally() -> None:
    profile = VerifiedProfile(
        request_id="r-1",
        subject_id="S[1]",
        requester_id="bank",
        consent_id="c-[/i]",
        purpose="loan-application",
        categories=["financial"],
        assembled_at=0.0,
        nodes=[NodeOutcome("pboc", "DENIED", HOSTILE, ["financial"], 0, 1.0)],
        records=[
            ProfileRecord("pboc", "financial", "r1", "loan[/u]", 1.0, "CNY", 0.0, {"note": HOSTILE})
        ],
    )
    text = render(print_profile, profile)
    assert "[/b] clause [red]x" in text
    assert "loan[/u]" in text and "c-[/i]" in text


def test_consents_with_markup_print_literally() -> None:
    view = ConsentView("c-[/b]", "bank[", "loan-application", ["financial"], "active", 0, 1, 0, 0)
    assert "c-[/b]" in render(print_consents, [view])


def test_the_access_log_shows_how_many_times_a_refusal_was_repeated() -> None:
    counted = AccessView("", 0.0, "bank", "loan-application", "c-1", "refused:X[/b]", [], {}, 399)
    served = AccessView(
        "r-1", 0.0, "bank", "loan-application", "c-1", "assembled", ["financial"],
        {"pboc": "TOO_LARGE"},
    )  # fmt: skip
    text = render(print_access_log, AccessLog([counted, served], []))
    assert "times" in text and "399" in text and "refused:X[/b]" in text
    assert "pboc TOO_LARGE" in text
