"""lender-<name>: a consumer lender, national, knowing a few per cent of adults."""

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

KIND = "lender"


class CustomersRow(TypedDict):
    customer_ref: TextKey
    onboarded_on: Text
    city: Text


class ContractsRow(TypedDict):
    contract_no: TextKey
    customer_ref: Annotated[str, "TEXT NOT NULL REFERENCES customers (customer_ref)"]
    product: Text
    principal: Real
    signed_on: Text
    status: Text


class InstalmentsRow(TypedDict):
    instalment_id: IntegerKey
    contract_no: Annotated[str, "TEXT NOT NULL REFERENCES contracts (contract_no)"]
    due_on: Text
    paid_days_late: Integer
    amount: Real


CUSTOMERS = Table("customers", CustomersRow)
CONTRACTS = Table("contracts", ContractsRow, ("customer_ref",))
INSTALMENTS = Table("instalments", InstalmentsRow, ("contract_no",))
TABLES = (CUSTOMERS, CONTRACTS, INSTALMENTS)
ADAPTERS = (
    Adapter(
        "financial",
        sql("""
SELECT 'contract-' || c.contract_no AS record_id,
       CASE WHEN c.status = 'written_off' THEN 'loan_default' ELSE 'loan_opened' END AS kind,
       c.principal AS value, 'CNY' AS unit, c.signed_on AS occurred_at, c.product AS product,
       c.status AS status,
       c.customer_ref AS local_id
FROM contracts AS c
WHERE c.customer_ref = :local_id
"""),
    ),
    Adapter(
        "financial",
        sql("""
SELECT 'instalment-' || i.instalment_id AS record_id,
       CASE WHEN i.paid_days_late > 0 THEN 'loan_repaid_late' ELSE 'loan_repaid_on_time' END
           AS kind,
       i.paid_days_late AS value, 'days_late' AS unit, i.due_on AS occurred_at,
       i.amount AS amount, c.product AS product,
       c.customer_ref AS local_id
FROM instalments AS i JOIN contracts AS c ON c.contract_no = i.contract_no
WHERE c.customer_ref = :local_id
"""),
    ),
)
_NAMED_LENDERS = (
    ("mashang", "Mashang Consumer Finance", "CN-CQ"),
    ("zhaolian", "Zhaolian Consumer Finance", "CN-GD"),
    ("suning-finance", "Suning Consumer Finance", "CN-JS"),
    ("hubei-finance", "Hubei Consumer Finance", "CN-HB"),
    ("xiaomi-finance", "Chongqing Xiaomi Consumer Finance", "CN-CQ"),
    ("haier-finance", "Haier Consumer Finance", "CN-SD"),
    ("ningyin-finance", "Ningbo Bank Consumer Finance", "CN-ZJ"),
    ("xingye-finance", "Xingye Consumer Finance", "CN-FJ"),
)


def spec(n: int) -> NodeSpec:
    """The `n`th lender, from 0: the named consumer finance companies, then village banks."""
    if n < len(_NAMED_LENDERS):
        slug, name, jurisdiction = _NAMED_LENDERS[n]
    else:
        number = n - len(_NAMED_LENDERS) + 1
        slug, name, jurisdiction = (
            f"village-bank-{number:03d}",
            f"Village and Township Bank No. {number}",
            "CN",
        )
    return NodeSpec(
        id=f"lender-{slug}",
        name=name,
        jurisdiction=jurisdiction,
        description=f"consumer lender {name}: contracts and instalments of its own customers",
        tables=TABLES,
        adapters=ADAPTERS,
        kind=KIND,
    )


class LenderWriter(NodeWriter):
    """A consumer lender: a few per cent of adults, each with contracts and instalments."""

    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_customer = self.adder(CUSTOMERS)
        self.add_contract = self.adder(CONTRACTS)
        self.add_instalment = self.adder(INSTALMENTS)

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        adult = max(0, jan1(s.birth_year + 18))
        if adult > END - 60 or rng.random() >= 0.04:
            return None
        customer_ref = f"C{self.local_number(32):010d}"
        onboarded = random_day(rng, adult, END - 60)
        self.add_customer(customer_ref=customer_ref, onboarded_on=DAYS[onboarded], city=s.city)
        p_late = 0.05 + 0.5 * (1 - r) ** 2
        for _ in range(1 + int(rng.random() * 2)):
            contract_no = f"{self.spec.id[7:10].upper()}-{next(self.ids[CONTRACTS]):09d}"
            signed = random_day(rng, onboarded, END - 60)
            principal = float(round(2_000 + rng.random() * 48_000, -2))
            written_off = rng.random() < 0.2 * (1 - r) ** 3
            self.add_contract(
                contract_no=contract_no,
                customer_ref=customer_ref,
                product="consumer_loan",
                principal=principal,
                signed_on=DAYS[signed],
                status="written_off" if written_off else pick(rng, ("active", "settled")),
            )
            for _ in range(1 + int(rng.random() * 3)):
                due = random_day(rng, signed + 30, END)
                late = min(180, 1 + int(rng.expovariate(1 / 20))) if rng.random() < p_late else 0
                self.add_instalment(
                    instalment_id=next(self.ids[INSTALMENTS]),
                    contract_no=contract_no,
                    due_on=DAYS[due],
                    paid_days_late=late,
                    amount=round(principal * (0.05 + 0.1 * rng.random()), 2),
                )
        return customer_ref
