"""A generated federation on disk: the file names, the federation.toml and node.toml written,
and `load_manifest` reading federation.toml back."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credex.lab.synth.base import CATEGORIES, NodeSpec
from credex.lab.synth.roster import NODE_SPECS, REQUESTER_SPECS
from credex.node.config import config_text

FEDERATION_FILE = "federation.toml"
SUBJECTS_FILE = "subjects.csv"
LOCATOR_FILE = "locator.csv"
NODES_DIR = "nodes"
RECORDS_DB = "records.db"
NODE_CONFIG = "node.toml"
PARTIAL = ".partial"  # suffix of a file being written, renamed into place when complete


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class NodeEntry:
    """A node of a generated federation; `config` is the path of its node.toml."""

    id: str
    name: str
    jurisdiction: str
    categories: tuple[str, ...]
    config: Path

    @property
    def directory(self) -> Path:
        return self.config.parent


@dataclass(frozen=True)
class RequesterEntry:
    """A requester of a generated federation."""

    id: str
    name: str
    jurisdiction: str


@dataclass(frozen=True)
class Manifest:
    """What `generate` wrote into `out`, as recorded in its federation.toml."""

    out: Path
    seed: int
    subjects: int
    nodes: tuple[NodeEntry, ...]
    requesters: tuple[RequesterEntry, ...]
    # Subjects every node knows (`generate(everywhere=...)`), for full fan-out benchmarks.
    everywhere: tuple[str, ...] = ()

    @property
    def federation_toml(self) -> Path:
        return self.out / FEDERATION_FILE

    @property
    def subjects_csv(self) -> Path:
        return self.out / SUBJECTS_FILE

    @property
    def locator_csv(self) -> Path:
        return self.out / LOCATOR_FILE

    def node(self, node_id: str) -> NodeEntry:
        for entry in self.nodes:
            if entry.id == node_id:
                return entry
        raise KeyError(f"no node {node_id!r} in {self.federation_toml}")

    def requester(self, requester_id: str) -> RequesterEntry:
        for entry in self.requesters:
            if entry.id == requester_id:
                return entry
        raise KeyError(f"no requester {requester_id!r} in {self.federation_toml}")


def load_manifest(out: Path) -> Manifest:
    """Read `out/federation.toml` back; ValueError says what is missing or malformed."""
    path = Path(out) / FEDERATION_FILE
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"{path}: no federation manifest (run generate first)") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: invalid TOML: {exc}") from None
    seed = _get_int(data, "seed", str(path))
    subjects = _get_int(data, "subjects", str(path))
    if subjects < 1:
        raise ValueError(f"{path}: 'subjects' must be at least 1, got {subjects}")
    nodes = []
    for i, raw in enumerate(_get_tables(data, "node", str(path)), 1):
        where = f"{path} [[node]] #{i}"
        categories = raw.get("categories")
        if (
            not isinstance(categories, list)
            or not categories
            or not all(isinstance(c, str) and c in CATEGORIES for c in categories)
        ):
            raise ValueError(f"{where}: 'categories' must be a non-empty list of {CATEGORIES}")
        config = _get_str(raw, "config", where)
        if Path(config).is_absolute() or ".." in Path(config).parts:
            raise ValueError(f"{where}: 'config' must be a path inside {out}, got {config!r}")
        nodes.append(
            NodeEntry(
                id=_get_str(raw, "id", where),
                name=_get_str(raw, "name", where),
                jurisdiction=_get_str(raw, "jurisdiction", where),
                categories=tuple(categories),
                config=Path(out) / config,
            )
        )
    requesters = []
    for i, raw in enumerate(_get_tables(data, "requester", str(path)), 1):
        where = f"{path} [[requester]] #{i}"
        requesters.append(
            RequesterEntry(
                id=_get_str(raw, "id", where),
                name=_get_str(raw, "name", where),
                jurisdiction=_get_str(raw, "jurisdiction", where),
            )
        )
    everywhere = data.get("everywhere", [])
    if not isinstance(everywhere, list) or not all(isinstance(s, str) for s in everywhere):
        raise ValueError(f"{path}: 'everywhere' must be a list of subject ids")
    return Manifest(Path(out), seed, subjects, tuple(nodes), tuple(requesters), tuple(everywhere))


def _get_int(table: dict[str, Any], key: str, where: str) -> int:
    value = table.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: '{key}' must be an integer")
    return value


def _get_str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: '{key}' must be a non-empty string")
    return value


def _get_tables(data: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    tables = data.get(key)
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: at least one [[{key}]] table is required")
    return tables


# --------------------------------------------------------------------------- TOML output


def _toml_str(text: str) -> str:
    """A TOML basic string (JSON string syntax is a subset of it for these values)."""
    return json.dumps(text, ensure_ascii=False)


def node_toml(spec: NodeSpec) -> str:
    """The credex node config of a synthetic node; paths are relative to the file."""
    node = {
        "id": spec.id,
        "name": spec.name,
        "jurisdiction": spec.jurisdiction,
        "records_db": RECORDS_DB,
    }
    adapters = [(a.category, a.sql) for a in spec.adapters]
    return f"# credex node config for a synthetic {spec.description}\n\n" + config_text(
        node, adapters
    )


def federation_toml(
    seed: int,
    subjects: int,
    specs: Sequence[NodeSpec] = NODE_SPECS,
    everywhere: Sequence[str] = (),
) -> str:
    """The federation manifest: seed, size, nodes with their config paths, requesters."""
    lines = [
        "# credex-lab synthetic federation written by lab.synth; paths are relative to this file",
        f"seed = {seed}",
        f"subjects = {subjects}",
    ]
    if everywhere:
        lines.append("# subjects every node knows, for full fan-out benchmarks")
        lines.append(f"everywhere = [{', '.join(_toml_str(s) for s in everywhere)}]")
    for spec in specs:
        categories = ", ".join(_toml_str(c) for c in spec.categories)
        lines += [
            "",
            "[[node]]",
            f"id = {_toml_str(spec.id)}",
            f"name = {_toml_str(spec.name)}",
            f"jurisdiction = {_toml_str(spec.jurisdiction)}",
            f"categories = [{categories}]",
            f'config = "{NODES_DIR}/{spec.id}/{NODE_CONFIG}"',
        ]
    for req in REQUESTER_SPECS:
        lines += [
            "",
            "[[requester]]",
            f"id = {_toml_str(req.id)}",
            f"name = {_toml_str(req.name)}",
            f"jurisdiction = {_toml_str(req.jurisdiction)}",
        ]
    return "\n".join(lines) + "\n"
