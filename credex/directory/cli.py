"""`credex-directory`: set up and run the exchange's directory."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from credex.cli.render import member_row, print_members, terminal_console
from credex.cli.shared import MetricsAddress, ReadyFile, cli_errors, print_json
from credex.cli.status import show_status
from credex.directory import admin
from credex.directory.config import SETTINGS_FILE, load_settings
from credex.directory.server import serve as serve_directory
from credex.protocol.config import address
from credex.protocol.keys import load_public
from credex.runtime.logs import setup_logging

app = typer.Typer(
    help="credex-directory: member registry, consents, record locator and profile assembly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
Home = Annotated[
    Path, typer.Option("--home", envvar="CREDEX_DIRECTORY_HOME", help="The directory's folder.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def init(home: Home, json_out: Json = False) -> None:
    """Create settings, the directory's signing key and database (keeps what exists)."""
    with cli_errors():
        settings = admin.init_home(home)
        key = load_public(settings.public_key_path)
        holders = admin.reserved_name_holders(settings)
        if holders:
            typer.echo(
                f"warning: {', '.join(holders)} were enrolled under a spelling of the "
                "directory's name; their older certificates could pose as the directory until "
                "they expire: make a new CA (docs/operators.md, section 6)",
                err=True,
            )
        if json_out:
            print_json({"home": str(home), "key_id": key.key_id, "public_key": key.raw.hex()})
        else:
            typer.echo(
                f"directory home {home} ready; public key {settings.public_key_path} "
                f"(key id {key.key_id})"
            )


