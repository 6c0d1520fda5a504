"""court-enforcement: court judgments and the list of dishonest judgment debtors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypedDict

from credex.lab.synth.base import (
    DAYS,
    END,
    REGION_BY_NAME,
    YEAR_OF,
    Adapter,
    Integer,
    IntegerKey,
    NodeSpec,
    NodeWriter,
    Real,
    Subject,
    Table,
    Text,
    TextKey,
    TextOrNull,
    jan1,
    pick,
    random_day,
    sql,
)


class PartiesRow(TypedDict):
    party_id: TextKey
    party_type: Text
    birth_year: Integer
    home_city: Text


class JudgmentsRow(TypedDict):
    judgment_id: IntegerKey
    party_id: Annotated[str, "TEXT NOT NULL REFERENCES parties (party_id)"]
    case_no: Text
    court: Text
    decided_on: Text
    cause: Text
    amount: Real


class DishonestDebtorsRow(TypedDict):
    listing_id: IntegerKey
    party_id: Annotated[str, "TEXT NOT NULL REFERENCES parties (party_id)"]
    case_no: Text
    court: Text
    listed_on: Text
    delisted_on: TextOrNull
    obligation: Text
    amount_unpaid: Real


PARTIES = Table("parties", PartiesRow)
JUDGMENTS = Table("judgments", JudgmentsRow, ("party_id",))
DISHONEST_DEBTORS = Table("dishonest_debtors", DishonestDebtorsRow, ("party_id",))

SPEC = NodeSpec(
    id="court-enforcement",
    name="Supreme People's Court Enforcement Information",
    jurisdiction="CN",
    description="court judgments and the list of dishonest judgment debtors",
    tables=(PARTIES, JUDGMENTS, DISHONEST_DEBTORS),
    adapters=(
        Adapter(
            "judicial",
            sql("""
SELECT 'judgment-' || j.judgment_id AS record_id, 'judgment' AS kind, j.amount AS value,
       'CNY' AS unit, j.decided_on AS occurred_at, j.case_no AS case_no, j.court AS court,
       j.cause AS cause,
       j.party_id AS local_id
FROM judgments AS j
WHERE j.party_id = :local_id
"""),
        ),
        Adapter(
            "judicial",
            sql("""
SELECT 'listing-' || d.listing_id AS record_id, 'dishonest_debtor' AS kind,
       d.amount_unpaid AS value, 'CNY' AS unit, d.listed_on AS occurred_at,
       d.case_no AS case_no, d.court AS court, d.obligation AS obligation,
       CASE WHEN d.delisted_on IS NULL THEN 'listed' ELSE 'delisted' END AS status,
       COALESCE(d.delisted_on, '') AS delisted_on,
       d.party_id AS local_id
FROM dishonest_debtors AS d
WHERE d.party_id = :local_id
"""),
        ),
    ),
)


_CAUSES = (
    ("loan_contract_dispute", 3_000, 200_000),
    ("credit_card_dispute", 2_000, 60_000),
    ("rental_dispute", 1_000, 30_000),
    ("labour_dispute", 2_000, 50_000),
    ("traffic_accident_liability", 5_000, 150_000),
)


class CourtEnforcementWriter(NodeWriter):
    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_party = self.adder(PARTIES)
        self.add_judgment = self.adder(JUDGMENTS)
        self.add_dishonest_debtor = self.adder(DISHONEST_DEBTORS)

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        start = max(0, jan1(s.birth_year + 16))
        if start > END - 30 or rng.random() >= 0.36 * (1 - r) ** 2:
            return None
        party_id = f"PTY-{self.local_number(32):08X}"
        region = REGION_BY_NAME[s.region]
        self.add_party(
            party_id=party_id,
            party_type="natural_person",
            birth_year=s.birth_year,
            home_city=s.city,
        )
        count = 1 + int(rng.random() * (1 + 2 * (1 - r)))
        for day in sorted(random_day(rng, start, END) for _ in range(count)):
            cause, low, high = _CAUSES[int(rng.random() * len(_CAUSES))]
            amount = float(round(low + rng.random() * (high - low), -1))
            court_code = f"{1 + int(rng.random() * 9):02d}{1 + int(rng.random() * 12):02d}"
            court = f"{s.city} {pick(rng, ('Intermediate', 'District'))} People's Court"
            year = YEAR_OF[day]
            serial = 1 + int(rng.random() * 20_000)
            self.add_judgment(
                judgment_id=next(self.ids[JUDGMENTS]),
                party_id=party_id,
                case_no=f"({year}){region.court_abbr}{court_code}民初{serial}号",
                court=court,
                decided_on=DAYS[day],
                cause=cause,
                amount=amount,
            )
            if day + 60 <= END and rng.random() < 0.25 + 0.5 * (1 - r):
                listed = random_day(rng, day + 60, min(END, day + 400))
                delisted: str | None = None
                if listed + 30 <= END and rng.random() < 0.3 + 0.5 * r:
                    delisted = DAYS[random_day(rng, listed + 30, min(END, listed + 700))]
                self.add_dishonest_debtor(
                    listing_id=next(self.ids[DISHONEST_DEBTORS]),
                    party_id=party_id,
                    case_no=f"({YEAR_OF[listed]}){region.court_abbr}{court_code}执{serial}号",
                    court=court,
                    listed_on=DAYS[listed],
                    delisted_on=delisted,
                    obligation="pay the adjudged sum",
                    amount_unpaid=round(amount * (0.3 + 0.7 * rng.random()), 2),
                )
        return party_id
