"""jiangsu-pilot: the Jiangsu provincial youth credit pilot (residents, community
commendations, traffic violations)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypedDict

from credex.lab.synth.base import (
    DAYS,
    END,
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
    jan1,
    random_day,
    sql,
)

_CITY_CODES = {  # the city part of a resident code; 3200 for the rest of the province
    "Nanjing": 3201,
    "Wuxi": 3202,
    "Xuzhou": 3203,
    "Changzhou": 3204,
    "Suzhou": 3205,
}


class ResidentsRow(TypedDict):
    resident_code: TextKey
    city: Text
    enrolled_on: Text


class CommendationsRow(TypedDict):
    commendation_id: IntegerKey
    resident_code: Annotated[str, "TEXT NOT NULL REFERENCES residents (resident_code)"]
    awarded_on: Text
    award: Text
    issuer: Text
    points: Integer


class TrafficViolationsRow(TypedDict):
    violation_id: IntegerKey
    resident_code: Annotated[str, "TEXT NOT NULL REFERENCES residents (resident_code)"]
    occurred_on: Text
    offence: Text
    penalty_points: Integer
    fine: Real


RESIDENTS = Table("residents", ResidentsRow)
COMMENDATIONS = Table("commendations", CommendationsRow, ("resident_code",))
TRAFFIC_VIOLATIONS = Table("traffic_violations", TrafficViolationsRow, ("resident_code",))

SPEC = NodeSpec(
    id="jiangsu-pilot",
    name="Jiangsu Youth Credit Pilot",
    jurisdiction="CN-JS",
    description="provincial pilot: community commendations and traffic violations in Jiangsu",
    tables=(RESIDENTS, COMMENDATIONS, TRAFFIC_VIOLATIONS),
    adapters=(
        Adapter(
            "civic",
            sql("""
SELECT 'commendation-' || c.commendation_id AS record_id, 'commendation' AS kind,
       c.points AS value, 'points' AS unit, c.awarded_on AS occurred_at, c.award AS award,
       c.issuer AS issuer,
       c.resident_code AS local_id
FROM commendations AS c
WHERE c.resident_code = :local_id
"""),
        ),
        Adapter(
            "civic",
            sql("""
SELECT 'violation-' || t.violation_id AS record_id, 'traffic_violation' AS kind,
       t.penalty_points AS value, 'penalty_points' AS unit, t.occurred_on AS occurred_at,
       t.offence AS offence, t.fine AS fine_cny,
       t.resident_code AS local_id
FROM traffic_violations AS t
WHERE t.resident_code = :local_id
"""),
        ),
    ),
    regions=("Jiangsu",),
)


# award: points (city civic offices give the same awards and the first two offences)
COMMENDATION_AWARDS = (
    ("Good Samaritan", 10),
    ("Community Service Star", 5),
    ("Voluntary Blood Donor", 5),
    ("Model Youth", 8),
    ("Anti-fraud Informant", 3),
)
# offence: (penalty points, fine, needs a driving licence)
OFFENCES = (
    ("e_bike_no_helmet", 0, 20.0, False),
    ("e_bike_wrong_way", 0, 50.0, False),
    ("running_red_light", 6, 200.0, True),
    ("speeding", 3, 200.0, True),
    ("illegal_parking", 0, 150.0, True),
    ("phone_while_driving", 3, 100.0, True),
)


class JiangsuPilotWriter(NodeWriter):
    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_resident = self.adder(RESIDENTS)
        self.add_commendation = self.adder(COMMENDATIONS)
        self.add_traffic_violation = self.adder(TRAFFIC_VIOLATIONS)

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.85:
            return None
        enrolled = max(0, jan1(s.birth_year + 12))
        violations_from = max(enrolled, jan1(s.birth_year + 16))
        commendations = int(rng.random() * (1 + 4 * r))
        violations = int(rng.random() * (1 + 4 * (1 - r))) if violations_from <= END else 0
        if commendations + violations == 0:
            if violations_from <= END and rng.random() > r:
                violations = 1
            else:
                commendations = 1
        code = _CITY_CODES.get(s.city, 3200)
        resident_code = f"JS-{code}-{self.local_number(32):08X}"
        self.add_resident(resident_code=resident_code, city=s.city, enrolled_on=DAYS[enrolled])
        issuer = f"{s.city} Civilisation Office"
        for _ in range(commendations):
            award, points = COMMENDATION_AWARDS[int(rng.random() * len(COMMENDATION_AWARDS))]
            day = random_day(rng, enrolled, END)
            self.add_commendation(
                commendation_id=next(self.ids[COMMENDATIONS]),
                resident_code=resident_code,
                awarded_on=DAYS[day],
                award=award,
                issuer=issuer,
                points=points,
            )
        licence_from = jan1(s.birth_year + 18)
        for _ in range(violations):
            day = random_day(rng, violations_from, END)
            offence, points, fine, needs_licence = OFFENCES[int(rng.random() * len(OFFENCES))]
            if needs_licence and day < licence_from:
                offence, points, fine, _ = OFFENCES[0]
            self.add_traffic_violation(
                violation_id=next(self.ids[TRAFFIC_VIOLATIONS]),
                resident_code=resident_code,
                occurred_on=DAYS[day],
                offence=offence,
                penalty_points=points,
                fine=fine,
            )
        return resident_code
