"""Explained scores: a declarative policy, the same score for the same policy and records, at
most four key factors naming their records, and the profile's score recomputable by anyone."""

from __future__ import annotations

from pathlib import Path

import pytest

from credex.directory.scoring import ScoredRecord, load_policy, score
from credex.protocol.config import ConfigError
from credex.testing.federation import Federation
from credex.v1.common_pb2 import Category, Purpose
from tests.commands import REPO

POLICY = REPO / "credex" / "directory" / "policies" / "national-baseline.toml"
NOW = 1_800_000_000.0
DAY = 86_400.0


def rec(
    kind: str, value: float = 0.0, age_days: float = 0.0, rid: str = "r", node: str = "n"
) -> ScoredRecord:
    return ScoredRecord(node, rid, kind, value, NOW - age_days * DAY)


def test_the_same_policy_and_records_always_give_the_same_score() -> None:
    policy = load_policy(POLICY)
    records = [rec("volunteer_hours", 12, 30, "a"), rec("loan_default", 0, 400, "b"),
               rec("payment_on_time", 100, 10, "c"), rec("unknown_kind", 5, 1, "d")]  # fmt: skip
    first = score(policy, records, NOW)
    assert score(policy, list(reversed(records)), NOW).SerializeToString() == (
        first.SerializeToString()
    )
    assert first.policy == "national-baseline" and first.policy_version == "1.0"
    assert len(first.policy_digest) == 64


def test_decay_halves_a_record_every_half_life() -> None:
    policy = load_policy(POLICY)
    fresh = score(policy, [rec("judgment", age_days=0)], NOW).value
    old = score(policy, [rec("judgment", age_days=policy.half_life_days)], NOW).value
    assert policy.base - fresh == pytest.approx(60)
    assert policy.base - old == pytest.approx(30)


def test_caps_bound_each_rule_and_the_score_stays_in_range() -> None:
    policy = load_policy(POLICY)
    lots = [rec("volunteer_hours", 100, 0, f"h{i}") for i in range(50)]
    assert score(policy, lots, NOW).value == policy.base + 60
    ruin = [rec(k, 0, 0, f"{k}{i}") for k in ("loan_default", "judgment", "dishonest_debtor")
            for i in range(5)]  # fmt: skip
    assert score(policy, ruin, NOW).value == policy.min


def test_at_most_four_factors_ranked_by_effect_naming_their_records() -> None:
    policy = load_policy(POLICY)
    records = [
        rec("volunteer_hours", 10, 0, "h1", "volunteers"),
        rec("degree", 90, 0, "d1", "edu"),
        rec("loan_default", 0, 0, "l1", "pboc"),
        rec("payment_late", 3, 0, "p1", "zhima"),
        rec("payment_late", 2, 0, "p2", "zhima"),
        rec("commendation", 1, 0, "c1", "js"),
    ]
    result = score(policy, records, NOW)
    effects = [f.effect for f in result.factors]
    assert len(result.factors) == 4
    assert [abs(e) for e in effects] == sorted((abs(e) for e in effects), reverse=True)
    assert result.factors[0].kind == "loan_default" and result.factors[0].effect == -150
    late = next(f for f in result.factors if f.kind == "payment_late")
    assert list(late.records) == ["zhima/p1", "zhima/p2"]
    assert result.band == policy.band(result.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]]\nkind='x'\ncap=1\n", "missing [policy]"),
        ("[policy]\nname='p'\nversion='1'\nbase=1\nmin=0\nmax=9\n", "[[band]]"),
        ("[policy]\nname='p'\nversion='1'\nbase=1\nmin=9\nmax=0\n[[band]]\nname='a'\nmin=0\n",
         "below"),
        ("[policy]\nname='p'\nversion='1'\nbase=1\nmin=0\nmax=9\n[[band]]\nname='a'\nmin=0\n"
         "[[rule]]\nkind='x'\ncap=0\n", "'cap' must be positive"),
        ("[policy]\nname='p'\nversion='1'\nbase=1\nmin=0\nmax=9\n[[band]]\nname='a'\nmin=0\n"
         "[[rule]]\nkind='x'\ncap=1\n[[rule]]\nkind='x'\ncap=2\n", "a second rule"),
        ("[policy]\nname='p'\nversion='1'\nbase='high'\nmin=0\nmax=9\n[[band]]\nname='a'\nmin=0\n",
         "'base' must be"),
    ],
)  # fmt: skip
def test_bad_policy_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_policy(path)


def test_the_profile_score_can_be_recomputed_from_its_records(federation: Federation) -> None:
    subject = federation.subject("S1")
    consent_id = federation.loop.run(
        subject.grant(
            requester_id="bank", purpose=Purpose.PURPOSE_LOAN_APPLICATION,
            categories=[Category.CATEGORY_FINANCIAL, Category.CATEGORY_JUDICIAL,
                        Category.CATEGORY_VOLUNTEERING],
        )
    )  # fmt: skip
    profile = federation.loop.run(
        federation.requester("bank").get_profile(
            subject_id="S1", consent_id=consent_id, purpose=Purpose.PURPOSE_LOAN_APPLICATION
        )
    )
    assert profile.score is not None
    assert profile.score.policy == "national-baseline"
    again = score(
        load_policy(POLICY),
        [ScoredRecord(r.node_id, r.record_id, r.kind, r.value, r.occurred_at)
         for r in profile.records],
        profile.score.as_of,
    )  # fmt: skip
    assert again.value == profile.score.value
    assert [f.kind for f in again.factors] == [f.kind for f in profile.score.factors]
    judgment = next(f for f in profile.score.factors if f.kind == "judgment")
    assert judgment.records == ["courts/(2021)Su01-77"] and judgment.effect < 0


def test_the_regional_policies_load_and_rate_the_same_person_differently() -> None:
    policies = {
        p.stem: load_policy(p) for p in sorted(POLICY.parent.glob("*.toml"))
    }  # fmt: skip
    assert set(policies) == {"national-baseline", "jiangsu-style", "guangdong-style"}
    assert {p.name for p in policies.values()} == set(policies)
    volunteer = [rec("volunteer_hours", 40, 100, f"h{i}") for i in range(4)]
    late_payer = [rec("payment_late", 10, 50, f"p{i}") for i in range(8)]
    scores = {
        name: (score(p, volunteer, NOW).value, score(p, late_payer, NOW).value)
        for name, p in policies.items()
    }
    # Jiangsu rewards volunteering most; Guangdong punishes late payments hardest.
    assert max(scores, key=lambda n: scores[n][0]) == "jiangsu-style"
    assert min(scores, key=lambda n: scores[n][1]) == "guangdong-style"
