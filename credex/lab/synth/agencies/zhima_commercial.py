"""zhima-commercial: a licensed commercial credit company (accounts, bill payment events)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypedDict

from credex.lab.synth.base import (
    DAYS,
    END,
    MAX_RECORDS_PER_CATEGORY,
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
    random_day,
    sql,
)


class AccountsRow(TypedDict):
    uid: IntegerKey
    opened_on: Text
    city: Text
    verified: Integer


class PaymentEventsRow(TypedDict):
    event_id: IntegerKey
    uid: Annotated[int, "INTEGER NOT NULL REFERENCES accounts (uid)"]
    merchant_category: Text
    merchant: Text
    due_on: Text
    days_late: Integer
    amount: Real


ACCOUNTS = Table("accounts", AccountsRow)
PAYMENT_EVENTS = Table("payment_events", PaymentEventsRow, ("uid",))

SPEC = NodeSpec(
    id="zhima-commercial",
    name="Zhima Credit",
    jurisdiction="CN",
    description="a licensed commercial credit company: accounts and bill payment events",
    tables=(ACCOUNTS, PAYMENT_EVENTS),
    adapters=(
        Adapter(
            "commercial",
            sql("""
SELECT 'payment-' || p.event_id AS record_id, 'payment_on_time' AS kind, p.amount AS value,
       'CNY' AS unit, p.due_on AS occurred_at, p.merchant AS merchant,
       p.merchant_category AS merchant_category,
       p.uid AS local_id
FROM payment_events AS p
WHERE p.uid = :local_id AND p.days_late = 0
"""),
        ),
        Adapter(
            "commercial",
            sql("""
SELECT 'payment-' || p.event_id AS record_id, 'payment_late' AS kind, p.days_late AS value,
       'days_late' AS unit, p.due_on AS occurred_at, p.merchant AS merchant,
       p.merchant_category AS merchant_category, p.amount AS amount,
       p.uid AS local_id
FROM payment_events AS p
WHERE p.uid = :local_id AND p.days_late > 0
"""),
        ),
    ),
)


_MERCHANTS = (
    ("utilities", "State Grid", 50, 400),
    ("telecom", "China Mobile", 30, 300),
    ("rent", "Ziroom", 1_500, 6_000),
    ("bike_sharing", "Hellobike", 5, 60),
    ("consumer_credit", "Huabei", 200, 5_000),
    ("ecommerce", "Taobao", 50, 2_000),
)


class ZhimaCommercialWriter(NodeWriter):
    def __init__(self, spec: NodeSpec, path: Path, seed: int) -> None:
        super().__init__(spec, path, seed)
        self.add_account = self.adder(ACCOUNTS)
        self.add_payment_event = self.adder(PAYMENT_EVENTS)

    def person(self, s: Subject) -> str | None:
        rng, r = self.rng, s.reliability
        adult = max(0, jan1(s.birth_year + 18))
        if adult > END - 30 or rng.random() >= 0.67:
            return None
        uid = 2_088_000_000_000_000 + self.local_number(36)
        opened = random_day(rng, adult, END - 30)
        self.add_account(
            uid=uid, opened_on=DAYS[opened], city=s.city, verified=int(rng.random() < 0.9)
        )
        p_on_time = 0.98 - 0.4 * (1 - r) ** 2
        count = 1 + int(rng.random() * MAX_RECORDS_PER_CATEGORY)
        for day in sorted(random_day(rng, opened, END) for _ in range(count)):
            category, merchant, low, high = _MERCHANTS[int(rng.random() * len(_MERCHANTS))]
            late = 0 if rng.random() < p_on_time else min(90, 1 + int(rng.expovariate(1 / 10)))
            self.add_payment_event(
                event_id=next(self.ids[PAYMENT_EVENTS]),
                uid=uid,
                merchant_category=category,
                merchant=merchant,
                due_on=DAYS[day],
                days_late=late,
                amount=round(low + rng.random() * (high - low), 2),
            )
        return str(uid)
