"""volunteer-registry: the national volunteer service registry (volunteers, service hours,
star awards)."""

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
    pick,
    random_day,
    sql,
)


class VolunteersRow(TypedDict):
    volunteer_no: TextKey
    registered_on: Text
    home_city: Text
    birth_year: Integer
    status: Text


class ServiceHoursRow(TypedDict):
    entry_id: IntegerKey
    volunteer_no: Annotated[str, "TEXT NOT NULL REFERENCES volunteers (volunteer_no)"]
    served_on: Text
    hours: Real
    organisation: Text
    activity: Text


class AwardsRow(TypedDict):
    award_id: IntegerKey
    volunteer_no: Annotated[str, "TEXT NOT NULL REFERENCES volunteers (volunteer_no)"]
    awarded_on: Text
    star_level: Integer
    title: Text
    hours_at_award: Real


VOLUNTEERS = Table("volunteers", VolunteersRow)
SERVICE_HOURS = Table("service_hours", ServiceHoursRow, ("volunteer_no",))
AWARDS = Table("awards", AwardsRow, ("volunteer_no",))

SPEC = NodeSpec(
    id="volunteer-registry",
    name="China Volunteer Service Registry",
    jurisdiction="CN",
    description="national volunteer service registry: volunteers, service hours, star awards",
    tables=(VOLUNTEERS, SERVICE_HOURS, AWARDS),
    adapters=(
        Adapter(
            "volunteering",
            sql("""
SELECT 'hours-' || h.entry_id AS record_id, 'volunteer_hours' AS kind, h.hours AS value,
       'hours' AS unit, h.served_on AS occurred_at, h.organisation AS organisation,
       h.activity AS activity,
       v.volunteer_no AS local_id
FROM service_hours AS h JOIN volunteers AS v ON v.volunteer_no = h.volunteer_no
WHERE v.volunteer_no = :local_id
"""),
        ),
        Adapter(
            "volunteering",
            sql("""
SELECT 'award-' || a.award_id AS record_id, 'volunteer_award' AS kind, a.star_level AS value,
       'stars' AS unit, a.awarded_on AS occurred_at, a.title AS title,
       a.volunteer_no AS local_id
FROM awards AS a
WHERE a.volunteer_no = :local_id
"""),
        ),
    ),
)


_ORGANISATIONS = (
    "Youth Volunteers Association",
    "Red Cross Society",
    "Community Service Centre",
    "Environmental Volunteers",
    "Public Library",
    "Marathon Organising Committee",
    "Elderly Care Home",
)
_ACTIVITIES = (
    "elderly_care",
    "environmental_protection",
    "community_service",
    "education_support",
    "event_support",
    "emergency_relief",
)
_STAR_HOURS = (100.0, 300.0)  # national star rating thresholds (1 and 2 stars)


class VolunteerRegistryWriter(NodeWriter):
    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_volunteer = self.adder(VOLUNTEERS)
        self.add_service_hours = self.adder(SERVICE_HOURS)
        self.add_award = self.adder(AWARDS)

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.2 + 0.6 * r:
            return None
        registered = random_day(rng, max(0, jan1(s.birth_year + 12)), END)
        days = sorted(
            random_day(rng, registered, END) for _ in range(1 + int(rng.random() * (1 + 7 * r)))
        )
        volunteer_no = f"VOL-{self.local_number(32):08X}"
        self.add_volunteer(
            volunteer_no=volunteer_no,
            registered_on=DAYS[registered],
            home_city=s.city,
            birth_year=s.birth_year,
            status="active" if days[-1] > END - 730 else "inactive",
        )
        total, stars = 0.0, 0
        for day in days:
            hours = round(1.0 + rng.random() * (4.0 + 40.0 * r), 1)
            total += hours
            self.add_service_hours(
                entry_id=next(self.ids[SERVICE_HOURS]),
                volunteer_no=volunteer_no,
                served_on=DAYS[day],
                hours=hours,
                organisation=f"{s.city} {pick(rng, _ORGANISATIONS)}",
                activity=pick(rng, _ACTIVITIES),
            )
            while stars < len(_STAR_HOURS) and total >= _STAR_HOURS[stars]:
                stars += 1
                self.add_award(
                    award_id=next(self.ids[AWARDS]),
                    volunteer_no=volunteer_no,
                    awarded_on=DAYS[day],
                    star_level=stars,
                    title=f"{stars}-star volunteer",
                    hours_at_award=round(total, 1),
                )
        return volunteer_no
