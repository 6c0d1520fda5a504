"""Scores from a named, versioned, declarative policy file, with the key factors behind them.

A score is a pure function of the policy, the records and the `as_of` time (the profile's
assembly time), so anyone holding the profile can recompute it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from credex.protocol.clock import to_timestamp
from credex.protocol.config import ConfigError, load_toml, require_str
from credex.v1.requester_pb2 import Score, ScoreFactor

DAY_S = 86_400.0
MAX_FACTORS = 4


@dataclass(frozen=True)
class Rule:
    kind: str
    label: str
    points: float
    per_unit: float
    cap: float


@dataclass(frozen=True)
class Band:
    name: str
    min: float


@dataclass(frozen=True)
class Policy:
    name: str
    version: str
    digest: str
    base: float
    min: float
    max: float
    half_life_days: float
    rules: dict[str, Rule]
    bands: tuple[Band, ...]

    def band(self, value: float) -> str:
        return next((b.name for b in self.bands if value >= b.min), "")


@dataclass(frozen=True)
class ScoredRecord:
    """What scoring needs of a record: where it came from, what it is, when."""

    node_id: str
    record_id: str
    kind: str
    value: float
    occurred_at: float


def _number(table: dict[str, object], key: str, where: str, default: float | None = None) -> float:
    value = table.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be a number")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: '{key}' must be finite")
    return float(value)


def load_policy(path: Path) -> Policy:
    data = load_toml(path)
    head = data.get("policy")
    if not isinstance(head, dict):
        raise ConfigError(f"{path}: missing [policy] table")
    where = f"{path} [policy]"
    rules: dict[str, Rule] = {}
    for i, raw in enumerate(data.get("rule", []), 1):
        rwhere = f"{path} [[rule]] #{i}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{rwhere}: must be a table")
        kind = require_str(raw, "kind", rwhere)
        if kind in rules:
            raise ConfigError(f"{rwhere}: a second rule for {kind!r}")
        cap = _number(raw, "cap", rwhere)
        if cap <= 0:
            raise ConfigError(f"{rwhere}: 'cap' must be positive")
        rules[kind] = Rule(
            kind=kind,
            label=str(raw.get("label", kind)),
            points=_number(raw, "points", rwhere, 0.0),
            per_unit=_number(raw, "per_unit", rwhere, 0.0),
            cap=cap,
        )
    bands = []
    for i, raw in enumerate(data.get("band", []), 1):
        bwhere = f"{path} [[band]] #{i}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{bwhere}: must be a table")
        bands.append(Band(name=require_str(raw, "name", bwhere), min=_number(raw, "min", bwhere)))
    if not bands:
        raise ConfigError(f"{path}: at least one [[band]] is required")
    low, high = _number(head, "min", where), _number(head, "max", where)
    if low >= high:
        raise ConfigError(f"{where}: 'min' must be below 'max'")
    return Policy(
        name=require_str(head, "name", where),
        version=require_str(head, "version", where),
        digest=hashlib.sha256(path.read_bytes()).hexdigest(),
        base=_number(head, "base", where),
        min=low,
        max=high,
        half_life_days=_number(head, "half_life_days", where, 0.0),
        rules=rules,
        bands=tuple(sorted(bands, key=lambda b: b.min, reverse=True)),
    )


def score(policy: Policy, records: Iterable[ScoredRecord], as_of: float) -> Score:
    """The score, its band and at most four factors ranked by how much they moved it."""
    totals: dict[str, float] = {}
    behind: dict[str, list[str]] = {}
    for record in sorted(records, key=lambda r: (r.node_id, r.record_id)):
        rule = policy.rules.get(record.kind)
        if rule is None or not math.isfinite(record.value):
            continue
        raw = rule.points + rule.per_unit * record.value
        if policy.half_life_days > 0:
            age_days = max(0.0, as_of - record.occurred_at) / DAY_S
            raw *= 0.5 ** (age_days / policy.half_life_days)
        totals[rule.kind] = totals.get(rule.kind, 0.0) + raw
        behind.setdefault(rule.kind, []).append(f"{record.node_id}/{record.record_id}")
    effects = {
        kind: max(-policy.rules[kind].cap, min(policy.rules[kind].cap, total))
        for kind, total in totals.items()
    }
    value = round(max(policy.min, min(policy.max, policy.base + sum(effects.values()))), 1)
    ranked = sorted(effects.items(), key=lambda item: (-abs(item[1]), item[0]))
    return Score(
        policy=policy.name,
        policy_version=policy.version,
        policy_digest=policy.digest,
        value=value,
        band=policy.band(value),
        as_of=to_timestamp(as_of),
        factors=[
            ScoreFactor(
                label=policy.rules[kind].label,
                kind=kind,
                effect=round(effect, 1),
                records=behind[kind],
            )
            for kind, effect in ranked[:MAX_FACTORS]
            if round(effect, 1) != 0
        ],
    )
