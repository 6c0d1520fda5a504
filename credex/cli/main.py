"""`credex`: the command line of requesters and subjects."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from credex.cli.render import (
    member_row,
    moment,
    print_access_log,
    print_consents,
    print_holders,
    print_members,
    print_profile,
    printable,
    terminal_console,
)
from credex.cli.shared import cli_errors, print_json
from credex.protocol import vocab
from credex.protocol.errors import CredexError
from credex.protocol.key_history import KeyHistory
from credex.protocol.keys import SigningKey, load_public
from credex.protocol.registry_view import member_keys
from credex.protocol.signing import parse
from credex.runtime.audit import log_owner, verify_log
from credex.runtime.reconcile import reconcile
from credex.sdk.client import RequesterClient, SubjectClient
from credex.sdk.member_home import MemberHome, enroll_home
from credex.sdk.rotation import rotate_key
from credex.v1.common_pb2 import Signed

T = TypeVar("T")

app = typer.Typer(
    help="credex: grant and revoke consents as a subject, obtain profiles as a requester.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
consent_app = typer.Typer(help="A subject's consents.", no_args_is_help=True)
profile_app = typer.Typer(help="Profiles, for requesters.", no_args_is_help=True)
disputes_app = typer.Typer(help="Contest records in your profile.", no_args_is_help=True)
audit_app = typer.Typer(help="Check audit logs, for auditors and operators.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
app.add_typer(profile_app, name="profile")
app.add_typer(audit_app, name="audit")
app.add_typer(disputes_app, name="disputes")

Directory = Annotated[
    str,
    typer.Option(
        "--directory",
        envvar="CREDEX_DIRECTORY",
        help="The directory's public address host:port (subjects).",
    ),
]
CaCert = Annotated[
    Path,
    typer.Option("--ca-cert", envvar="CREDEX_CA_CERT", help="The federation CA certificate (PEM)."),
]
Home = Annotated[
    Path,
    typer.Option("--home", envvar="CREDEX_HOME", help="Your member folder (from `credex init`)."),
]
KeyPath = Annotated[Path, typer.Option("--key", help="Your private signing key (PEM).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Subject = Annotated[str, typer.Option("--subject", help="The subject's id at the directory.")]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _categories(names: list[str] | None) -> list[vocab.Category]:
    return [vocab.parse_category(n) for n in names or []]


def _read_ca(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read CA certificate {path}: {exc.strerror}") from None


def _as_subject(
    directory: str,
    ca_cert: Path,
    subject: str,
    key: Path,
    call: Callable[[SubjectClient], Coroutine[Any, Any, T]],
) -> T:
    """Run one call as the subject: its key signs, the directory's public port answers."""
    signing_key = SigningKey.load(key)
    ca_pem = _read_ca(ca_cert)

    async def go() -> T:
        async with SubjectClient(directory, subject, signing_key, ca_pem=ca_pem) as client:
            return await call(client)

    return _run(go())


def _requester(home: Path) -> RequesterClient:
    member = MemberHome.load(home)
    return RequesterClient(
        member.directory,
        member.member_id,
        member.signing_key(),
        tls=member.tls(),
        directory_key=member.directory_key(),
        renewal=member.renewal(),  # a certificate near its end is renewed first
    )


@app.command()
def init(
    home: Home,
    member_id: Annotated[str, typer.Option("--id", help="Your member id, as in the token.")],
    directory: Annotated[str, typer.Option(help="The directory's member address host:port.")],
    public: Annotated[str, typer.Option(help="The directory's public address host:port.")],
    token: Annotated[str, typer.Option(help="One-time enrollment token from the operator.")],
    ca_cert: CaCert,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    reset: Annotated[
        bool,
        typer.Option(help="Enroll again with a token from `credex-directory reset-key`: new keys."),
    ] = False,
    json_out: Json = False,
) -> None:
    """Enroll as a requester: keys are made here, the directory certifies them."""
    with cli_errors():
        ca_pem = _read_ca(ca_cert)
        member = MemberHome(
            path=home, member_id=member_id, directory=directory, directory_public=public
        )
        response = _run(enroll_home(member, token=token, ca_pem=ca_pem, name=name, reset=reset))
        key = member.signing_key()
        result = {
            "member_id": member_id,
            "key_id": key.key_id,
            "home": str(home),
            "directory_id": response.directory_id,
        }
        if json_out:
            print_json(result)
        else:
            typer.echo(f"enrolled {member_id} (key {key.key_id}); member home {home}")


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


