"""education-ministry: the national student register (students, enrolments, degrees)."""

from __future__ import annotations

from random import Random
from typing import NamedTuple

from credex.lab.synth.base import (
    DAYS,
    END,
    MAX_RECORDS_PER_CATEGORY,
    YEAR_OF,
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
    id="education-ministry",
    name="Ministry of Education Student Register",
    jurisdiction="CN",
    description="national student register (xueji): enrolments and qualifications",
    tables=(
        Table(
            "students",
            (
                "student_no TEXT PRIMARY KEY",
                "birth_year INTEGER NOT NULL",
                "home_city TEXT NOT NULL",
                "registered_on TEXT NOT NULL",
            ),
        ),
        Table(
            "enrollments",
            (
                "enrollment_id INTEGER PRIMARY KEY",
                "student_no TEXT NOT NULL REFERENCES students (student_no)",
                "institution TEXT NOT NULL",
                "level TEXT NOT NULL",
                "isced_level INTEGER NOT NULL",
                "enrolled_on TEXT NOT NULL",
                "status TEXT NOT NULL",
            ),
            ("student_no",),
        ),
        Table(
            "degrees",
            (
                "degree_id INTEGER PRIMARY KEY",
                "student_no TEXT NOT NULL REFERENCES students (student_no)",
                "institution TEXT NOT NULL",
                "qualification TEXT NOT NULL",
                "awarded_on TEXT NOT NULL",
                "final_score REAL NOT NULL",
            ),
            ("student_no",),
        ),
    ),
    adapters=(
        Adapter(
            "education",
            sql("""
SELECT 'enrollment-' || e.enrollment_id AS record_id, 'enrollment' AS kind,
       e.isced_level AS value, 'isced_level' AS unit, e.enrolled_on AS occurred_at,
       e.institution AS institution, e.level AS level, e.status AS status,
       e.student_no AS local_id
FROM enrollments AS e
WHERE e.student_no = :local_id
"""),
        ),
        Adapter(
            "education",
            sql("""
SELECT 'degree-' || d.degree_id AS record_id, 'degree' AS kind, d.final_score AS value,
       'percent' AS unit, d.awarded_on AS occurred_at, d.institution AS institution,
       d.qualification AS qualification,
       d.student_no AS local_id
FROM degrees AS d
WHERE d.student_no = :local_id
"""),
        ),
    ),
)


_UNIVERSITIES = {
    "Beijing": ("Peking University", "Tsinghua University", "Beijing Normal University"),
    "Tianjin": ("Nankai University", "Tianjin University"),
    "Jiangsu": ("Nanjing University", "Southeast University", "Soochow University"),
    "Zhejiang": ("Zhejiang University", "Ningbo University"),
    "Fujian": ("Xiamen University", "Fuzhou University"),
    "Hubei": ("Wuhan University", "Huazhong University of Science and Technology"),
    "Guangdong": ("Sun Yat-sen University", "South China University of Technology"),
    "Ningxia": ("Ningxia University",),
    "Chengdu": ("Sichuan University", "University of Electronic Science and Technology of China"),
}
_ALL_UNIVERSITIES = tuple(u for names in _UNIVERSITIES.values() for u in names)


class _Stage(NamedTuple):
    level: str
    isced: int
    start_age: int
    years: int
    qualification: str


_PRIMARY = _Stage("primary", 1, 6, 6, "primary_school_certificate")
_JUNIOR = _Stage("junior_secondary", 2, 12, 3, "junior_secondary_certificate")
_SENIOR = _Stage("senior_secondary", 3, 15, 3, "senior_secondary_diploma")
_VOC_SECONDARY = _Stage("vocational_secondary", 3, 15, 3, "vocational_secondary_diploma")
_VOC_COLLEGE = _Stage("vocational_college", 5, 18, 3, "vocational_college_diploma")
_BACHELOR = _Stage("bachelor", 6, 18, 4, "bachelor")
_MASTER = _Stage("master", 7, 22, 3, "master")
_DOCTORATE = _Stage("doctorate", 8, 25, 4, "doctorate")


