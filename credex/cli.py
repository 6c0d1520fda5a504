"""`credex`: the command line of requesters and subjects."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from credex import vocab
from credex.client import RequesterClient, SubjectClient
from credex.cliutil import cli_errors, print_json
from credex.keys import SigningKey
from credex.render import (
    MemberRow,
    print_consents,
    print_members,
    print_profile,
    terminal_console,
)
from credex.v1.directory_pb2 import MemberRole

T = TypeVar("T")

app = typer.Typer(
    help="credex: grant and revoke consents as a subject, obtain profiles as a requester.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
consent_app = typer.Typer(help="A subject's consents.", no_args_is_help=True)
profile_app = typer.Typer(help="Profiles, for requesters.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
app.add_typer(profile_app, name="profile")

Directory = Annotated[
    str,
    typer.Option("--directory", envvar="CREDEX_DIRECTORY", help="Directory address host:port."),
]
KeyPath = Annotated[Path, typer.Option("--key", help="Your private signing key (PEM).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Subject = Annotated[str, typer.Option("--subject", help="The subject's id at the directory.")]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _categories(names: list[str] | None) -> list[vocab.Category]:
    return [vocab.parse_category(n) for n in names or []]


@app.command()
def keygen(
    out: Annotated[Path, typer.Argument(help="Where to write the private key (mode 0600).")],
    json_out: Json = False,
) -> None:
    """Create an Ed25519 signing key; its public half goes beside it as .pub."""
    with cli_errors():
        key = SigningKey.generate()
        key.save(out)
        result = {"key_id": key.key_id, "public_key": key.public.raw.hex(), "path": str(out)}
        if json_out:
            print_json(result)
        else:
            typer.echo(f"wrote {out} (key id {key.key_id}); public key {key.public.raw.hex()}")


@app.command()
def members(directory: Directory, json_out: Json = False) -> None:
    """List the federation's members (nodes and requesters) and their keys."""

    async def go() -> Any:
        async with RequesterClient(directory, "", SigningKey.generate()) as client:
            return await client.members()

    with cli_errors():
        response = _run(go())
        rows = [
            MemberRow(
                member_id=m.member_id,
                role=MemberRole.Name(m.role).removeprefix("MEMBER_ROLE_").lower(),
                name=m.name,
                jurisdiction=m.jurisdiction,
                categories=vocab.category_names(m.categories),
                key_id=m.key_id,
                endpoint=m.endpoint,
            )
            for m in response.members
        ]
        if json_out:
            print_json(rows)
        else:
            print_members(terminal_console(), rows)


@consent_app.command("grant")
def consent_grant(
    directory: Directory,
    subject: Subject,
    key: KeyPath,
    requester: Annotated[str, typer.Option(help="Member id of the requester.")],
    purpose: Annotated[str, typer.Option(help="e.g. loan-application.")],
    category: Annotated[
        list[str], typer.Option("--category", "-c", help="A category to share; repeat.")
    ],
    days: Annotated[float, typer.Option(min=0.001, help="How long the consent lasts.")] = 30.0,
    max_uses: Annotated[int, typer.Option(min=1, help="How many profiles it allows.")] = 1,
    json_out: Json = False,
) -> None:
    """Grant a requester a consent, signed with your key."""
    with cli_errors():
        signing_key = SigningKey.load(key)
        cats = _categories(category)
        purpose_value = vocab.parse_purpose(purpose)

        async def go() -> str:
            async with SubjectClient(directory, subject, signing_key) as client:
                return await client.grant(
                    requester_id=requester,
                    purpose=purpose_value,
                    categories=cats,
                    valid_days=days,
                    max_uses=max_uses,
                )

        consent_id = _run(go())
        if json_out:
            print_json({"consent_id": consent_id, "status": "active"})
        else:
            typer.echo(consent_id)


@consent_app.command("revoke")
def consent_revoke(
    consent_id: Annotated[str, typer.Argument(help="The consent to end.")],
    directory: Directory,
    subject: Subject,
    key: KeyPath,
    json_out: Json = False,
) -> None:
    """Revoke one of your consents; the directory refuses it from now on."""
    with cli_errors():
        signing_key = SigningKey.load(key)

        async def go() -> str:
            async with SubjectClient(directory, subject, signing_key) as client:
                return await client.revoke(consent_id)

        status = _run(go())
        if json_out:
            print_json({"consent_id": consent_id, "status": status})
        else:
            typer.echo(f"{consent_id} {status}")


@consent_app.command("list")
def consent_list(
    directory: Directory, subject: Subject, key: KeyPath, json_out: Json = False
) -> None:
    """List your consents with their status and uses."""
    with cli_errors():
        signing_key = SigningKey.load(key)

        async def go() -> Any:
            async with SubjectClient(directory, subject, signing_key) as client:
                return await client.consents()

        views = _run(go())
        if json_out:
            print_json(views)
        else:
            print_consents(terminal_console(), views)


@profile_app.command("get")
def profile_get(
    directory: Directory,
    requester: Annotated[str, typer.Option(help="Your member id.")],
    key: KeyPath,
    subject: Subject,
    consent: Annotated[str, typer.Option(help="The consent id the subject gave you.")],
    purpose: Annotated[str, typer.Option(help="Must match the consent's purpose.")],
    category: Annotated[
        list[str] | None,
        typer.Option("--category", "-c", help="Only these categories; default: all consented."),
    ] = None,
    json_out: Json = False,
) -> None:
    """Obtain a subject's profile; every signature in it is verified before it is shown."""
    with cli_errors():
        signing_key = SigningKey.load(key)
        cats = _categories(category)
        purpose_value = vocab.parse_purpose(purpose)

        async def go() -> Any:
            async with RequesterClient(directory, requester, signing_key) as client:
                return await client.get_profile(
                    subject_id=subject, consent_id=consent, purpose=purpose_value, categories=cats
                )

        profile = _run(go())
        if json_out:
            print_json(profile)
        else:
            print_profile(terminal_console(), profile)


if __name__ == "__main__":
    app()
