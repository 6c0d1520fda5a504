"""Names of categories and purposes, and which categories each purpose allows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeAlias

from credex.v1 import common_pb2

Category: TypeAlias = common_pb2.Category.ValueType
Purpose: TypeAlias = common_pb2.Purpose.ValueType

C = common_pb2
ALL_CATEGORIES: tuple[Category, ...] = tuple(
    v for v in C.Category.values() if v != C.CATEGORY_UNSPECIFIED
)
ALL_PURPOSES: tuple[Purpose, ...] = tuple(
    v for v in C.Purpose.values() if v != C.PURPOSE_UNSPECIFIED
)

# A consent may not cover a category its purpose does not allow (federation rule).
PURPOSE_CATEGORIES: dict[Purpose, frozenset[Category]] = {
    C.PURPOSE_LOAN_APPLICATION: frozenset(
        {
            C.CATEGORY_IDENTITY,
            C.CATEGORY_FINANCIAL,
            C.CATEGORY_COMMERCIAL,
            C.CATEGORY_JUDICIAL,
            C.CATEGORY_VOLUNTEERING,
            C.CATEGORY_CIVIC,
        }
    ),
    C.PURPOSE_SCHOOL_ENROLLMENT: frozenset(
        {C.CATEGORY_IDENTITY, C.CATEGORY_EDUCATION, C.CATEGORY_VOLUNTEERING, C.CATEGORY_CIVIC}
    ),
    C.PURPOSE_EMPLOYMENT_SCREENING: frozenset(
        {
            C.CATEGORY_IDENTITY,
            C.CATEGORY_EDUCATION,
            C.CATEGORY_EMPLOYMENT,
            C.CATEGORY_JUDICIAL,
            C.CATEGORY_VOLUNTEERING,
        }
    ),
    C.PURPOSE_PROMOTION: frozenset(
        {
            C.CATEGORY_IDENTITY,
            C.CATEGORY_EMPLOYMENT,
            C.CATEGORY_EDUCATION,
            C.CATEGORY_VOLUNTEERING,
            C.CATEGORY_CIVIC,
        }
    ),
    C.PURPOSE_PUBLIC_SERVICE: frozenset(
        {C.CATEGORY_IDENTITY, C.CATEGORY_CIVIC, C.CATEGORY_VOLUNTEERING, C.CATEGORY_JUDICIAL}
    ),
    C.PURPOSE_RESEARCH: frozenset(set(ALL_CATEGORIES) - {C.CATEGORY_IDENTITY}),
    C.PURPOSE_SUBJECT_ACCESS: frozenset(ALL_CATEGORIES),
}


def category_name(value: Category) -> str:
    """`CATEGORY_FINANCIAL` -> `financial`; `unknown-99` for a value this version lacks."""
    if value not in C.Category.values():
        return f"unknown-{int(value)}"
    return C.Category.Name(value).removeprefix("CATEGORY_").lower()


def purpose_name(value: Purpose) -> str:
    """`PURPOSE_LOAN_APPLICATION` -> `loan-application`; `unknown-99` for an unknown value."""
    if value not in C.Purpose.values():
        return f"unknown-{int(value)}"
    return C.Purpose.Name(value).removeprefix("PURPOSE_").lower().replace("_", "-")


def parse_category(text: str) -> Category:
    """`financial` / `FINANCIAL` / `CATEGORY_FINANCIAL` -> the enum value; ValueError if unknown."""
    key = text.strip().upper().replace("-", "_").removeprefix("CATEGORY_")
    try:
        value = C.Category.Value("CATEGORY_" + key)
    except ValueError:
        known = ", ".join(category_name(c) for c in ALL_CATEGORIES)
        raise ValueError(f"unknown category {text!r} (known: {known})") from None
    if value == C.CATEGORY_UNSPECIFIED:
        raise ValueError("category must be specified")
    return value


def parse_purpose(text: str) -> Purpose:
    """`loan-application` / `LOAN_APPLICATION` -> the enum value; ValueError if unknown."""
    key = text.strip().upper().replace("-", "_").removeprefix("PURPOSE_")
    try:
        value = C.Purpose.Value("PURPOSE_" + key)
    except ValueError:
        known = ", ".join(purpose_name(p) for p in ALL_PURPOSES)
        raise ValueError(f"unknown purpose {text!r} (known: {known})") from None
    if value == C.PURPOSE_UNSPECIFIED:
        raise ValueError("purpose must be specified")
    return value


def category_names(values: Iterable[Category]) -> list[str]:
    return [category_name(v) for v in values]
