"""civic-<city>: a city civilisation office, one per pilot city, knowing only its residents."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypedDict

from credex.lab.synth.agencies.jiangsu_pilot import COMMENDATION_AWARDS, OFFENCES
from credex.lab.synth.base import (
    DAYS,
    END,
    Adapter,
    Integer,
    IntegerKey,
    NodeSpec,
    NodeWriter,
    Region,
    Subject,
    Table,
    Text,
    TextKey,
    jan1,
    pick,
    random_day,
    sql,
)

KIND = "city-civic"


class ResidentsRow(TypedDict):
    citizen_no: TextKey
    district: Text
    registered_on: Text


class CivicEntriesRow(TypedDict):
    entry_no: IntegerKey
    citizen_no: Annotated[str, "TEXT NOT NULL REFERENCES residents (citizen_no)"]
    recorded_on: Text
    entry_kind: Text
    points: Integer
    detail: Text
    office: Text


RESIDENTS = Table("residents", ResidentsRow)
CIVIC_ENTRIES = Table("civic_entries", CivicEntriesRow, ("citizen_no",))
TABLES = (RESIDENTS, CIVIC_ENTRIES)
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
    """The civic office of `city`, knowing only residents of that city."""
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

    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_resident = self.adder(RESIDENTS)
        self.add_civic_entry = self.adder(CIVIC_ENTRIES)

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.5:
            return None
        registered = max(0, jan1(s.birth_year + 14))
        citizen_no = f"{s.city[:3].upper()}-{self.local_number(30):010d}"
        self.add_resident(
            citizen_no=citizen_no,
            district=f"{s.city} District {1 + int(rng.random() * 9)}",
            registered_on=DAYS[registered],
        )
        office = f"{s.city} Civilisation Office"
        for _ in range(1 + int(rng.random() * 4)):
            day = DAYS[random_day(rng, registered, END)]
            if rng.random() < 0.3 + 0.6 * r:
                kind = "commendation"
                detail, points = pick(rng, COMMENDATION_AWARDS)
            else:
                kind = "traffic_violation"
                detail, points, _fine, _licence = OFFENCES[int(rng.random() * 2)]
            self.add_civic_entry(
                entry_no=next(self.ids[CIVIC_ENTRIES]),
                citizen_no=citizen_no,
                recorded_on=day,
                entry_kind=kind,
                points=points,
                detail=detail,
                office=office,
            )
        return citizen_no
