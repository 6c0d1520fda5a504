"""education-ministry: the national student register (students, enrolments, degrees)."""

from __future__ import annotations

from pathlib import Path
from random import Random
from typing import Annotated, NamedTuple, TypedDict

from credex.lab.synth.base import (
    DAYS,
    END,
    MAX_RECORDS_PER_CATEGORY,
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
    jan1,
    pick,
    random_day,
    sql,
)


class StudentsRow(TypedDict):
    student_no: TextKey
    birth_year: Integer
    home_city: Text
    registered_on: Text


class EnrollmentsRow(TypedDict):
    enrollment_id: IntegerKey
    student_no: Annotated[str, "TEXT NOT NULL REFERENCES students (student_no)"]
    institution: Text
    level: Text
    isced_level: Integer
    enrolled_on: Text
    status: Text


class DegreesRow(TypedDict):
    degree_id: IntegerKey
    student_no: Annotated[str, "TEXT NOT NULL REFERENCES students (student_no)"]
    institution: Text
    qualification: Text
    awarded_on: Text
    final_score: Real


STUDENTS = Table("students", StudentsRow)
ENROLLMENTS = Table("enrollments", EnrollmentsRow, ("student_no",))
DEGREES = Table("degrees", DegreesRow, ("student_no",))

SPEC = NodeSpec(
    id="education-ministry",
    name="Ministry of Education Student Register",
    jurisdiction="CN",
    description="national student register (xueji): enrolments and qualifications",
    tables=(STUDENTS, ENROLLMENTS, DEGREES),
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
    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_student = self.adder(STUDENTS)
        self.add_enrollment = self.adder(ENROLLMENTS)
        self.add_degree = self.adder(DEGREES)

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
        # (day, stage, institution, an enrolment's status or a degree's final score)
        events: list[tuple[int, _Stage, str, str | float]] = []
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
                events.append((enrolled, stage, institution, status))
            if 0 <= graduated <= END:
                events.append((graduated, stage, institution, score))
        if not events:  # studied before the register went digital: continuing education only
            stage = _Stage("adult_higher_education", 5, 18, 3, "adult_higher_education_diploma")
            enrolled = random_day(rng, max(0, jan1(s.birth_year + 18)), END)
            institution = "Open University of China"
            events.append((enrolled, stage, institution, "enrolled"))
            if enrolled + 900 <= END:
                score = round(min(100.0, 55.0 + 40.0 * r + (rng.random() - 0.5) * 12.0), 1)
                events[0] = (enrolled, stage, institution, "graduated")
                events.append((enrolled + 900, stage, institution, score))
        events = events[:MAX_RECORDS_PER_CATEGORY]
        first = events[0][0]
        student_no = f"XJ{YEAR_OF[first]}{self.local_number(27):09d}"
        self.add_student(
            student_no=student_no,
            birth_year=s.birth_year,
            home_city=s.city,
            registered_on=DAYS[first],
        )
        for day, stage, institution, detail in events:
            if isinstance(detail, float):
                self.add_degree(
                    degree_id=next(self.ids[DEGREES]),
                    student_no=student_no,
                    institution=institution,
                    qualification=stage.qualification,
                    awarded_on=DAYS[day],
                    final_score=detail,
                )
            else:
                self.add_enrollment(
                    enrollment_id=next(self.ids[ENROLLMENTS]),
                    student_no=student_no,
                    institution=institution,
                    level=stage.level,
                    isced_level=stage.isced,
                    enrolled_on=DAYS[day],
                    status=detail,
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
