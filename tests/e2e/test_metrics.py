"""Prometheus metrics on every server, and the status commands that read them: requests by
method and code, latency, refusals by reason, node answers, audit size, certificate expiry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from credex.cli.status import fetch_status, parse_status, scrape_address
from credex.directory import admin as directory_admin
from credex.protocol.config import ConfigError
from credex.protocol.errors import NotFound, PermissionDenied
from credex.runtime.metrics import Metrics
from credex.testing.federation import Federation, start_federation
from credex.testing.loop import LoopThread
from credex.v1.common_pb2 import Category as Cat
from credex.v1.common_pb2 import Purpose
from tests.commands import BIN, cli

LOAN = Purpose.PURPOSE_LOAN_APPLICATION


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, loop: LoopThread) -> Iterator[Federation]:
    federation = start_federation(
        Path(tmp_path_factory.mktemp("metrics")),
        loop,
        deadline_s=2.0,
        server='metrics_listen = "127.0.0.1:0"',
    )
    yield federation
    federation.stop()


def test_observations_are_counted_by_method_code_and_reason() -> None:
    metrics = Metrics("node", "n1")
    metrics.observe("QueryRecords", grpc.StatusCode.OK, "", 0.004)
    metrics.observe("QueryRecords", grpc.StatusCode.PERMISSION_DENIED, "CONSENT_REVOKED", 0.002)
    value = metrics.registry.get_sample_value
    assert value("credex_requests_total", {"method": "QueryRecords", "code": "OK"}) == 1
    labels = {"method": "QueryRecords", "reason": "CONSENT_REVOKED"}
    assert value("credex_refusals_total", labels) == 1
    assert value("credex_request_duration_seconds_count", {"method": "QueryRecords"}) == 2
    assert value("credex_server_info", {"role": "node", "member": "n1"}) == 1


def test_the_endpoint_serves_and_stops() -> None:
    metrics = Metrics("directory", "directory")
    address = metrics.serve("127.0.0.1:0")
    metrics.observe("GetProfile", grpc.StatusCode.OK, "", 0.01)
    status = fetch_status(address)
    assert (status.role, status.member) == ("directory", "directory")
    assert status.requests == {"GetProfile": {"OK": 1}}
    metrics.close()
    with pytest.raises(ConfigError, match="cannot read metrics"):
        fetch_status(address, timeout_s=2)


def test_scrape_address_comes_from_config_or_option() -> None:
    assert scrape_address("0.0.0.0:9464", None, "x") == "127.0.0.1:9464"
    assert scrape_address("", "10.0.0.5:9000", "x") == "10.0.0.5:9000"
    with pytest.raises(ConfigError, match="no metrics endpoint"):
        scrape_address("", None, "node.toml [server]")
    with pytest.raises(ConfigError, match="picks a free port"):
        scrape_address("127.0.0.1:0", None, "node.toml [server]")


def profile_and_refusal(fed: Federation) -> None:
    consent_id = fed.loop.run(
        fed.subject("S1").grant(
            requester_id="bank",
            purpose=LOAN,
            categories=[Cat.CATEGORY_FINANCIAL, Cat.CATEGORY_JUDICIAL],
            max_uses=5,
        )
    )
    bank = fed.requester("bank")
    fed.loop.run(bank.get_profile(subject_id="S1", consent_id=consent_id, purpose=LOAN))
    with pytest.raises(PermissionDenied):
        fed.loop.run(
            bank.get_profile(
                subject_id="S1",
                consent_id=consent_id,
                purpose=LOAN,
                categories=[Cat.CATEGORY_EDUCATION],
            )
        )
    with pytest.raises(NotFound):
        fed.loop.run(bank.get_profile(subject_id="nobody", consent_id="x", purpose=LOAN))


def refresh(fed: Federation) -> None:
    """Gauges are set on the health tick; run one now instead of waiting for it."""
    fed.loop.run(fed.directory.health.check())
    for node in fed.nodes.values():
        assert node.health is not None
        fed.loop.run(node.health.check())


def test_directory_metrics_after_profiles_and_refusals(fed: Federation) -> None:
    profile_and_refusal(fed)
    refresh(fed)
    status = fetch_status(fed.directory.metrics_address)
    assert status.serving and status.role == "directory"
    assert status.requests["GetProfile"]["OK"] >= 1
    assert status.requests["GetProfile"]["PERMISSION_DENIED"] >= 1
    assert status.requests["GetProfile"]["NOT_FOUND"] >= 1
    assert status.refusals["CATEGORY_NOT_CONSENTED"] >= 1
    assert status.refusals["UNKNOWN_SUBJECT"] >= 1
    assert status.requests["GrantConsent"]["OK"] >= 1
    assert status.node_answers["pboc"]["OK"] >= 1
    assert status.node_answers["courts"]["OK"] >= 1
    assert status.latency_ms["GetProfile"] > 0
    assert status.audit_entries == fed.directory.services.audit.size > 0
    cert = x509.load_pem_x509_certificate((fed.root / "directory" / "tls.crt").read_bytes())
    assert status.certificate_expires_at == cert.not_valid_after_utc.timestamp()


def test_node_metrics_count_its_queries(fed: Federation) -> None:
    node = fed.nodes["pboc"]
    before = fetch_status(node.metrics_address).requests.get("QueryRecords", {}).get("OK", 0)
    profile_and_refusal(fed)
    refresh(fed)
    status = fetch_status(node.metrics_address)
    assert (status.role, status.member, status.serving) == ("node", "pboc", True)
    assert status.requests["QueryRecords"]["OK"] == before + 1
    assert status.audit_entries > 0
    assert time.time() + 3600 < status.certificate_expires_at <= time.time() + 86400 + 60


def test_status_commands_show_the_same(fed: Federation) -> None:
    config = fed.node_configs["pboc"]
    node = fed.nodes["pboc"]
    shown = cli("credex-node", "status", str(config), "--metrics", node.metrics_address)
    assert "node pboc at" in shown.stdout and "SERVING" in shown.stdout
    assert "QueryRecords" in shown.stdout and "certificate expires" in shown.stdout
    data = json.loads(
        cli(
            "credex-node", "status", str(config), "--metrics", node.metrics_address, "--json"
        ).stdout
    )
    assert data["member"] == "pboc" and data["requests"]["QueryRecords"]["OK"] >= 1
    home = fed.root / "directory"
    shown = cli("credex-directory", "status", "--home", str(home), "--metrics",
                fed.directory.metrics_address)  # fmt: skip
    assert "Node answers" in shown.stdout and "pboc" in shown.stdout
    # The config asks for a free port at each start: the command says how to find it.
    refused = cli("credex-node", "status", str(config), ok=False)
    assert refused.returncode != 0 and "pass --metrics" in refused.stderr


def test_parse_ignores_what_it_does_not_know() -> None:
    text = "# HELP other_total x\n# TYPE other_total counter\nother_total 3\n"
    status = parse_status("h:1", text)
    assert status.requests == {} and not status.serving


def test_a_busy_metrics_port_is_a_clear_error_before_anything_serves(tmp_path: Path) -> None:
    home = tmp_path / "directory"
    directory_admin.init_home(home)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "CREDEX_DIRECTORY_SERVER_METRICS_LISTEN": f"127.0.0.1:{port}"}
        result = subprocess.run(
            [str(BIN / "credex-directory"), "serve", "--home", str(home),
             "--listen", "127.0.0.1:0", "--public-listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"metrics_listen 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_status_of_something_that_is_not_a_metrics_endpoint() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"\x00\x01garbage\r\n\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(ConfigError, match="cannot read metrics"):
            fetch_status(address, timeout_s=5)
        thread.join(5)
