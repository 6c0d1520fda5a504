"""`credex-node`: set up and run an agency node over the operator's own database."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from credex.cli.render import moment, printable, terminal_console
from credex.cli.shared import MetricsAddress, ReadyFile, cli_errors, print_json
from credex.cli.status import show_status
from credex.node.admin import (
    Enrollment,
    backup_node,
    init_node,
    list_disputes,
    renew_node_certificate,
    resolve_dispute,
)
from credex.node.config import load_node_config
from credex.node.config_check import check_config
from credex.node.example_config import write_example
from credex.node.server import serve as serve_node
from credex.node.server import tls_identity
from credex.protocol import vocab
from credex.protocol.config import validate_member_id
from credex.protocol.keys import SigningKey
from credex.runtime.logs import setup_logging
from credex.sdk.rotation import KeyFiles, rotate_key

app = typer.Typer(
    help="credex-node: serve an agency's own SQLite records to consented, signed queries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
Config = Annotated[Path, typer.Argument(help="The node's config file (TOML).")]


@app.command()
def init(
    config: Config,
    enroll: Annotated[
        str | None, typer.Option(help="The directory's public address host:port to enroll at.")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="One-time enrollment token from the directory operator.")
    ] = None,
    ca_cert: Annotated[
        Path | None, typer.Option(help="The federation CA certificate (PEM) to trust.")
    ] = None,
    node_id: Annotated[
        str, typer.Option("--id", help="Member id for a new example config.")
    ] = "my-agency",
    records_db: Annotated[
        str, typer.Option(help="Your database, for a new example config.")
    ] = "records.db",
    reset: Annotated[
        bool,
        typer.Option(help="Enroll again with a token from `credex-directory reset-key`: new keys."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Without a config file: write a commented example to edit. With one: create the node's
    signing key and state database, check every adapter and, with --enroll/--token/--ca-cert,
    enroll: the TLS key and CSR are made here, the directory returns the certificate."""
    with cli_errors():
        given = [v is not None for v in (enroll, token, ca_cert)]
        if any(given) and not all(given):
            raise ValueError("--enroll, --token and --ca-cert go together")
        if not config.exists():
            if any(given):
                raise ValueError(
                    f"{config} does not exist: run `credex-node init {config}` without "
                    "--enroll to write an example config, and edit it first"
                )
            validate_member_id(node_id, "--id")
            write_example(config, node_id=node_id, records_db=records_db)
            typer.echo(
                f"wrote an example config to {config}: map your tables in its [[adapter]] "
                f"entries, then run `credex-node check-config {config}`"
            )
            return
        enrollment = (
            Enrollment(public_address=enroll, token=token, ca_cert=ca_cert)
            if enroll is not None and token is not None and ca_cert is not None
            else None
        )
        cfg, key = init_node(config, enrollment, reset=reset)
        result = {
            "node_id": cfg.node_id,
            "key_id": key.key_id,
            "public_key": key.public.raw.hex(),
            "signing_key": str(cfg.signing_key),
            "categories": vocab.category_names(cfg.categories),
        }
        if json_out:
            print_json(result)
        else:
            typer.echo(
                f"node {cfg.node_id} ready: key {key.key_id} ({cfg.signing_key}), "
                f"categories {', '.join(result['categories'])}"
            )


