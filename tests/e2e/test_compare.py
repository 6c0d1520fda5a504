"""Comparing rating policies on one synthetic population: the report's figures follow from the
per-subject scores it writes, and the same inputs give the same report."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from credex.lab.compare import compare, spearman
from credex.lab.synth import generate
from tests.commands import REPO

POLICIES = sorted((REPO / "credex" / "directory" / "policies").glob("*.toml"))
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("population")
    generate(root, subjects=300, seed=5)
    return root


def test_summary_follows_from_the_scores(population: Path, tmp_path: Path) -> None:
    from credex.lab.synth import load_manifest

    report = compare(load_manifest(population), POLICIES, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    assert len(rows) == report.subjects == 300
    names = [p.name for p in report.policies]
    assert set(names) == {"national-baseline", "jiangsu-style", "guangdong-style"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for policy in summary["policies"]:
        values = [float(r[f"{policy['name']}_score"]) for r in rows]
        assert policy["mean"] == pytest.approx(statistics.fmean(values), abs=0.01)
        assert sum(policy["bands"].values()) == 300
    for pair in summary["pairs"]:
        a, b = pair["first"], pair["second"]
        changed = sum(r[f"{a}_band"] != r[f"{b}_band"] for r in rows)
        assert pair["band_changes"] == changed
        rho = spearman([float(r[f"{a}_score"]) for r in rows],
                       [float(r[f"{b}_score"]) for r in rows])  # fmt: skip
        assert pair["spearman"] == pytest.approx(rho, abs=1e-3)
        assert -1 <= pair["spearman"] <= 1
    # the policies disagree about some people: that is the point of comparing them
    assert any(pair["band_changes"] > 0 for pair in summary["pairs"])


def test_the_plots_show_the_data_in_the_csv(population: Path, tmp_path: Path) -> None:
    import numpy as np

    from credex.lab.synth import load_manifest

    report = compare(load_manifest(population), POLICIES, tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    for name, counts in report.histograms.items():
        values = [float(r[f"{name}_score"]) for r in rows]
        expected, _ = np.histogram(values, bins=report.histogram_edges)
        assert counts == expected.tolist()
        assert sum(counts) == 300
    first = report.policies[0].name
    for key, moves in report.band_moves.items():
        other = key.split("->")[1]
        for move, n in moves.items():
            a, b = move.split("->")
            assert n == sum(r[f"{first}_band"] == a and r[f"{other}_band"] == b for r in rows)
    for png in ("scores.png", "band-changes.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_the_same_inputs_give_the_same_report(population: Path, tmp_path: Path) -> None:
    from credex.lab.synth import load_manifest

    manifest = load_manifest(population)
    compare(manifest, POLICIES, tmp_path / "a")
    compare(manifest, POLICIES, tmp_path / "b")
    for name in ("scores.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_spearman_on_known_cases() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


def test_cli_refuses_a_single_or_missing_policy(tmp_path: Path) -> None:
    one = subprocess.run(
        [str(BIN / "credex-lab"), "compare", str(POLICIES[0]), "--out", str(tmp_path / "o"),
         "--subjects", "20"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert one.returncode == 2 and "at least two" in one.stderr
    missing = subprocess.run(
        [str(BIN / "credex-lab"), "compare", str(POLICIES[0]), str(tmp_path / "nope.toml"),
         "--out", str(tmp_path / "o"), "--subjects", "20"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "no such config file" in missing.stderr
