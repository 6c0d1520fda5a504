"""pboc-credit-reference: the central bank's credit reference centre (borrowers, loans,
repayments, defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypedDict

from credex.lab.synth.base import (
    DAYS,
    END,
    MAX_AGE,
    REFERENCE_YEAR,
    REGION_BY_NAME,
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
    jan1,
    pick,
    random_day,
    sql,
)


class BorrowersRow(TypedDict):
    borrower_id: IntegerKey
    file_opened_on: Text
    region_code: Text


class LoansRow(TypedDict):
    loan_id: IntegerKey
    borrower_id: Annotated[int, "INTEGER NOT NULL REFERENCES borrowers (borrower_id)"]
    lender: Text
    product: Text
    principal: Real
    currency: Text
    opened_on: Text
    status: Text


class RepaymentsRow(TypedDict):
    repayment_id: IntegerKey
    loan_id: Annotated[int, "INTEGER NOT NULL REFERENCES loans (loan_id)"]
    due_on: Text
    days_late: Integer
    amount: Real


class DefaultsRow(TypedDict):
    default_id: IntegerKey
    loan_id: Annotated[int, "INTEGER NOT NULL REFERENCES loans (loan_id)"]
    declared_on: Text
    outstanding: Real


BORROWERS = Table("borrowers", BorrowersRow)
LOANS = Table("loans", LoansRow, ("borrower_id",))
REPAYMENTS = Table("repayments", RepaymentsRow, ("loan_id",))
DEFAULTS = Table("defaults", DefaultsRow, ("loan_id",))

SPEC = NodeSpec(
    id="pboc-credit-reference",
    name="PBOC Credit Reference Center",
    jurisdiction="CN",
    description="central-bank credit reference: borrowers, loans, repayments, defaults",
    tables=(BORROWERS, LOANS, REPAYMENTS, DEFAULTS),
    adapters=(
        Adapter(
            "financial",
            sql("""
SELECT 'loan-' || l.loan_id AS record_id, 'loan_opened' AS kind, l.principal AS value,
       l.currency AS unit, l.opened_on AS occurred_at, l.lender AS lender, l.product AS product,
       l.status AS status,
       l.borrower_id AS local_id
FROM loans AS l
WHERE l.borrower_id = :local_id
"""),
        ),
        Adapter(
            "financial",
            sql("""
SELECT 'repayment-' || r.repayment_id AS record_id,
       CASE WHEN r.days_late > 0 THEN 'loan_repaid_late' ELSE 'loan_repaid_on_time' END AS kind,
       r.days_late AS value, 'days_late' AS unit, r.due_on AS occurred_at,
       r.amount AS amount, l.lender AS lender, l.product AS product,
       l.borrower_id AS local_id
FROM repayments AS r JOIN loans AS l ON l.loan_id = r.loan_id
WHERE l.borrower_id = :local_id
"""),
        ),
        Adapter(
            "financial",
            sql("""
SELECT 'default-' || d.default_id AS record_id, 'loan_default' AS kind, d.outstanding AS value,
       l.currency AS unit, d.declared_on AS occurred_at, l.lender AS lender, l.product AS product,
       l.borrower_id AS local_id
FROM defaults AS d JOIN loans AS l ON l.loan_id = d.loan_id
WHERE l.borrower_id = :local_id
"""),
        ),
    ),
)


_LENDERS = (
    "Industrial and Commercial Bank of China",
    "China Construction Bank",
    "Agricultural Bank of China",
    "Bank of China",
    "Bank of Jiangsu",
    "China Merchants Bank",
    "WeBank",
)
# product: (min principal, max principal, minimum age at opening)
_PRODUCTS = {
    "student_loan": (4_000, 12_000, 17),
    "credit_card": (5_000, 50_000, 18),
    "consumer_loan": (2_000, 50_000, 18),
    "car_loan": (50_000, 200_000, 22),
    "mortgage": (400_000, 3_000_000, 25),
}
_YOUNG_PRODUCTS = ("student_loan", "credit_card", "consumer_loan")
_OLDER_PRODUCTS = ("credit_card", "consumer_loan", "consumer_loan", "car_loan", "mortgage")


class PbocCreditReferenceWriter(NodeWriter):
    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_borrower = self.adder(BORROWERS)
        self.add_loan = self.adder(LOANS)
        self.add_repayment = self.adder(REPAYMENTS)
        self.add_default = self.adder(DEFAULTS)

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        age = REFERENCE_YEAR - s.birth_year
        adult = max(0, jan1(s.birth_year + 18))
        last_open = END - 60
        if age < 18 or adult > last_open:
            return None
        if rng.random() >= 0.25 + 0.6 * (age - 18) / (MAX_AGE - 18):
            return None
        borrower_id = 100_000_000 + self.local_number(28)
        opened = sorted(random_day(rng, adult, last_open) for _ in range(1 + int(rng.random() * 3)))
        self.add_borrower(
            borrower_id=borrower_id,
            file_opened_on=DAYS[opened[0]],
            region_code=REGION_BY_NAME[s.region].code,
        )
        p_late = 0.05 + 0.5 * (1 - r) ** 2
        p_default = 0.35 * (1 - r) ** 3
        defaulted = False
        for day in opened:
            loan_id = next(self.ids[LOANS])
            age_then = YEAR_OF[day] - s.birth_year
            products = _YOUNG_PRODUCTS if age_then < 25 else _OLDER_PRODUCTS
            product = pick(rng, products)
            low, high, min_age = _PRODUCTS[product]
            if age_then < min_age:
                product = "consumer_loan"
                low, high, _ = _PRODUCTS[product]
            principal = float(round(low + rng.random() * (high - low), -2))
            status = "active"
            for _ in range(1 + int(rng.random() * 2)):
                due = random_day(rng, min(day + 30, END), END)
                late = 0
                if rng.random() < p_late:
                    late = min(180, 1 + int(rng.expovariate(1 / 20)))
                self.add_repayment(
                    repayment_id=next(self.ids[REPAYMENTS]),
                    loan_id=loan_id,
                    due_on=DAYS[due],
                    days_late=late,
                    amount=round(principal * (0.02 + 0.1 * rng.random()), 2),
                )
            if not defaulted and day + 90 <= END and rng.random() < p_default:
                defaulted, status = True, "defaulted"
                declared = random_day(rng, day + 90, END)
                self.add_default(
                    default_id=next(self.ids[DEFAULTS]),
                    loan_id=loan_id,
                    declared_on=DAYS[declared],
                    outstanding=round(principal * (0.2 + 0.7 * rng.random()), 2),
                )
            elif rng.random() < 0.5:
                status = "closed"
            lender = pick(rng, _LENDERS)
            if product == "student_loan":
                lender = "China Development Bank"
            self.add_loan(
                loan_id=loan_id,
                borrower_id=borrower_id,
                lender=lender,
                product=product,
                principal=principal,
                currency="CNY",
                opened_on=DAYS[day],
                status=status,
            )
        return str(borrower_id)