@app.command("rotate-key")
def rotate_key_command(home: Home, json_out: Json = False) -> None:
    """Replace your signing key and TLS certificate; the old key keeps verifying for an
    overlap, so requests in flight are not lost."""
    with cli_errors():
        member = MemberHome.load(home)
        current = member.signing_key()
        valid_until = _run(
            rotate_key(
                directory_address=member.directory,
                member_id=member.member_id,
                current_key=current,
                tls=member.tls(),
                files=member.key_files(),
            )
        )
        new = member.signing_key()
        if json_out:
            print_json(
                {
                    "member_id": member.member_id,
                    "old_key_id": current.key_id,
                    "key_id": new.key_id,
                    "old_key_valid_until": valid_until,
                }
            )
        else:
            typer.echo(
                f"{member.member_id}: key {new.key_id} replaces {current.key_id} "
                f"(valid until {moment(valid_until)})"
            )


@app.command()
def renew(home: Home, json_out: Json = False) -> None:
    """Renew your TLS certificate now with your signing key (every command that talks to the
    directory does so by itself once the certificate is in the last third of its life)."""
    with cli_errors():
        member = MemberHome.load(home)
        renewed = _run(member.renewal().renew())
        if json_out:
            print_json({"member_id": member.member_id, "expires_at": renewed.expires_at})
        else:
            typer.echo(
                f"{member.member_id}: new certificate valid until {moment(renewed.expires_at)}"
            )


@app.command()
def members(home: Home, json_out: Json = False) -> None:
    """List the federation's members (nodes and requesters) and their keys."""

    async def go() -> Any:
        async with _requester(home) as client:
            return await client.members()

    with cli_errors():
        response = _run(go())
        rows = [member_row(m) for m in response.members]
        if json_out:
            print_json(rows)
        else:
            print_members(terminal_console(), rows)


