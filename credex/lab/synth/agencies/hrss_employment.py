"""hrss-employment: the social insurance register (insured persons, employment spells)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypedDict

from credex.lab.synth.base import (
    DAYS,
    END,
    MAX_AGE,
    REFERENCE_YEAR,
    Adapter,
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
    random_day,
    sql,
)


class InsuredPersonsRow(TypedDict):
    insurance_no: TextKey
    city: Text
    first_insured_on: Text


class EmploymentSpellsRow(TypedDict):
    spell_id: IntegerKey
    insurance_no: Annotated[str, "TEXT NOT NULL REFERENCES insured_persons (insurance_no)"]
    employer: Text
    industry: Text
    started_on: Text
    ended_on: TextOrNull
    monthly_wage: Real
    end_reason: TextOrNull


INSURED_PERSONS = Table("insured_persons", InsuredPersonsRow)
EMPLOYMENT_SPELLS = Table("employment_spells", EmploymentSpellsRow, ("insurance_no",))

SPEC = NodeSpec(
    id="hrss-employment",
    name="Ministry of Human Resources and Social Security",
    jurisdiction="CN",
    description="social insurance register: employment spells with employer and wage",
    tables=(INSURED_PERSONS, EMPLOYMENT_SPELLS),
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
    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_insured_person = self.adder(INSURED_PERSONS)
        self.add_employment_spell = self.adder(EMPLOYMENT_SPELLS)

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
        self.add_insured_person(insurance_no=insurance_no, city=s.city, first_insured_on=DAYS[day])
        for _ in range(spells):
            if rng.random() < 0.6:
                employer, industry = _EMPLOYERS[int(rng.random() * len(_EMPLOYERS))]
            else:
                name, industry = _LOCAL_EMPLOYERS[int(rng.random() * len(_LOCAL_EMPLOYERS))]
                employer = f"{s.city} {name}"
            wage = float(round(3_000 + rng.random() * 6_000 + 12_000 * r * rng.random(), -1))
            ended = day + 90 + int(rng.random() * (300 + 1500 * r))
            end_reason = _END_REASONS[int(rng.random() * (2 + 2 * (1 - r)))]
            still_employed = ended > END
            self.add_employment_spell(
                spell_id=next(self.ids[EMPLOYMENT_SPELLS]),
                insurance_no=insurance_no,
                employer=employer,
                industry=industry,
                started_on=DAYS[day],
                ended_on=None if still_employed else DAYS[ended],
                monthly_wage=wage,
                end_reason=None if still_employed else end_reason,
            )
            if still_employed:
                break
            day = ended + 1 + int(rng.random() * 180)
            if day > END:
                break
        return insurance_no
