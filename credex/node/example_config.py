"""The commented example config `credex-node init` writes for an operator to edit."""

from __future__ import annotations

import json
from pathlib import Path

from credex.protocol.config import example_settings
from credex.runtime.settings import ServerSettings

TEMPLATE = (
    """\
# credex node configuration. Relative paths are relative to this file.
# Check it against your database with:
#   credex-node check-config {config}
# Then create keys and enroll with:
#   credex-node init {config} --enroll HOST:PORT --token TOKEN --ca-cert ca.crt

[node]
# Your member id in the federation, as the directory operator registered it.
id = {node_id}
name = {node_id}
jurisdiction = "CN"
# Your own database. credex opens it read-only and never writes to it.
records_db = {records_db}
# credex's own state (nonces, audit log, registry snapshot): a separate file it may write.
state_db = "credex-node.db"
# Key files, created by `credex-node init` (the TLS ones when you enroll).
signing_key = "node.key"
tls_key = "tls.key"
tls_cert = "tls.crt"
ca_cert = "ca.crt"
# The directory: its id, its members' address (host:port) and its public key.
directory_id = "directory"
directory_address = ""
directory_key = "directory.pub"
# The directory's public address (host:port): the node renews its day-long certificate there,
# which works even after it has expired. "": renew on directory_address while still valid.
directory_public_address = ""
# How often to pull the registry and revocations (seconds), and how long to keep
# answering when the directory cannot be reached.
sync_interval_s = 5.0
offline_grace_s = 120.0
# How often to sign a checkpoint of the audit log (also always on stop).
checkpoint_interval_s = 10.0

[server]
"""
    + example_settings(
        ServerSettings, {"listen": "127.0.0.1:7101", "metrics_listen": "127.0.0.1:9464"}
    )
    .replace("{", "{{")
    .replace("}", "}}")  # the template is formatted below
    + '''\

[limits]
# Queries a second the directory may send, and the burst above that rate.
directory_rate_per_s = 1000.0
directory_burst = 2000.0

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

[[adapter]]
category = "financial"
sql = """
SELECT 'loan-' || l.loan_id AS record_id, 'loan' AS kind, l.amount AS value,
       'CNY' AS unit, l.opened_on AS occurred_at, l.status AS status,
       l.customer_id AS local_id
FROM loans AS l
WHERE l.customer_id = :local_id
"""
'''
)


def write_example(path: Path, *, node_id: str, records_db: str) -> None:
    """Write the example config; refuses to replace an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = TEMPLATE.format(
        config=path.resolve(), node_id=json.dumps(node_id), records_db=json.dumps(records_db)
    )  # a JSON string is a valid TOML basic string, whatever the path holds
    with path.open("x") as out:
        out.write(text)
