"""guangdong-pilot: the Guangdong provincial pilot, merits and demerits in one ledger."""

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
    Subject,
    Table,
    Text,
    TextKey,
    jan1,
    random_day,
    sql,
)


class CitizensRow(TypedDict):
    citizen_ref: TextKey
    city: Text
    enrolled_on: Text


class CreditEventsRow(TypedDict):
    event_id: IntegerKey
    citizen_ref: Annotated[str, "TEXT NOT NULL REFERENCES citizens (citizen_ref)"]
    event_date: Text
    event_type: Text
    score_delta: Integer
    department: Text


CITIZENS = Table("citizens", CitizensRow)
CREDIT_EVENTS = Table("credit_events", CreditEventsRow, ("citizen_ref",))

SPEC = NodeSpec(
    id="guangdong-pilot",
    name="Guangdong Youth Credit Pilot",
    jurisdiction="CN-GD",
    description="provincial pilot with its own point scheme: merits and demerits in one ledger",
    tables=(CITIZENS, CREDIT_EVENTS),
    adapters=(
        Adapter(
            "civic",
            sql("""
SELECT 'event-' || e.event_id AS record_id,
       CASE WHEN e.score_delta >= 0 THEN 'civic_merit' ELSE 'civic_demerit' END AS kind,
       e.score_delta AS value, 'points' AS unit, e.event_date AS occurred_at,
       e.event_type AS event_type, e.department AS department,
       e.citizen_ref AS local_id
FROM credit_events AS e
WHERE e.citizen_ref = :local_id
"""),
        ),
    ),
    regions=("Guangdong",),
)


_GD_MERITS = (
    ("blood_donation", 5, "Health Commission"),
    ("community_volunteering", 3, "Communist Youth League Committee"),
    ("neighbourhood_mediation", 2, "Civil Affairs Bureau"),
    ("scholarship", 4, "Education Bureau"),
)
_GD_DEMERITS = (
    ("fare_evasion", -3, "Metro Group"),
    ("littering", -1, "Urban Management Bureau"),
    ("utility_arrears", -2, "Development and Reform Commission"),
    ("academic_misconduct", -10, "Education Bureau"),
)


class GuangdongPilotWriter(NodeWriter):
    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_citizen = self.adder(CITIZENS)
        self.add_credit_event = self.adder(CREDIT_EVENTS)

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.8:
            return None
        enrolled = max(0, jan1(s.birth_year + 12))
        citizen_ref = f"GD{self.local_number(34):011d}"
        self.add_citizen(citizen_ref=citizen_ref, city=s.city, enrolled_on=DAYS[enrolled])
        for day in sorted(random_day(rng, enrolled, END) for _ in range(1 + int(rng.random() * 6))):
            table = _GD_MERITS if rng.random() < 0.4 + 0.55 * r else _GD_DEMERITS
            event, delta, department = table[int(rng.random() * len(table))]
            self.add_credit_event(
                event_id=next(self.ids[CREDIT_EVENTS]),
                citizen_ref=citizen_ref,
                event_date=DAYS[day],
                event_type=event,
                score_delta=delta,
                department=f"{s.city} {department}",
            )
        return citizen_ref
