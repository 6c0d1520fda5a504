"""How much a person's rating depends on whose rules apply: score one synthetic population under
several policies and report the differences.

The lab reads its own synthetic operator databases through the nodes' adapters (read-only);
no exchange request is involved, so no consent is needed or used.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

from credex.directory.scoring import Policy, ScoredRecord, load_policy, score
from credex.lab.synth import Manifest
from credex.node.adapters import RecordSource
from credex.node.config import load_node_config
from credex.protocol.clock import from_timestamp
from credex.runtime.db import open_readonly

# Records are scored as of one fixed day, so the same data gives the same report every time.
AS_OF = datetime(2026, 11, 1, tzinfo=UTC).timestamp()


@dataclass
class PolicySummary:
    name: str
    version: str
    mean: float
    median: float
    stdev: float
    low: float
    high: float
    bands: dict[str, int]


@dataclass
class PairSummary:
    first: str
    second: str
    band_changes: int
    share_changed: float
    spearman: float


@dataclass
class Report:
    subjects: int
    as_of: str
    policies: list[PolicySummary] = field(default_factory=list)
    pairs: list[PairSummary] = field(default_factory=list)
    # What the plots show, so a reader (or a test) can check them against scores.csv.
    histogram_edges: list[float] = field(default_factory=list)
    histograms: dict[str, list[int]] = field(default_factory=dict)
    band_moves: dict[str, dict[str, int]] = field(default_factory=dict)


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), for Spearman's rho."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    rx, ry = _ranks(xs), _ranks(ys)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return 1.0 if rx == ry else 0.0
    return float(statistics.correlation(rx, ry))


def population_records(manifest: Manifest) -> dict[str, list[ScoredRecord]]:
    """Every subject's records, read through each node's own adapters."""
    by_subject: dict[str, list[ScoredRecord]] = {}
    local_ids: dict[str, list[tuple[str, str]]] = {}
    with manifest.locator_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            local_ids.setdefault(row["node_id"], []).append((row["subject_id"], row["local_id"]))
    for node in manifest.nodes:
        config = load_node_config(node.config)
        source = RecordSource(open_readonly(config.records_db), config.adapters)
        for subject_id, local_id in local_ids.get(node.id, []):
            by_subject.setdefault(subject_id, []).extend(
                ScoredRecord(node.id, r.record_id, r.kind, r.value, from_timestamp(r.occurred_at))
                for r in source.fetch(local_id, config.categories)
            )
    return by_subject


def compare(
    manifest: Manifest,
    policy_files: Sequence[Path],
    out: Path,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Write scores.csv (one row per subject, score and band per policy) and summary.json."""
    if len(policy_files) < 2:
        raise ValueError("compare at least two policies")
    policies: list[Policy] = [load_policy(p) for p in policy_files]
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policies must have distinct names, got {names}")
    records = population_records(manifest)
    out.mkdir(parents=True, exist_ok=True)
    scores: dict[str, list[float]] = {name: [] for name in names}
    bands: dict[str, list[str]] = {name: [] for name in names}
    with (
        manifest.subjects_csv.open(newline="") as subjects_fh,
        (out / "scores.csv").open("w", newline="") as out_fh,
    ):
        writer = csv.writer(out_fh)
        writer.writerow(
            ["subject_id", "region", "birth_year", "records"]
            + [f"{n}_{col}" for n in names for col in ("score", "band")]
        )
        for done, row in enumerate(csv.DictReader(subjects_fh), 1):
            mine = records.get(row["subject_id"], [])
            cells: list[object] = [row["subject_id"], row["region"], row["birth_year"], len(mine)]
            for policy in policies:
                result = score(policy, mine, AS_OF)
                scores[policy.name].append(result.value)
                bands[policy.name].append(result.band)
                cells += [f"{result.value:.1f}", result.band]
            writer.writerow(cells)
            if progress is not None and done % 1000 == 0:
                progress(done)
    report = Report(
        subjects=len(next(iter(scores.values()))),
        as_of=datetime.fromtimestamp(AS_OF, UTC).date().isoformat(),
    )
    for policy in policies:
        values = scores[policy.name]
        report.policies.append(
            PolicySummary(
                name=policy.name,
                version=policy.version,
                mean=round(statistics.fmean(values), 2),
                median=round(statistics.median(values), 2),
                stdev=round(statistics.pstdev(values), 2),
                low=min(values),
                high=max(values),
                bands=dict(sorted(Counter(bands[policy.name]).items())),
            )
        )
    for first, second in combinations(names, 2):
        changed = sum(a != b for a, b in zip(bands[first], bands[second], strict=True))
        report.pairs.append(
            PairSummary(
                first=first,
                second=second,
                band_changes=changed,
                share_changed=round(changed / report.subjects, 4),
                spearman=round(spearman(scores[first], scores[second]), 4),
            )
        )
    _plot(report, scores, bands, names, policies[0], out)
    (out / "summary.json").write_text(json.dumps(asdict(report), indent=2, sort_keys=True) + "\n")
    return report


def _plot(
    report: Report,
    scores: dict[str, list[float]],
    bands: dict[str, list[str]],
    names: list[str],
    reference: Policy,
    out: Path,
) -> None:
    """scores.png: the score distribution under each policy; band-changes.png: where the
    people of each band under the first policy end up under each other policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low = min(min(v) for v in scores.values())
    high = max(max(v) for v in scores.values())
    step = max(5.0, float(round((high - low) / 30)))
    edges = [low + i * step for i in range(int((high - low) // step) + 2)]
    report.histogram_edges = edges
    fig, ax = plt.subplots(figsize=(9, 5))
    for name in names:
        counts, _, _ = ax.hist(scores[name], bins=edges, histtype="step", linewidth=1.6, label=name)
        report.histograms[name] = [int(c) for c in counts]
    ax.set_xlabel("score")
    ax.set_ylabel("people")
    ax.set_title(f"Score distributions, {report.subjects} synthetic subjects")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    plt.close(fig)

    order = [b.name for b in sorted(reference.bands, key=lambda b: b.min)]
    first = names[0]
    fig, axes = plt.subplots(1, len(names) - 1, figsize=(5 * (len(names) - 1), 4.5), squeeze=False)
    for ax, other in zip(axes[0], names[1:], strict=True):
        moves = Counter(zip(bands[first], bands[other], strict=True))
        report.band_moves[f"{first}->{other}"] = {
            f"{a}->{b}": n for (a, b), n in sorted(moves.items())
        }
        matrix = [[moves.get((a, b), 0) for b in order] for a in order]
        ax.imshow(matrix, cmap="Blues")
        darkest = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, n in enumerate(row):
                color = "white" if n > darkest / 2 else "black"
                ax.text(j, i, str(n), ha="center", va="center", fontsize=9, color=color)
        ax.set_xticks(range(len(order)), order, rotation=30)
        ax.set_yticks(range(len(order)), order)
        ax.set_xlabel(f"band under {other}")
        ax.set_ylabel(f"band under {first}")
    fig.suptitle("Who changes band between policies")
    fig.tight_layout()
    fig.savefig(out / "band-changes.png", dpi=110)
    plt.close(fig)
