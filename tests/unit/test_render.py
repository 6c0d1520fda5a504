"""Tables show other parties' text literally: a node cannot inject markup or break the CLI."""

from __future__ import annotations

import io
import re

from rich.console import Console

from credex.cli.render import (
    MemberRow,
    print_access_log,
    print_consents,
    print_members,
    print_profile,
    printable,
)
from credex.sdk.client import (
    AccessLog,
    AccessView,
    ConsentView,
    NodeOutcome,
    ProfileRecord,
    VerifiedProfile,
)

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


CONTROL = "\x1b[2J\x1b]0;owned\x07\u202eevil\u2066\n\r\t\x9b\x00"
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def test_printable_escapes_every_character_that_steers_a_terminal() -> None:
    shown = printable(f"ok{CONTROL}é中")
    assert not UNSAFE.search(shown) and "\n" not in shown
    assert shown == ("ok\\x1b[2J\\x1b]0;owned\\x07\\u202eevil\\u2066\\x0a\\x0d\\x09\\x9b\\x00é中")
    assert printable("plain text, 中文, ü") == "plain text, 中文, ü"


def test_profile_members_and_access_log_escape_control_characters() -> None:
    profile = VerifiedProfile(
        request_id="r-1",
        subject_id=f"S{CONTROL}",
        requester_id="bank",
        consent_id="c-1",
        purpose="loan-application",
        categories=["financial"],
        assembled_at=0.0,
        nodes=[NodeOutcome("pboc", "DENIED", f"detail{CONTROL}", ["financial"], 0, 1.0)],
        records=[
            ProfileRecord(
                "pboc",
                "financial",
                "r1",
                "loan",
                1.0,
                f"CNY{CONTROL}",
                0.0,
                {"note": f"n{CONTROL}"},
            )
        ],
    )
    member = MemberRow("evil-node", "node", f"Evil{CONTROL}", "CN", [], "00" * 16, "h:1")
    log = AccessLog(
        records=[
            AccessView(
                "r-1",
                0.0,
                "bank",
                "loan-application",
                "c-1",
                f"x{CONTROL}",
                [],
                {"n1": "OK", "n2": f"DENIED{CONTROL}"},
            )
        ],
        consents=[],
    )
    for text in (
        render(print_profile, profile),
        render(print_members, [member]),
        render(print_access_log, log),
    ):
        assert not UNSAFE.search(text), repr(text)
        assert "\\x1b" in text


def test_the_access_log_shows_how_many_times_a_refusal_was_repeated() -> None:
    counted = AccessView("", 0.0, "bank", "loan-application", "c-1", "refused:X[/b]", [], {}, 399)
    served = AccessView(
        "r-1", 0.0, "bank", "loan-application", "c-1", "assembled", ["financial"],
        {"pboc": "TOO_LARGE"},
    )  # fmt: skip
    text = render(print_access_log, AccessLog([counted, served], []))
    assert "times" in text and "399" in text and "refused:X[/b]" in text
    assert "pboc TOO_LARGE" in text
