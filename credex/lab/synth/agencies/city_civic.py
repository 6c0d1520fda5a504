"""civic-<city>: a city civilisation office, one per pilot city, knowing only its residents."""

from __future__ import annotations

from collections.abc import Sequence
from random import Random

from credex.lab.synth.agencies.jiangsu_pilot import COMMENDATIONS, OFFENCES
from credex.lab.synth.base import (
    DAYS,
    END,
    Adapter,
    NodeSpec,
    NodeWriter,
    Region,
    Subject,
    Table,
    jan1,
    random_day,
    sql,
)

KIND = "city-civic"

TABLES = (
    Table(
        "residents",
        (
            "citizen_no TEXT PRIMARY KEY",
            "district TEXT NOT NULL",
            "registered_on TEXT NOT NULL",
        ),
    ),
    Table(
        "civic_entries",
        (
            "entry_no INTEGER PRIMARY KEY",
            "citizen_no TEXT NOT NULL REFERENCES residents (citizen_no)",
            "recorded_on TEXT NOT NULL",
            "entry_kind TEXT NOT NULL",
            "points INTEGER NOT NULL",
            "detail TEXT NOT NULL",
            "office TEXT NOT NULL",
        ),
        ("citizen_no",),
    ),
)
ADAPTERS = (
    Adapter(
        "civic",
        sql("""
SELECT 'entry-' || e.entry_no AS record_id, e.entry_kind AS kind, e.points AS value,
       'points' AS unit, e.recorded_on AS occurred_at, e.detail AS detail, e.office AS office,
       e.citizen_no AS local_id
FROM civic_entries AS e
WHERE e.citizen_no = :local_id
"""),
    ),
)


def spec(region: Region, city: str) -> NodeSpec:
    return NodeSpec(
        id=f"civic-{city.lower()}",
        name=f"{city} Civilisation Office",
        jurisdiction=region.code,
        description=f"city civic office of {city}: commendations and violations of its residents",
        tables=TABLES,
        adapters=ADAPTERS,
        regions=(region.name,),
        cities=(city,),
        kind=KIND,
    )


class CityCivicWriter(NodeWriter):
    """A city office: knows about half its residents, with commendations and violations."""

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.5:
            return None
        registered = max(0, jan1(s.birth_year + 14))
        citizen_no = f"{s.city[:3].upper()}-{self.local_number(30):010d}"
        district = f"{s.city} District {1 + int(rng.random() * 9)}"
        self.rows["residents"].append((citizen_no, district, DAYS[registered]))
        office = f"{s.city} Civilisation Office"
        for _ in range(1 + int(rng.random() * 4)):
            day = DAYS[random_day(rng, registered, END)]
            if rng.random() < 0.3 + 0.6 * r:
                award, points = _pick_pair(rng, COMMENDATIONS)
                row = (self.next_id("civic_entries"), citizen_no, day, "commendation", points,
                       award, office)  # fmt: skip
            else:
                offence, points, _fine, _licence = OFFENCES[int(rng.random() * 2)]
                row = (self.next_id("civic_entries"), citizen_no, day, "traffic_violation",
                       points, offence, office)  # fmt: skip
            self.rows["civic_entries"].append(row)
        return citizen_no


def _pick_pair(rng: Random, items: Sequence[tuple[str, int]]) -> tuple[str, int]:
    return items[int(rng.random() * len(items))]
