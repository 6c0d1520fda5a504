"""Extra node processes for the node-data attacks: an operator's own database and adapters,
enrolled in the attack target's federation through the real enrollment service, located for a
subject of the target, and served as a separate `credex-node serve` process."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from credex.directory import admin as directory_admin
from credex.directory.locator import Locator
from credex.directory.schema import open_directory_storage
from credex.lab.federation import FederationError, Launcher
from credex.node import admin as node_admin
from tests.attacks.conftest import Target


@dataclass(frozen=True)
class Adapter:
    category: str
    sql: str


@dataclass
class ExtraNode:
    """A node of the attacker's (or careless operator's) making, as the test sees it."""

    node_id: str
    home: Path
    config: Path
    log: Path
    address: str = ""
    metrics_address: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def config_text(node_id: str, adapters: Sequence[Adapter], directory: str) -> str:
    """A node config over `records.db` beside it; metrics on a free port."""
    lines = [
        "[node]",
        f'id = "{node_id}"',
        f'name = "{node_id}"',
        'records_db = "records.db"',
        'state_db = "credex-node.db"',
        f'directory_address = "{directory}"',
        "sync_interval_s = 1.0",
        "",
        "[server]",
        'metrics_listen = "127.0.0.1:0"',
        "health_interval_s = 0.2",
        "",
    ]
    for adapter in adapters:
        lines += [
            "[[adapter]]",
            f'category = "{adapter.category}"',
            f'sql = """\n{adapter.sql}\n"""',
        ]
        lines.append("")
    return "\n".join(lines)


def checked_config(
    home: Path, schema: str, node_id: str, adapters: Sequence[Adapter]
) -> tuple[Path, int]:
    """A node home in `home` with an operator database of `schema` and a config of
    `adapters`, ready for check-config; returns the config and the line of its first `sql`."""
    home.mkdir()
    conn = sqlite3.connect(home / "records.db")
    conn.executescript(schema)
    conn.close()
    config = home / "node.toml"
    config.write_text(config_text(node_id, adapters, "127.0.0.1:1"))
    sql_line = next(
        n for n, line in enumerate(config.read_text().splitlines(), 1) if "sql =" in line
    )
    return config, sql_line


def prepare(
    target: Target,
    root: Path,
    node_id: str,
    *,
    schema: str,
    adapters: Sequence[Adapter],
    locations: dict[str, str],
) -> ExtraNode:
    """The operator's database (`schema`, a script), the config, enrollment (a token from the
    directory operator, redeemed by `init_node`) and the locator rows subject id → local id."""
    home = root / node_id
    home.mkdir(parents=True)
    conn = sqlite3.connect(home / "records.db")
    conn.executescript(schema)
    conn.commit()
    conn.close()
    config = home / "node.toml"
    config.write_text(config_text(node_id, adapters, target.address))
    token = directory_admin.create_enrollment_token(
        target.settings,
        member_id=node_id,
        role="node",
        name=node_id,
        categories=sorted({a.category for a in adapters}),
    )
    node_admin.init_node(
        config,
        node_admin.Enrollment(
            public_address=target.public_address,
            token=token,
            ca_cert=target.settings.ca_cert_path,
        ),
    )
    with open_directory_storage(target.settings.db_path) as storage, storage.unit() as conn:
        Locator(conn).add_locations((s, node_id, local) for s, local in locations.items())
    return ExtraNode(
        node_id=node_id, home=home, config=config, log=root / "logs" / f"{node_id}.log"
    )


@contextmanager
def serving(target: Target, node: ExtraNode) -> Iterator[ExtraNode]:
    """Run the node as its own process until the block ends; FederationError (with the log's
    tail) if it refuses to start."""
    launcher = Launcher(node.home.parent, tied=True)
    try:
        pending = {
            node.node_id: launcher.spawn(
                node.node_id,
                "node",
                ["credex.node.cli", "serve", str(node.config), "--directory", target.address],
            )
        }
        info = launcher.wait_ready(pending)[node.node_id]
        node.address = info["address"]
        node.metrics_address = info.get("metrics_address", "")
        yield node
    finally:
        launcher.stop()


def start_refused(target: Target, node: ExtraNode) -> str | None:
    """Start the node; the start-up error it printed if it refused, None if it served (the
    process is stopped again at once)."""
    try:
        with serving(target, node):
            return None
    except FederationError as err:
        return str(err)


def subjects_of(target: Target, offset: int, count: int) -> list[str]:
    """`count` subject ids of the target, taken from the end of the sorted list at `offset`
    (each attack file has its own range), so that no other attack's subject is disturbed
    (`Target.subject` picks the richest one)."""
    with (target.root / "subjects.csv").open(newline="") as fh:
        every = sorted((row["subject_id"] for row in csv.DictReader(fh)), reverse=True)
    return every[offset : offset + count]