@consent_app.command("grant")
def consent_grant(
    directory: Directory,
    ca_cert: CaCert,
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
        cats = _categories(category)
        purpose_value = vocab.parse_purpose(purpose)
        consent_id = _as_subject(
            directory,
            ca_cert,
            subject,
            key,
            lambda client: client.grant(
                requester_id=requester,
                purpose=purpose_value,
                categories=cats,
                valid_days=days,
                max_uses=max_uses,
            ),
        )
        if json_out:
            print_json({"consent_id": consent_id, "status": "active"})
        else:
            typer.echo(printable(consent_id))


@consent_app.command("revoke")
def consent_revoke(
    consent_id: ConsentArg,
    directory: Directory,
    ca_cert: CaCert,
    subject: Subject,
    key: KeyPath,
    json_out: Json = False,
) -> None:
    """Revoke one of your consents for good; the directory refuses it at once."""
    _subject_action(directory, ca_cert, subject, key, consent_id, "revoke", json_out)


def _subject_action(
    directory: str,
    ca_cert: Path,
    subject: str,
    key: Path,
    consent_id: str,
    action: str,
    json_out: bool,
) -> None:
    with cli_errors():
        status = _as_subject(
            directory, ca_cert, subject, key, lambda client: getattr(client, action)(consent_id)
        )
        if json_out:
            print_json({"consent_id": consent_id, "status": status})
        else:
            typer.echo(printable(f"{consent_id} {status}"))


ConsentArg = Annotated[str, typer.Argument(help="The consent's id.")]


@consent_app.command("pause")
def consent_pause(
    consent_id: ConsentArg,
    directory: Directory,
    ca_cert: CaCert,
    subject: Subject,
    key: KeyPath,
    json_out: Json = False,
) -> None:
    """Pause one of your consents: refused everywhere until you resume it."""
    _subject_action(directory, ca_cert, subject, key, consent_id, "pause", json_out)


@consent_app.command("resume")
def consent_resume(
    consent_id: ConsentArg,
    directory: Directory,
    ca_cert: CaCert,
    subject: Subject,
    key: KeyPath,
    json_out: Json = False,
) -> None:
    """Resume a paused consent."""
    _subject_action(directory, ca_cert, subject, key, consent_id, "resume", json_out)


@consent_app.command("list")
def consent_list(
    directory: Directory, ca_cert: CaCert, subject: Subject, key: KeyPath, json_out: Json = False
) -> None:
    """List your consents with their status and uses."""
    with cli_errors():
        views = _as_subject(directory, ca_cert, subject, key, lambda client: client.consents())
        if json_out:
            print_json(views)
        else:
            print_consents(terminal_console(), views)


@consent_app.command("tickets")
def consent_tickets(
    consent_id: ConsentArg,
    directory: Directory,
    ca_cert: CaCert,
    subject: Subject,
    key: KeyPath,
    json_out: Json = False,
) -> None:
    """Give a consent tickets for the nodes that hold your data and have none of it yet: a
    consent granted before tickets existed, or a node that came to hold your data since. Only
    nodes with a ticket are asked under a consent."""
    with cli_errors():
        nodes = _as_subject(
            directory, ca_cert, subject, key, lambda client: client.add_tickets(consent_id)
        )
        if json_out:
            print_json({"consent_id": consent_id, "ticket_nodes": nodes})
        else:
            typer.echo(printable(f"{consent_id} tickets: {', '.join(nodes) or 'none'}"))


@app.command()
def holders(
    directory: Directory, ca_cert: CaCert, subject: Subject, key: KeyPath, json_out: Json = False
) -> None:
    """As a subject: the nodes that hold your data, and whether your key for each (derived
    from your key on this device) is registered."""
    with cli_errors():
        views = _as_subject(directory, ca_cert, subject, key, lambda client: client.holders())
        if json_out:
            print_json(views)
        else:
            print_holders(terminal_console(), views)


@disputes_app.command("file")
def disputes_file(
    directory: Directory,
    ca_cert: CaCert,
    subject: Subject,
    key: KeyPath,
    node: Annotated[str, typer.Option(help="The node that holds the record.")],
    category: Annotated[str, typer.Option(help="The record's category, as your profile shows it.")],
    record: Annotated[str, typer.Option(help="The record's id, as your profile shows it.")],
    reason: Annotated[str, typer.Option(help="What is wrong with it.")],
    json_out: Json = False,
) -> None:
    """Contest a record; the node's operator corrects it, deletes it or says why it stands.
    The node must hold that record about you."""
    with cli_errors():
        category_value = vocab.parse_category(category)
        view = _as_subject(
            directory,
            ca_cert,
            subject,
            key,
            lambda client: client.file_dispute(
                node_id=node, category=category_value, record_id=record, reason=reason
            ),
        )
        if json_out:
            print_json(view)
        else:
            typer.echo(printable(f"{view.dispute_id} {view.status}"))


@disputes_app.command("list")
def disputes_list(
    directory: Directory, ca_cert: CaCert, subject: Subject, key: KeyPath, json_out: Json = False
) -> None:
    """Your disputes and what the nodes decided."""
    with cli_errors():
        views = _as_subject(directory, ca_cert, subject, key, lambda client: client.disputes())
        if json_out:
            print_json(views)
        else:
            for v in views:  # the node's note and the ids are shown with controls escaped
                where = "/".join(p for p in (v.node_id, v.category, v.record_id) if p)
                typer.echo(printable(f"{v.dispute_id} {where}: {v.status} {v.resolution}"))


@app.command("access-log")
def access_log(
    directory: Directory,
    ca_cert: CaCert,
    subject: Subject,
    key: KeyPath,
    limit: Annotated[
        int, typer.Option(min=0, help="Show the newest this many requests; 0 shows them all.")
    ] = 100,
    json_out: Json = False,
) -> None:
    """As a subject: the profile requests about you, newest first (who, when, why, which nodes
    answered; repeated refusals counted), and your consents with their status and uses."""
    with cli_errors():
        log = _as_subject(
            directory,
            ca_cert,
            subject,
            key,
            lambda client: client.access_log(limit=limit or None),
        )
        if json_out:
            print_json(log)
        else:
            print_access_log(terminal_console(), log)
            if log.more:
                typer.echo(f"(older requests not shown; see them with --limit {2 * limit})")


@profile_app.command("get")
def profile_get(
    home: Home,
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
        cats = _categories(category)
        purpose_value = vocab.parse_purpose(purpose)

        async def go() -> Any:
            async with _requester(home) as client:
                return await client.get_profile(
                    subject_id=subject, consent_id=consent, purpose=purpose_value, categories=cats
                )

        profile = _run(go())
        if json_out:
            print_json(profile)
        else:
            print_profile(terminal_console(), profile)


@audit_app.command("verify")
def audit_verify(
    path: Annotated[Path, typer.Argument(help="A directory's or node's database (audit log).")],
    key: Annotated[
        Path | None, typer.Option(help="The owner's public key (PEM), to check checkpoints.")
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            help="A directory-signed registry snapshot (a node keeps one beside its database, "
            "e.g. credex-node.registry): the owner's every key, each for its own period, so "
            "checkpoints signed before a key rotation verify. Needs --directory-key."
        ),
    ] = None,
    directory_key: Annotated[
        Path | None,
        typer.Option(help="The directory's public key (PEM), to check --registry with."),
    ] = None,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            help="A witness's database (the directory's for a node's log, a node's for the "
            "directory's): the log must match every checkpoint of it the witness keeps. Repeat."
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Walk the hash chain and check the signed checkpoints, the owner's own and the copies its
    witnesses keep; report the first entry that was changed, deleted, inserted or reordered
    (exit 1: TAMPERED, or UNVERIFIED when it could not be checked as asked)."""
    with cli_errors():
        keys = _key_history(path, registry, directory_key)
        report = verify_log(
            path,
            load_public(key) if key is not None else None,
            keys=keys,
            witnesses=witness or [],
        )
        if json_out:
            print_json(report)
        elif report.ok:
            witnessed = f", {report.witnessed} witnessed copies match" if witness else ""
            typer.echo(
                f"{path}: OK, {report.entries} entries chain, {report.checkpoints} checkpoints "
                f"({report.checkpoints_verified} signatures verified){witnessed}"
            )
            for note in report.notes:
                typer.echo(printable(f"note: {note}"))
        else:
            typer.echo(printable(f"{path}: {report.verdict}: {report.problem}"), err=True)
    if not report.ok:
        raise typer.Exit(1)


def _key_history(log: Path, registry: Path | None, directory_key: Path | None) -> KeyHistory | None:
    """The log owner's keys from a directory-signed registry snapshot, if one is given."""
    if registry is None:
        if directory_key is not None:
            raise ValueError("--directory-key checks a --registry snapshot; give one")
        return None
    if directory_key is None:
        raise ValueError("--registry needs --directory-key to check the snapshot's signature")
    owner = log_owner(log)
    if not owner:
        raise ValueError(f"{log} does not say whose log it is, so its keys cannot be looked up")
    try:
        blob = registry.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read registry snapshot {registry}: {exc.strerror}") from None
    try:
        signed = parse(blob, Signed, what="registry snapshot")
    except CredexError as err:
        raise ValueError(f"{registry}: {err.message}") from None
    return member_keys(signed, load_public(directory_key), owner)


@audit_app.command("reconcile")
def audit_reconcile(
    directory_log: Annotated[Path, typer.Argument(help="The directory's database.")],
    node_logs: Annotated[list[Path], typer.Argument(help="Node databases.")],
    json_out: Json = False,
) -> None:
    """Match the directory's node queries with the nodes' own entries; report queries one side
    has and the other lacks (exit 1 if any is unexplained)."""
    with cli_errors():
        report = reconcile(directory_log, node_logs)
        if json_out:
            print_json({**report.__dict__, "ok": report.ok})
        else:
            typer.echo(
                f"{report.matched} queries match; {len(report.explained)} never reached a node "
                f"(timeout or unavailable); {len(report.unexplained)} unexplained"
            )
            for m in report.unexplained:
                typer.echo(printable(f"  {m.kind} {m.node_id} {m.query_id}: {m.detail}"))
    if not report.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
