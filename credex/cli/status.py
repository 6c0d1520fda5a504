"""`credex-node status` / `credex-directory status`: a running server's metrics at a glance,
read from its Prometheus endpoint (so it shows exactly what monitoring sees)."""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from credex.cli.render import markup_safe, terminal_console
from credex.cli.shared import print_json
from credex.protocol.config import ConfigError


@dataclass
class ServerStatus:
    address: str
    role: str = ""
    member: str = ""
    serving: bool = False
    certificate_expires_at: float = 0.0
    audit_entries: int = 0
    requests: dict[str, dict[str, int]] = field(default_factory=dict)  # method → code → n
    latency_ms: dict[str, float] = field(default_factory=dict)  # method → mean
    refusals: dict[str, int] = field(default_factory=dict)  # reason → n
    node_answers: dict[str, dict[str, int]] = field(default_factory=dict)  # node → status → n
    # A node's adapters returned rows of other subjects (withheld; the node stops serving).
    rows_withheld: int = 0


def metrics_url(address: str) -> str:
    return address if address.startswith(("http://", "https://")) else f"http://{address}/metrics"


def scrape_address(configured: str, given: str | None, where: str) -> str:
    """The metrics address to read: `given` (--metrics), else the configured one."""
    if given:
        return given
    if not configured:
        raise ConfigError(f"no metrics endpoint: set metrics_listen in {where}, or pass --metrics")
    host, _, port = configured.rpartition(":")
    if port == "0":
        raise ConfigError(
            f"metrics_listen in {where} picks a free port at each start; pass --metrics with "
            "the address the server logged (or wrote to its ready file)"
        )
    if host in ("0.0.0.0", "[::]", ""):  # noqa: S104 - a wildcard listener is read locally
        host = "127.0.0.1"
    return f"{host}:{port}"


def fetch_status(address: str, timeout_s: float = 5.0) -> ServerStatus:
    """Scrape `address` (host:port or a URL) once."""
    url = metrics_url(address)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            text = response.read().decode()
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"cannot read metrics at {url}: {reason!s}") from None
    try:
        return parse_status(address, text)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{url} does not serve credex metrics: {exc}") from None


def parse_status(address: str, text: str) -> ServerStatus:
    status = ServerStatus(address=address)
    requests: dict[str, dict[str, int]] = defaultdict(dict)
    answers: dict[str, dict[str, int]] = defaultdict(dict)
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "credex_server_info":
                status.role, status.member = labels["role"], labels["member"]
            elif name == "credex_serving":
                status.serving = value == 1
            elif name == "credex_certificate_expiry_timestamp_seconds":
                status.certificate_expires_at = value
            elif name == "credex_audit_entries":
                status.audit_entries = int(value)
            elif name == "credex_requests_total":
                requests[labels["method"]][labels["code"]] = int(value)
            elif name == "credex_refusals_total":
                reason = labels["reason"]
                status.refusals[reason] = status.refusals.get(reason, 0) + int(value)
            elif name == "credex_adapter_rows_withheld_total":
                status.rows_withheld += int(value)
            elif name == "credex_node_answers_total":
                answers[labels["node"]][labels["status"]] = int(value)
            elif name == "credex_request_duration_seconds_sum":
                sums[labels["method"]] = value
            elif name == "credex_request_duration_seconds_count":
                counts[labels["method"]] = value
    status.requests = dict(requests)
    status.node_answers = dict(answers)
    status.latency_ms = {m: 1000 * sums[m] / n for m, n in counts.items() if n and m in sums}
    return status


def render_status(console: Console, status: ServerStatus, now: float | None = None) -> None:
    now = time.time() if now is None else now
    hours = (status.certificate_expires_at - now) / 3600
    health = "[green]SERVING[/]" if status.serving else "[red]NOT_SERVING[/]"
    console.print(
        f"{markup_safe(status.role)} {markup_safe(status.member)} at "
        f"{markup_safe(status.address)}: {health}"
    )
    if status.rows_withheld:
        console.print(
            f"[red]{status.rows_withheld} rows of other subjects withheld[/]: an adapter selects "
            "more than the subject's rows; the node refuses every query until it is fixed "
            "(`credex-node check-config CONFIG --sample-id ID`) and restarted"
        )
    expiry = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(status.certificate_expires_at))
    # certificates last a day and are renewed in their last third: under 4 hours left means
    # renewal keeps failing
    colour = "red" if hours < 4 else "default"
    left = f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.0f} days"
    console.print(f"certificate expires {expiry} ([{colour}]{left}[/])")
    console.print(f"audit log: {status.audit_entries} entries")
    table = Table(title="Requests", title_justify="left")
    for column in ("method", "OK", "refused or failed", "mean ms"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, codes in sorted(status.requests.items()):
        ok = codes.get("OK", 0)
        failed = ", ".join(f"{c} {n}" for c, n in sorted(codes.items()) if c != "OK")
        table.add_row(method, str(ok), failed or "0", f"{status.latency_ms.get(method, 0):.1f}")
    console.print(table)
    if status.refusals:
        refusals = Table(title="Refusals by reason", title_justify="left")
        refusals.add_column("reason")
        refusals.add_column("count", justify="right")
        for reason, count in sorted(status.refusals.items(), key=lambda kv: -kv[1]):
            refusals.add_row(reason, str(count))
        console.print(refusals)
    if status.node_answers:
        nodes = Table(title="Node answers", title_justify="left")
        outcomes = sorted({s for answers in status.node_answers.values() for s in answers})
        nodes.add_column("node")
        for outcome in outcomes:
            nodes.add_column(outcome, justify="right")
        for node, answers in sorted(status.node_answers.items()):
            nodes.add_row(node, *(str(answers.get(o, 0)) for o in outcomes))
        console.print(nodes)


def show_status(configured: str, given: str | None, where: str, *, json_out: bool) -> None:
    """The body of both status commands: scrape once, then JSON or a rendering."""
    found = fetch_status(scrape_address(configured, given, where))
    if json_out:
        print_json(found)
    else:
        render_status(terminal_console(), found)
