"""The demonstration `make run` shows: consent, profile, refusals, revocation, on real processes."""

from __future__ import annotations

import asyncio
import csv
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from credex.cli.render import (
    markup_safe,
    print_access_log,
    print_consents,
    print_profile,
    terminal_console,
)
from credex.lab.federation import RunningFederation, start, stop_recorded
from credex.lab.identities import subject_key
from credex.protocol import vocab
from credex.protocol.errors import CredexError
from credex.sdk.client import RequesterClient, SubjectClient
from credex.v1.common_pb2 import Category, Purpose

LOAN = Purpose.PURPOSE_LOAN_APPLICATION
LOAN_CATEGORIES = [
    Category.CATEGORY_FINANCIAL,
    Category.CATEGORY_COMMERCIAL,
    Category.CATEGORY_JUDICIAL,
    Category.CATEGORY_VOLUNTEERING,
    Category.CATEGORY_CIVIC,
]


def pick_subject(root: Path, node_ids: set[str]) -> str:
    """The subject known to the most of `node_ids` (lowest id on ties): the richest profile."""
    counts: Counter[str] = Counter()
    with (root / "locator.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["node_id"] in node_ids:
                counts[row["subject_id"]] += 1
    if not counts:
        raise ValueError("no subject is known to any node")
    best = max(counts.values())
    return min(s for s, n in counts.items() if n == best)


def _refused(console: Console, what: str, err: CredexError) -> None:
    console.print(
        f"  [bold red]refused[/bold red] {what}: {err.code.name} {err.reason} — "
        f"{markup_safe(err.message)}"
    )


async def _story(console: Console, fed: RunningFederation) -> None:
    loan_nodes = {
        n.id
        for n in fed.manifest.nodes
        if set(n.categories) & set(vocab.category_names(LOAN_CATEGORIES))
    }
    subject_id = pick_subject(fed.root, loan_nodes)
    skey = subject_key(fed.seed, subject_id)
    bank_home = fed.requester("bank")
    async with (
        SubjectClient(fed.public_address, subject_id, skey, ca_pem=fed.ca_pem) as subject,
        RequesterClient(
            fed.directory_address,
            "bank",
            bank_home.signing_key(),
            tls=bank_home.tls(),
            directory_key=bank_home.directory_key(),
            renewal=bank_home.renewal(),
        ) as bank,
    ):
        console.rule("1. The subject grants the bank a consent for a loan application")
        consent_id = await subject.grant(
            requester_id="bank", purpose=LOAN, categories=LOAN_CATEGORIES, valid_days=30, max_uses=3
        )
        console.print(
            f"  subject [cyan]{subject_id}[/cyan] signed consent [cyan]{consent_id}[/cyan]: bank, "
            f"loan-application, {', '.join(vocab.category_names(LOAN_CATEGORIES))}; 30 days, 3 uses"
        )

        console.rule("2. The bank obtains the profile, assembled from every node that knows them")
        started = time.perf_counter()
        profile = await bank.get_profile(subject_id=subject_id, consent_id=consent_id, purpose=LOAN)
        took = (time.perf_counter() - started) * 1000
        print_profile(console, profile)
        console.print(
            f"  {len(profile.records)} records from {sum(n.status == 'OK' for n in profile.nodes)} "
            f"nodes in {took:.0f} ms; the directory's and every node's signature verified."
        )

        console.rule("3. The bank asks for a category outside the consent")
        try:
            await bank.get_profile(
                subject_id=subject_id,
                consent_id=consent_id,
                purpose=LOAN,
                categories=[Category.CATEGORY_EDUCATION],
            )
        except CredexError as err:
            _refused(console, "education records", err)
        else:
            raise AssertionError("a category outside the consent was served")

        console.rule("4. The subject revokes the consent; the bank's next request is refused")
        await subject.revoke(consent_id)
        print_consents(console, await subject.consents())
        try:
            await bank.get_profile(subject_id=subject_id, consent_id=consent_id, purpose=LOAN)
        except CredexError as err:
            _refused(console, "profile after revocation", err)
        else:
            raise AssertionError("a revoked consent was honoured")

        console.rule("5. The subject reads who asked for their data")
        print_access_log(console, await subject.access_log())


def run_demo(
    root: Path, *, subjects: int = 1000, seed: int = 7, console: Console | None = None
) -> None:
    """Generate (or reuse) data, start the federation, tell the story, stop everything."""
    console = console or terminal_console()
    leftover = stop_recorded(root)
    if leftover:
        console.print(f"stopped {leftover} processes left from an earlier run in {root}")
    console.print(Panel.fit(f"credex demo — {subjects} synthetic subjects, seed {seed}, in {root}"))
    fed = start(root, subjects=subjects, seed=seed)
    try:
        console.print(
            f"started the directory at {fed.directory_address} and {len(fed.manifest.nodes)} "
            f"nodes as separate processes: {', '.join(n.id for n in fed.manifest.nodes)}"
        )
        console.print(
            "every node and requester enrolled with a one-time token (keys made locally, "
            "certified by the federation CA); all traffic is mutual TLS"
        )
        asyncio.run(_story(console, fed))
    finally:
        stopped = fed.stop()
        console.print(f"stopped {stopped} processes; nothing left running.")
