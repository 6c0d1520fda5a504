"""Item 18: a local user other than the server's must not read its state: the databases (with
their -wal and -shm files, which hold recent writes) and backups are private to the owner
(files 0600, backup folders 0700), files an older version left readable are tightened when a
server starts, with a log line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from credex.node.config import load_node_config
from tests.attacks.conftest import Target
from tests.attacks.nodedata_kit import Adapter, prepare, serving
from tests.commands import cli

SIDE_FILES = ("", "-wal", "-shm")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def database_files(db: Path) -> list[Path]:
    return [Path(f"{db}{suffix}") for suffix in SIDE_FILES if Path(f"{db}{suffix}").exists()]


def open_to_others(paths: list[Path]) -> dict[str, str]:
    return {str(p): oct(mode(p)) for p in paths if mode(p) & 0o077}


def test_live_state_databases_are_private(target: Target) -> None:
    dbs = [target.settings.db_path] + [
        load_node_config(node.config).state_db for node in target.fed.manifest.nodes
    ]
    files = [f for db in dbs for f in database_files(db)]
    assert any(f.name.endswith("-wal") for f in files)  # the servers are running: WAL is live
    assert open_to_others(files) == {}


def test_backups_are_private(target: Target, tmp_path: Path) -> None:
    node = target.fed.manifest.nodes[0]
    cli("credex-node", "backup", str(node.config), str(tmp_path / "node-backup"))
    cli(
        "credex-directory", "backup", "--home", str(target.settings.home),
        str(tmp_path / "directory-backup"),
    )  # fmt: skip
    for root in (tmp_path / "node-backup", tmp_path / "directory-backup"):
        found = [root, *root.rglob("*")]
        assert any(p.suffix == ".db" for p in found)
        folders = {str(p): oct(mode(p)) for p in found if p.is_dir() and mode(p) != 0o700}
        files = {str(p): oct(mode(p)) for p in found if p.is_file() and mode(p) != 0o600}
        assert folders == {} and files == {}


def test_a_server_tightens_readable_state_files_at_start(target: Target, tmp_path: Path) -> None:
    node = prepare(
        target,
        tmp_path,
        "old-install",
        schema="CREATE TABLE t (id TEXT, who TEXT); CREATE INDEX t_who ON t (who);",
        adapters=[
            Adapter(
                "civic",
                "SELECT t.id AS record_id, 'k' AS kind, 1 AS value, '' AS unit,"
                " '2024-01-01' AS occurred_at, t.who AS local_id FROM t WHERE t.who = :local_id",
            )
        ],
        locations={},
    )
    state = node.home / "credex-node.db"
    for path in database_files(state):
        os.chmod(path, 0o644)  # as an older version left it
    with serving(target, node):
        assert open_to_others(database_files(state)) == {}
        log = node.log_text()
    assert f"tightened {state}" in log
