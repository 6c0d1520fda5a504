"""volunteer-registry: the national volunteer service registry (volunteers, service hours,
star awards)."""

from __future__ import annotations

from credex.lab.synth.base import (
    DAYS,
    END,
    Adapter,
    NodeSpec,
    NodeWriter,
    Subject,
    Table,
    jan1,
    pick,
    random_day,
    sql,
)

SPEC = NodeSpec(
    id="volunteer-registry",
    name="China Volunteer Service Registry",
    jurisdiction="CN",
    description="national volunteer service registry: volunteers, service hours, star awards",
    tables=(
        Table(
            "volunteers",
            (
                "volunteer_no TEXT PRIMARY KEY",
                "registered_on TEXT NOT NULL",
                "home_city TEXT NOT NULL",
                "birth_year INTEGER NOT NULL",
                "status TEXT NOT NULL",
            ),
        ),
        Table(
            "service_hours",
            (
                "entry_id INTEGER PRIMARY KEY",
                "volunteer_no TEXT NOT NULL REFERENCES volunteers (volunteer_no)",
                "served_on TEXT NOT NULL",
                "hours REAL NOT NULL",
                "organisation TEXT NOT NULL",
                "activity TEXT NOT NULL",
            ),
            ("volunteer_no",),
        ),
        Table(
            "awards",
            (
                "award_id INTEGER PRIMARY KEY",
                "volunteer_no TEXT NOT NULL REFERENCES volunteers (volunteer_no)",
                "awarded_on TEXT NOT NULL",
                "star_level INTEGER NOT NULL",
                "title TEXT NOT NULL",
                "hours_at_award REAL NOT NULL",
            ),
            ("volunteer_no",),
        ),
    ),
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
    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.2 + 0.6 * r:
            return None
        registered = random_day(rng, max(0, jan1(s.birth_year + 12)), END)
        days = sorted(
            random_day(rng, registered, END) for _ in range(1 + int(rng.random() * (1 + 7 * r)))
        )
        volunteer_no = f"VOL-{self.local_number(32):08X}"
        status = "active" if days[-1] > END - 730 else "inactive"
        self.rows["volunteers"].append(
            (volunteer_no, DAYS[registered], s.city, s.birth_year, status)
        )
        total, stars = 0.0, 0
        for day in days:
            hours = round(1.0 + rng.random() * (4.0 + 40.0 * r), 1)
            total += hours
            organisation = f"{s.city} {pick(rng, _ORGANISATIONS)}"
            self.rows["service_hours"].append(
                (
                    self.next_id("service_hours"),
                    volunteer_no,
                    DAYS[day],
                    hours,
                    organisation,
                    pick(rng, _ACTIVITIES),
                )
            )
            while stars < len(_STAR_HOURS) and total >= _STAR_HOURS[stars]:
                stars += 1
                self.rows["awards"].append(
                    (
                        self.next_id("awards"),
                        volunteer_no,
                        DAYS[day],
                        stars,
                        f"{stars}-star volunteer",
                        round(total, 1),
                    )
                )
        return volunteer_no