class EducationMinistryWriter(NodeWriter):
    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        if rng.random() >= 0.9:
            return None
        plan = [_PRIMARY, _JUNIOR]
        if rng.random() < 0.45 + 0.5 * r:
            plan.append(_SENIOR)
            if rng.random() < 0.3 + 0.6 * r:
                plan.append(_BACHELOR)
                if rng.random() < 0.05 + 0.35 * r:
                    plan.append(_MASTER)
                    if rng.random() < 0.1 + 0.3 * r:
                        plan.append(_DOCTORATE)
            elif rng.random() < 0.5:
                plan.append(_VOC_COLLEGE)
        else:
            plan.append(_VOC_SECONDARY)
            if rng.random() < 0.3:
                plan.append(_VOC_COLLEGE)
        # (day, is_degree, stage, institution, status or score)
        events: list[tuple[int, bool, _Stage, str, str | float]] = []
        for stage in plan:
            enrolled = jan1(s.birth_year + stage.start_age) + 243 + int(rng.random() * 7)
            graduated = jan1(s.birth_year + stage.start_age + stage.years) + 176
            graduated += int(rng.random() * 14)
            institution = self._institution(rng, s, stage)
            score = round(min(100.0, 55.0 + 40.0 * r + (rng.random() - 0.5) * 12.0), 1)
            if enrolled > END:
                break
            if enrolled >= 0:
                status = "graduated" if graduated <= END else "enrolled"
                events.append((enrolled, False, stage, institution, status))
            if 0 <= graduated <= END:
                events.append((graduated, True, stage, institution, score))
        if not events:  # studied before the register went digital: continuing education only
            stage = _Stage("adult_higher_education", 5, 18, 3, "adult_higher_education_diploma")
            enrolled = random_day(rng, max(0, jan1(s.birth_year + 18)), END)
            institution = "Open University of China"
            events.append((enrolled, False, stage, institution, "enrolled"))
            if enrolled + 900 <= END:
                score = round(min(100.0, 55.0 + 40.0 * r + (rng.random() - 0.5) * 12.0), 1)
                events[0] = (enrolled, False, stage, institution, "graduated")
                events.append((enrolled + 900, True, stage, institution, score))
        events = events[:MAX_RECORDS_PER_CATEGORY]
        first = events[0][0]
        student_no = f"XJ{YEAR_OF[first]}{self.local_number(27):09d}"
        self.rows["students"].append((student_no, s.birth_year, s.city, DAYS[first]))
        for day, is_degree, stage, institution, detail in events:
            if is_degree:
                self.rows["degrees"].append(
                    (
                        self.next_id("degrees"),
                        student_no,
                        institution,
                        stage.qualification,
                        DAYS[day],
                        detail,
                    )
                )
            else:
                self.rows["enrollments"].append(
                    (
                        self.next_id("enrollments"),
                        student_no,
                        institution,
                        stage.level,
                        stage.isced,
                        DAYS[day],
                        detail,
                    )
                )
        return student_no

    @staticmethod
    def _institution(rng: Random, s: Subject, stage: _Stage) -> str:
        number = 1 + int(rng.random() * 40)
        if stage is _PRIMARY:
            return f"{s.city} No. {number} Primary School"
        if stage is _JUNIOR:
            return f"{s.city} No. {number} Middle School"
        if stage is _SENIOR:
            return f"{s.city} No. {number} High School"
        if stage is _VOC_SECONDARY:
            return f"{s.city} Vocational School No. {number % 8 + 1}"
        if stage is _VOC_COLLEGE:
            return f"{s.city} Vocational and Technical College"
        if rng.random() < 0.6:
            return pick(rng, _UNIVERSITIES[s.region])
        return pick(rng, _ALL_UNIVERSITIES)
