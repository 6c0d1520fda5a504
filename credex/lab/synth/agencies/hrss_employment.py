"""hrss-employment: the social insurance register (insured persons, employment spells)."""

from __future__ import annotations

from credex.lab.synth.base import (
    DAYS,
    END,
    MAX_AGE,
    REFERENCE_YEAR,
    Adapter,
    NodeSpec,
    NodeWriter,
    Subject,
    Table,
    jan1,
    random_day,
    sql,
)

SPEC = NodeSpec(
    id="hrss-employment",
    name="Ministry of Human Resources and Social Security",
    jurisdiction="CN",
    description="social insurance register: employment spells with employer and wage",
    tables=(
        Table(
            "insured_persons",
            (
                "insurance_no TEXT PRIMARY KEY",
                "city TEXT NOT NULL",
                "first_insured_on TEXT NOT NULL",
            ),
        ),
        Table(
            "employment_spells",
            (
                "spell_id INTEGER PRIMARY KEY",
                "insurance_no TEXT NOT NULL REFERENCES insured_persons (insurance_no)",
                "employer TEXT NOT NULL",
                "industry TEXT NOT NULL",
                "started_on TEXT NOT NULL",
                "ended_on TEXT",
                "monthly_wage REAL NOT NULL",
                "end_reason TEXT",
            ),
            ("insurance_no",),
        ),
    ),
    adapters=(
        Adapter(
            "employment",
            sql("""
SELECT 'start-' || s.spell_id AS record_id, 'employment_started' AS kind,
       s.monthly_wage AS value, 'CNY/month' AS unit, s.started_on AS occurred_at,
       s.employer AS employer, s.industry AS industry,
       s.insurance_no AS local_id
FROM employment_spells AS s
WHERE s.insurance_no = :local_id
"""),
        ),
        Adapter(
            "employment",
            sql("""
SELECT 'end-' || s.spell_id AS record_id, 'employment_ended' AS kind,
       ROUND((julianday(s.ended_on) - julianday(s.started_on)) / 30.44, 1) AS value,
       'months' AS unit, s.ended_on AS occurred_at, s.employer AS employer,
       s.end_reason AS end_reason,
       s.insurance_no AS local_id
FROM employment_spells AS s
WHERE s.insurance_no = :local_id AND s.ended_on IS NOT NULL
"""),
        ),
    ),
)


_EMPLOYERS = (
    ("Huawei Technologies", "telecommunications"),
    ("Tencent", "internet"),
    ("Alibaba Group", "internet"),
    ("BYD", "automotive"),
    ("China Mobile", "telecommunications"),
    ("Suning", "retail"),
    ("Midea Group", "manufacturing"),
    ("JD.com", "retail"),
    ("Industrial and Commercial Bank of China", "banking"),
    ("China State Construction Engineering", "construction"),
    ("SF Express", "logistics"),
)
_LOCAL_EMPLOYERS = (
    ("Municipal Hospital", "healthcare"),
    ("Catering Company", "hospitality"),
    ("Property Management Company", "real_estate"),
    ("Electronics Factory", "manufacturing"),
)
_END_REASONS = ("resigned", "contract_ended", "laid_off", "dismissed")


class HrssEmploymentWriter(NodeWriter):
    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        age = REFERENCE_YEAR - s.birth_year
        adult = max(0, jan1(s.birth_year + 18))
        if age < 18 or adult > END - 30:
            return None
        if rng.random() >= 0.3 + 0.6 * (age - 18) / (MAX_AGE - 18):
            return None
        insurance_no = f"SB{self.local_number(34):011d}"
        spells = 1 + int(rng.random() * min(4.0, 1 + (age - 18) / 4))
        day = random_day(rng, adult, min(END, adult + 730))
        self.rows["insured_persons"].append((insurance_no, s.city, DAYS[day]))
        for _ in range(spells):
            if rng.random() < 0.6:
                employer, industry = _EMPLOYERS[int(rng.random() * len(_EMPLOYERS))]
            else:
                name, industry = _LOCAL_EMPLOYERS[int(rng.random() * len(_LOCAL_EMPLOYERS))]
                employer = f"{s.city} {name}"
            wage = float(round(3_000 + rng.random() * 6_000 + 12_000 * r * rng.random(), -1))
            ended = day + 90 + int(rng.random() * (300 + 1500 * r))
            end_reason = _END_REASONS[int(rng.random() * (2 + 2 * (1 - r)))]
            if ended > END:
                self.rows["employment_spells"].append(
                    (
                        self.next_id("employment_spells"),
                        insurance_no,
                        employer,
                        industry,
                        DAYS[day],
                        None,
                        wage,
                        None,
                    )
                )
                break
            self.rows["employment_spells"].append(
                (
                    self.next_id("employment_spells"),
                    insurance_no,
                    employer,
                    industry,
                    DAYS[day],
                    DAYS[ended],
                    wage,
                    end_reason,
                )
            )
            day = ended + 1 + int(rng.random() * 180)
            if day > END:
                break
        return insurance_no
