"""The commented example config `credex-node init` writes for an operator to edit."""

from __future__ import annotations

from pathlib import Path

from credex.node.config import adapter_text, config_text

HEADER = """\
# credex node configuration. Relative paths are relative to this file.
# Check it against your database with:
#   credex-node check-config {config}
# Then create keys and enroll with:
#   credex-node init {config} --enroll HOST:PORT --token TOKEN --ca-cert ca.crt

"""
ADAPTER_GUIDE = """
# One [[adapter]] per query. Each SELECT takes the subject only as the bound parameter
# :local_id (your own identifier for the person), compared with a column as a condition every
# row must meet (`WHERE t.customer_id = :local_id AND ...`: no OR, no UNION), and returns
#   local_id (that column: whose row it is), record_id (unique within the category), kind,
#   value (a number), unit, occurred_at (ISO 8601 or epoch seconds);
# any other column becomes an attribute of the record. A row whose local_id is not the one
# asked for is never disclosed, and the node stops answering until you fix the adapter.
# Find every table (every alias, subqueries included) through the subject: a column compared
# with :local_id, a column equal to one (`JOIN t AS b ON b.customer_id = l.customer_id`), or the
# key of a row so found (`JOIN repayments AS r ON r.loan_id = l.loan_id`); no view, no RIGHT,
# FULL or NATURAL join. Index those columns: check-config refuses a lookup that reads every
# row. Check real rows with `credex-node check-config {config} --sample-id SOME_ID`.
# Categories: identity, volunteering, financial, education, judicial, commercial, civic,
# employment. A category may have several adapters.
"""
EXAMPLE_SQL = """\
SELECT 'loan-' || l.loan_id AS record_id, 'loan' AS kind, l.amount AS value,
       'CNY' AS unit, l.opened_on AS occurred_at, l.status AS status,
       l.customer_id AS local_id
FROM loans AS l
WHERE l.customer_id = :local_id
"""


def write_example(path: Path, *, node_id: str, records_db: str) -> None:
    """Write the example config; refuses to replace an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = config_text(
        {"id": node_id, "name": node_id, "records_db": records_db},
        [],
        server={"metrics_listen": "127.0.0.1:9464"},
        limits={},
    )
    text = (
        HEADER.format(config=path.resolve())
        + body
        + ADAPTER_GUIDE.format(config=path.resolve())
        + "\n"
        + adapter_text("financial", EXAMPLE_SQL)
    )
    with path.open("x") as out:
        out.write(text)
