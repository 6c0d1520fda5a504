"""Human-readable tables (rich) for profiles, consents and members, and the one escape every
command line applies to text from other parties before it reaches a terminal."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from credex.protocol.vocab import category_names
from credex.sdk.client import AccessLog, ConsentView, HolderView, ScoreView, VerifiedProfile
from credex.v1.member_pb2 import Member, MemberRole, MemberStatus

STATUS_STYLE = {"OK": "green", "NOT_FOUND": "yellow"}

# C0 controls (newline and tab too: a value never spans or fakes lines), DEL, C1 controls, line
# and paragraph separators, and the marks and overrides that reorder bidirectional text.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every character that could steer a terminal shown escaped (`\\x1b`,
    `\\u202e`): a dispute reason, a record's attribute, a member's name or an error from the
    wire cannot move the cursor, recolour, retitle, clear or reorder what the reader sees."""
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _add(table: Table, *cells: str | Text) -> None:
    """Add a row whose text is shown literally: values from other parties are never markup,
    and their control characters are shown escaped (a Text cell is the caller's own)."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(printable(cell)) for cell in cells))


def markup_safe(text: str) -> str:
    """Text from other parties inside rich markup: escaped both as markup and as controls."""
    return escape(printable(text))


def day(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d")


def moment(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def print_profile(console: Console, profile: VerifiedProfile, *, max_records: int = 8) -> None:
    """Per-node status, then records grouped by category with their source node."""
    console.print(
        f"[bold]Profile[/bold] of subject [cyan]{markup_safe(profile.subject_id)}[/cyan] for "
        f"[cyan]{markup_safe(profile.requester_id)}[/cyan] ({markup_safe(profile.purpose)}), "
        f"consent {markup_safe(profile.consent_id)}, request {markup_safe(profile.request_id)}"
    )
    nodes = Table(title="Sources", title_justify="left")
    for col in ("node", "categories", "status", "records", "ms", "detail"):
        nodes.add_column(col, justify="right" if col in {"records", "ms"} else "left")
    for n in profile.nodes:
        style = STATUS_STYLE.get(n.status, "red")
        _add(
            nodes,
            n.node_id,
            ", ".join(n.categories),
            Text(n.status, style=style),
            str(n.records),
            f"{n.elapsed_ms:.1f}",
            n.detail,
        )
    console.print(nodes)
    records = Table(title="Records (node-signed, verified)", title_justify="left")
    for col in ("category", "source", "kind", "value", "date"):
        records.add_column(col, justify="right" if col == "value" else "left", no_wrap=True)
    records.add_column("details", overflow="fold")
    for category, items in sorted(profile.by_category().items()):
        shown = sorted(items, key=lambda r: r.occurred_at, reverse=True)[:max_records]
        for i, r in enumerate(shown):
            _add(
                records,
                category if i == 0 else "",
                r.node_id,
                r.kind,
                f"{r.value:g} {r.unit}".strip() + (" (disputed)" if r.disputed_by else ""),
                day(r.occurred_at),
                _details(r.attributes),
            )
        if len(items) > len(shown):
            _add(records, "", "", f"… {len(items) - len(shown)} more", "", "", "")
    if profile.records:
        console.print(records)
    else:
        console.print("[yellow]No records were disclosed.[/yellow]")
    if profile.score is not None:
        print_score(console, profile.score)


def print_score(console: Console, score: ScoreView) -> None:
    """The score, its band and policy, and the factors that moved it most."""
    console.print(
        f"[bold]Score {score.value:g}[/bold] ({markup_safe(score.band)}) under policy "
        f"{markup_safe(score.policy)} v{markup_safe(score.policy_version)}"
    )
    for factor in score.factors:
        shown = ", ".join(factor.records[:3]) + (
            f" and {len(factor.records) - 3} more" if len(factor.records) > 3 else ""
        )
        console.print(Text(printable(f"  {factor.effect:+g}  {factor.label}  ({shown})")))


def _details(attributes: dict[str, str], limit: int = 3, width: int = 28) -> str:
    """The first few attributes, each shortened, so a record stays on a line or two."""
    parts = [
        f"{k}={v if len(v) <= width else v[: width - 1] + '…'}"
        for k, v in sorted(attributes.items())[:limit]
    ]
    return ", ".join(parts)


def terminal_console() -> Console:
    """A console that is at least 120 columns wide when output is not a terminal (logs, CI)."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def print_access_log(console: Console, log: AccessLog) -> None:
    """Who asked for the subject's profile, when and why, and which nodes answered (newest
    first; `times` counts repeated refusals recorded as one)."""
    table = Table(title="Who asked for my profile", title_justify="left")
    for col in ("when", "requester", "purpose", "consent", "outcome", "times", "nodes"):
        table.add_column(col, overflow="fold", justify="right" if col == "times" else "left")
    for r in log.records:
        _add(
            table,
            moment(r.at),
            r.requester_id,
            r.purpose,
            r.consent_id,
            r.outcome,
            str(r.count),
            Text("\n".join(printable(f"{n} {status}") for n, status in sorted(r.nodes.items()))),
        )
    console.print(table)
    print_consents(console, log.consents)


def print_consents(console: Console, consents: Iterable[ConsentView]) -> None:
    table = Table(title="Consents", title_justify="left")
    columns = ("consent", "requester", "purpose", "categories", "status", "uses", "valid until")
    for col in (*columns, "nodes with a ticket"):
        table.add_column(col)
    for c in consents:
        _add(
            table,
            c.consent_id,
            c.requester_id,
            c.purpose,
            ", ".join(c.categories),
            c.status,
            f"{c.uses}/{c.max_uses}",
            moment(c.not_after),
            ", ".join(c.ticket_nodes) or "none",
        )
    console.print(table)


def print_holders(console: Console, holders: Iterable[HolderView]) -> None:
    table = Table(title="Nodes that hold your data", title_justify="left")
    for col in ("node", "name", "categories", "your key for it"):
        table.add_column(col)
    for h in holders:
        _add(
            table,
            h.node_id,
            h.name,
            ", ".join(h.categories),
            "registered" if h.key_registered else "not registered",
        )
    console.print(table)


@dataclass(frozen=True)
class MemberRow:
    member_id: str
    role: str
    name: str
    jurisdiction: str
    categories: list[str]
    key_id: str
    endpoint: str


def member_row(member: Member) -> MemberRow:
    role = MemberRole.Name(member.role).removeprefix("MEMBER_ROLE_").lower()
    if member.status not in (
        MemberStatus.MEMBER_STATUS_UNSPECIFIED,
        MemberStatus.MEMBER_STATUS_ACTIVE,
    ):
        role += f" ({MemberStatus.Name(member.status).removeprefix('MEMBER_STATUS_').lower()})"
    return MemberRow(
        member_id=member.member_id,
        role=role,
        name=member.name,
        jurisdiction=member.jurisdiction,
        categories=category_names(member.categories),
        key_id=member.key_id,
        endpoint=member.endpoint,
    )


def print_members(console: Console, rows: Iterable[MemberRow]) -> None:
    table = Table(title="Members", title_justify="left")
    for col in ("member", "role", "name", "jurisdiction", "categories", "endpoint", "key id"):
        table.add_column(col)
    for r in rows:
        _add(
            table,
            r.member_id,
            r.role,
            r.name,
            r.jurisdiction,
            ", ".join(r.categories),
            r.endpoint,
            r.key_id[:16],
        )
    console.print(table)