@app.command()
def enroll(
    home: Home,
    member_id: Annotated[str, typer.Argument(help="The new member's id.")],
    role: Annotated[str, typer.Option(help="node or requester.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    jurisdiction: Annotated[str, typer.Option(help="e.g. CN or CN-JS.")] = "CN",
    category: Annotated[
        list[str] | None, typer.Option("--category", "-c", help="A category a node serves.")
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Host name or address for the node's certificate; repeat."),
    ] = None,
    ttl_hours: Annotated[float, typer.Option(min=0.001, help="How long the token works.")] = 24.0,
    json_out: Json = False,
) -> None:
    """Issue a one-time enrollment token; the member redeems it with `credex-node init` or
    `credex init` and the federation CA certificate (ca.crt in the home)."""
    with cli_errors():
        settings = load_settings(home)
        token = admin.create_enrollment_token(
            settings,
            member_id=member_id,
            role=role,
            name=name,
            jurisdiction=jurisdiction,
            categories=category or [],
            hosts=host or None,
            ttl_s=ttl_hours * 3600,
        )
        if json_out:
            print_json(
                {
                    "member_id": member_id,
                    "role": role,
                    "token": token,
                    "ca_cert": str(settings.ca_cert_path),
                }
            )
        else:
            typer.echo(token)


@app.command("reset-key")
def reset_key(
    home: Home,
    member_id: Annotated[str, typer.Argument(help="The member whose keys are lost or stolen.")],
    ttl_hours: Annotated[float, typer.Option(min=0.001, help="How long the token works.")] = 24.0,
    json_out: Json = False,
) -> None:
    """Reset a member's keys: its signing key stops verifying and its certificates are refused
    at once; the one-time token printed lets it enroll again under the same id with new keys
    (`credex init --reset` or `credex-node init --reset`)."""
    with cli_errors():
        settings = load_settings(home)
        token = admin.reset_member_key(settings, member_id, ttl_s=ttl_hours * 3600)
        if json_out:
            print_json({"member_id": member_id, "token": token})
        else:
            typer.echo(token)


@app.command("set-endpoint")
def set_endpoint(
    home: Home,
    member_id: Annotated[str, typer.Option("--id", help="The node's id.")],
    endpoint: Annotated[str, typer.Option(help="host:port where the node listens.")],
) -> None:
    """Change where a node is reached."""
    with cli_errors():
        admin.set_endpoint(load_settings(home), member_id, endpoint)
        typer.echo(f"{member_id} → {endpoint}")


def _set_status(home: Path, member_id: str, status: str) -> None:
    with cli_errors():
        member = admin.set_member_status(load_settings(home), member_id, status)
        typer.echo(f"{member.member_id} is {member.status_name}")


MemberArg = Annotated[str, typer.Argument(help="The member's id.")]


@app.command()
def suspend(home: Home, member_id: MemberArg) -> None:
    """Suspend a member: refused by the directory at once and by nodes within their sync
    interval, until reinstated."""
    _set_status(home, member_id, "suspended")


@app.command()
def reinstate(home: Home, member_id: MemberArg) -> None:
    """Lift a suspension."""
    _set_status(home, member_id, "active")


@app.command()
def remove(home: Home, member_id: MemberArg) -> None:
    """Remove a member for good: refused everywhere, its id and key never reused."""
    _set_status(home, member_id, "removed")


@app.command("import-subjects")
def import_subjects(
    home: Home,
    subjects: Annotated[Path, typer.Argument(help="CSV: subject_id, public_key (hex), region.")],
    locator: Annotated[
        Path | None, typer.Option(help="CSV: subject_id, node_id, local_id.")
    ] = None,
    replace: Annotated[
        bool, typer.Option(help="Forget the previous subjects and locator entries first.")
    ] = False,
) -> None:
    """Load subjects and the record locator from CSV files."""
    with cli_errors():
        n_subjects, n_locations = admin.import_subjects(
            load_settings(home), subjects, locator, replace=replace
        )
        typer.echo(f"imported {n_subjects} subjects and {n_locations} locator entries")


@app.command()
def members(home: Home, json_out: Json = False) -> None:
    """List registered members."""
    with cli_errors():
        rows = [member_row(m.to_proto()) for m in admin.list_members(load_settings(home))]
        if json_out:
            print_json(rows)
        else:
            print_members(terminal_console(), rows)


@app.command()
def backup(
    home: Home,
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    json_out: Json = False,
) -> None:
    """Back up the directory while it serves: settings, keys, CA, certificates and a
    consistent copy of its database. Restore with `credex-directory serve --home DEST`."""
    with cli_errors():
        manifest = admin.backup_directory(load_settings(home), dest)
        if json_out:
            print_json(manifest)
        else:
            typer.echo(f"backed up {len(manifest.files)} files to {dest}")


@app.command()
def status(home: Home, metrics: MetricsAddress = None, json_out: Json = False) -> None:
    """The running directory at a glance: health, requests, refusals, node answers, audit
    size, certificate expiry (read from its Prometheus endpoint)."""
    with cli_errors():
        settings = load_settings(home)
        where = f"{home / SETTINGS_FILE} [server]"
        show_status(settings.server.metrics_listen, metrics, where, json_out=json_out)


@app.command()
def serve(
    home: Home,
    listen: Annotated[
        str | None,
        typer.Option(help="host:port for members (overrides [server] listen; 0 picks a port)."),
    ] = None,
    public_listen: Annotated[
        str | None,
        typer.Option(help="host:port for subjects and enrollment (overrides [server])."),
    ] = None,
    ready_file: ReadyFile = None,
) -> None:
    """Serve until SIGTERM or Ctrl-C: members over mutual TLS on --listen, subjects and
    enrollment over TLS on --public-listen."""
    with cli_errors():
        settings = load_settings(home)
        if listen is not None:
            server = settings.server.with_listen(listen, "--listen")
            settings = dataclasses.replace(settings, server=server)
        if public_listen is not None:
            checked = address({"public_listen": public_listen}, "public_listen", "", "option")
            public = dataclasses.replace(settings.server, public_listen=checked)
            settings = dataclasses.replace(settings, server=public)
        setup_logging(settings.server.log_format, settings.server.log_level)
        admin.ensure_directory_certificate(settings)  # a home from before URI identities
        asyncio.run(serve_directory(settings, ready_file))


if __name__ == "__main__":
    app()