@app.command("check-config")
def check_config_command(
    config: Config,
    sample_id: Annotated[
        str | None,
        typer.Option(
            "--sample-id",
            help="A real subject's local id: run every adapter for it and check each row.",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check the config against the operator database (opened read-only): every adapter runs,
    takes the subject only as :local_id in a condition every row must meet, returns a
    record's columns with the subject's own id as local_id, and finds the subject through an
    index. With --sample-id, every row each adapter returns for that id is checked as the node
    would serve it (whose it is, types, dates, values, record ids unique per category). Each
    problem names its config line; exit 1 if there is any."""
    with cli_errors():
        problems = check_config(config, sample_id)
        if json_out:
            print_json(
                {
                    "config": str(config),
                    "ok": not problems,
                    "problems": [
                        {"line": p.line, "message": p.message, "fatal": p.fatal} for p in problems
                    ],
                }
            )
        else:
            for problem in problems:
                typer.echo(printable(problem.render(config)))
            if not problems:
                cfg = load_node_config(config)
                typer.echo(
                    f"{config}: {cfg.node_id}: {len(cfg.adapters)} adapters OK over "
                    f"{cfg.records_db} ({', '.join(vocab.category_names(cfg.categories))})"
                )
        if problems:
            raise typer.Exit(1)


@app.command()
def status(
    config: Config,
    metrics: MetricsAddress = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A running node at a glance: health, requests, refusals, audit size, certificate expiry
    (read from its Prometheus endpoint)."""
    with cli_errors():
        cfg = load_node_config(config)
        show_status(cfg.server.metrics_listen, metrics, f"{config} [server]", json_out=json_out)


@app.command()
def backup(
    config: Config,
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    include_records: Annotated[
        bool, typer.Option(help="Also copy the operator's records database.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Back up the node while it serves: config, keys, certificates, registry snapshot and a
    consistent copy of its state database with the audit log. Restore by copying the folder
    to the new host and running `credex-node serve DEST/<config>`."""
    with cli_errors():
        manifest = backup_node(load_node_config(config), dest, include_records=include_records)
        if json_out:
            print_json(manifest)
        else:
            typer.echo(f"backed up {len(manifest.files)} files to {dest}")


@app.command("rotate-key")
def rotate_key_command(
    config: Config,
    directory: Annotated[
        str | None, typer.Option(help="The directory's member address (overrides config).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Replace the node's signing key and TLS certificate; a running node picks them up by
    itself and the old key keeps verifying for an overlap, so nothing is interrupted."""
    with cli_errors():
        cfg = load_node_config(config)
        address = directory or cfg.directory_address
        if not address:
            raise ValueError("no directory address: set directory_address or pass --directory")
        current = SigningKey.load(cfg.signing_key)
        valid_until = asyncio.run(
            rotate_key(
                directory_address=address,
                member_id=cfg.node_id,
                current_key=current,
                tls=tls_identity(cfg),
                files=KeyFiles(signing_key=cfg.signing_key, tls_key=cfg.tls_key, cert=cfg.tls_cert),
            )
        )
        new = SigningKey.load(cfg.signing_key)
        result = {
            "node_id": cfg.node_id,
            "old_key_id": current.key_id,
            "key_id": new.key_id,
            "old_key_valid_until": valid_until,
        }
        if json_out:
            print_json(result)
        else:
            typer.echo(
                f"{cfg.node_id}: key {new.key_id} replaces {current.key_id} "
                f"(valid until {moment(valid_until)})"
            )


@app.command()
def renew(
    config: Config,
    public: Annotated[
        str | None,
        typer.Option(
            help="The directory's public address (overrides config; needed once the "
            "certificate has expired)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Renew the node's TLS certificate now with its signing key (a running node renews by
    itself in the last third of its certificate's life)."""
    with cli_errors():
        cfg = load_node_config(config)
        expires_at = asyncio.run(renew_node_certificate(cfg, public or ""))
        if json_out:
            print_json({"node_id": cfg.node_id, "expires_at": expires_at})
        else:
            typer.echo(f"{cfg.node_id}: new certificate valid until {moment(expires_at)}")


disputes_app = typer.Typer(help="Disputes subjects filed about this node's records.")
app.add_typer(disputes_app, name="disputes")


@disputes_app.command("list")
def disputes_list(
    config: Config,
    status: Annotated[
        str | None, typer.Option(help="Only open, corrected, deleted or rejected ones.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The disputes filed about this node's records, oldest first."""
    with cli_errors():
        rows = list_disputes(load_node_config(config), status)
        if json_out:
            print_json(rows)
            return
        table = Table(title="Disputes", title_justify="left")
        columns = (
            "dispute",
            "subject (local id)",
            "category",
            "record",
            "reason",
            "status",
            "note",
        )
        for col in columns:  # the id stays whole: it is what `resolve` takes
            table.add_column(col, overflow="fold", no_wrap=col == "dispute")
        for d in rows:  # what subjects wrote is shown with its control characters escaped
            table.add_row(*(Text(printable(v)) for v in (d.dispute_id, d.local_subject_id,
                                                         d.category, d.record_id, d.reason,
                                                         d.status, d.note)))  # fmt: skip
        terminal_console().print(table)


@disputes_app.command("resolve")
def disputes_resolve(
    config: Config,
    dispute_id: Annotated[str, typer.Argument(help="The dispute to decide.")],
    outcome: Annotated[str, typer.Option(help="corrected, deleted or rejected.")],
    note: Annotated[str, typer.Option(help="What you did, or why the record stands.")] = "",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Decide a dispute; the subject sees the outcome. `deleted` holds the record back from
    every later answer; correct or delete it in your own database as well."""
    with cli_errors():
        state = asyncio.run(resolve_dispute(load_node_config(config), dispute_id, outcome, note))
        if json_out:
            print_json({"dispute_id": state.dispute_id, "status": outcome, "note": note})
        else:
            typer.echo(f"{dispute_id} {outcome}")


@app.command()
def serve(
    config: Config,
    listen: Annotated[
        str | None,
        typer.Option(help="host:port to serve on (overrides [server] listen; port 0 picks one)."),
    ] = None,
    ready_file: ReadyFile = None,
    directory: Annotated[
        str | None,
        typer.Option(help="The directory's member address to announce to (overrides config)."),
    ] = None,
    directory_public: Annotated[
        str | None,
        typer.Option(
            help="The directory's public address, for renewing the certificate (overrides config)."
        ),
    ] = None,
) -> None:
    """Serve over mutual TLS until SIGTERM or Ctrl-C; announce this node's address and renew
    its certificate in the last third of its life."""
    with cli_errors():
        cfg = load_node_config(config)
        if directory is not None:
            cfg = dataclasses.replace(cfg, directory_address=directory)
        if directory_public is not None:
            cfg = dataclasses.replace(cfg, directory_public_address=directory_public)
        if listen is not None:
            cfg = dataclasses.replace(cfg, server=cfg.server.with_listen(listen, "--listen"))
        setup_logging(cfg.server.log_format, cfg.server.log_level)
        asyncio.run(serve_node(cfg, ready_file))


if __name__ == "__main__":
    app()
