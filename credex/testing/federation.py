"""A real federation on loopback for tests: the directory and its nodes are real grpc.aio
servers with real keys and real SQLite files, run on one background event loop, reading one
clock the tests can move.

Nodes: `volunteers`, `pboc`, `courts` and `education` behave; `slow` answers after
`slow_delay_s`, `forger` signs with a key the directory never registered, `down` is enrolled
but never started. Subjects S1, S2 and S9 are known where `LOCATOR` says. Requesters `bank`
and `school` are enrolled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from credex.directory import admin as directory_admin
from credex.directory.config import DirectorySettings, load_settings
from credex.directory.server import RunningDirectory, start_directory, tls_identity
from credex.node.config import config_text, load_node_config
from credex.node.server import RunningNode, build_service, start_node
from credex.node.service import NodeService
from credex.protocol.keys import SigningKey
from credex.protocol.tls import TlsIdentity
from credex.runtime.ports import UnreadRequest
from credex.sdk.client import RequesterClient, SubjectClient
from credex.sdk.member_home import MemberHome
from credex.testing.clock import MovableClock
from credex.testing.enroll import enroll_node
from credex.testing.enroll import enroll_requester as enroll_member_requester
from credex.testing.loop import LoopThread


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Counted refusals are written when their window closes, on a timer; here windows never close
# by themselves, so that no test sees the counts of an earlier test's refusals appear in the
# audit log under its feet (a test that wants them flushes the recorder).
UNLIMITED_CALLERS = (
    "refusals_per_s = 1000000.0\nrefusal_burst = 1000000\nmax_connections_per_peer = 100000\n"
    "refusal_window_s = 1000000000.0\n"
)

# Each test node: its operator's own schema, and an adapter config mapping it to records.
NODE_FIXTURES: dict[str, dict[str, Any]] = {
    "volunteers": {
        "category": "volunteering",
        "schema": "CREATE TABLE service (entry INTEGER PRIMARY KEY, vol_no TEXT, hours REAL,"
        " org TEXT, day TEXT); CREATE INDEX service_vol ON service (vol_no)",
        "insert": "INSERT INTO service (vol_no, hours, org, day) VALUES (?, ?, ?, ?)",
        "rows": [
            ("V-1", 12.5, "Red Cross", "2024-03-01"),
            ("V-1", 4, "Library", "2025-06-10"),
            ("V-9", 2, "Library", "2025-01-10"),
        ],
        "sql": "SELECT 'svc-' || entry AS record_id, 'volunteer_hours' AS kind, hours AS value,"
        " 'hours' AS unit, day AS occurred_at, org AS organisation, vol_no AS local_id FROM service"
        " WHERE vol_no = :local_id",
    },
    "pboc": {
        "category": "financial",
        "schema": "CREATE TABLE loans (loan_no INTEGER PRIMARY KEY, borrower INTEGER,"
        " amount REAL, opened TEXT, state TEXT); CREATE INDEX loans_borrower ON loans (borrower)",
        "insert": "INSERT INTO loans (borrower, amount, opened, state) VALUES (?, ?, ?, ?)",
        "rows": [
            (1001, 20000, "2023-05-01", "repaid"),
            (1001, 5000, "2025-02-01", "open"),
            (1009, 800, "2022-02-01", "default"),
        ],
        "sql": "SELECT 'loan-' || loan_no AS record_id, CASE state WHEN 'default' THEN"
        " 'loan_default' ELSE 'loan_opened' END AS kind, amount AS value, 'CNY' AS unit,"
        " opened AS occurred_at, state, borrower AS local_id FROM loans WHERE borrower = :local_id",
    },
    "courts": {
        "category": "judicial",
        "schema": "CREATE TABLE judgments (case_no TEXT PRIMARY KEY, party TEXT, decided TEXT,"
        " amount REAL); CREATE INDEX judgments_party ON judgments (party)",
        "insert": "INSERT INTO judgments VALUES (?, ?, ?, ?)",
        "rows": [("(2021)Su01-77", "P-1", "2021-09-09", 3000.0)],
        "sql": "SELECT case_no AS record_id, 'judgment' AS kind, amount AS value, 'CNY' AS unit,"
        " decided AS occurred_at, party AS local_id FROM judgments WHERE party = :local_id",
    },
    "education": {
        "category": "education",
        "schema": "CREATE TABLE degrees (xj TEXT, degree TEXT, awarded TEXT);"
        " CREATE INDEX degrees_xj ON degrees (xj)",
        "insert": "INSERT INTO degrees VALUES (?, ?, ?)",
        "rows": [("XJ-1", "bachelor", "2022-07-01")],
        "sql": "SELECT xj || '-' || degree AS record_id, 'degree' AS kind, 1 AS value,"
        " '' AS unit, awarded AS occurred_at, degree, xj AS local_id FROM degrees"
        " WHERE xj = :local_id",
    },
}
# Subject S1 is known to every well-behaved node; S9 also to the misbehaving ones.
LOCATOR = {
    "S1": {"volunteers": "V-1", "pboc": "1001", "courts": "P-1", "education": "XJ-1"},
    "S2": {"volunteers": "V-2"},
    "S9": {"volunteers": "V-9", "pboc": "1009", "slow": "1009", "forger": "1009", "down": "1009"},
}


def write_node(
    root: Path,
    node_id: str,
    fixture: dict[str, Any],
    directory: str,
    sync_interval_s: float = 0.2,
    offline_grace_s: float = 60.0,
    server: str = "",
) -> Path:
    """The operator's database plus the node config (TOML) mapping it to records; `server`
    is the body of its [server] table."""
    home = root / node_id
    home.mkdir(parents=True)
    conn = sqlite3.connect(home / "records.db")
    conn.executescript(fixture["schema"])
    conn.executemany(fixture["insert"], fixture["rows"])
    conn.commit()
    conn.close()
    config = home / "node.toml"
    node = {
        "id": node_id,
        "name": f"{node_id} test node",
        "records_db": "records.db",
        "sync_interval_s": sync_interval_s,
        "offline_grace_s": offline_grace_s,
        "directory_address": directory,
    }
    adapters = [(fixture["category"], fixture["sql"])]
    # `server` is raw TOML: tests give a few keys of the [server] table as they would write them
    config.write_text(config_text(node, adapters) + f"\n[server]\n{server}\n")
    return config


class SlowNode:
    """A real node service that answers queries only after `delay` seconds."""

    def __init__(self, inner: Any, delay: float) -> None:
        self._inner, self._delay = inner, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def QueryRecords(self, request: Any, context: Any) -> Any:
        await asyncio.sleep(self._delay)
        return await self._inner.QueryRecords(request, context)


class RecordingNode:
    """A real node service that keeps every query it receives, to check what nodes learn; it
    counts the disputes handed to it and holds them while `disputes_open` is clear (at most
    `HOLD_LIMIT_S`), so that a test can have two filings in flight at once."""

    HOLD_LIMIT_S = 30.0

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.received: list[Any] = []
        self.pushed: list[Any] = []
        self.notices: list[Any] = []
        self.metadata: list[tuple[tuple[str, str], ...]] = []  # of every call, in order
        self.disputes_received = 0
        self.disputes_open = asyncio.Event()  # cleared: disputes wait (on the server's loop)
        self.disputes_open.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def ReceiveDispute(self, request: Any, context: Any) -> Any:
        self.disputes_received += 1
        self.notices.append(_parsed(request))
        self.metadata.append(tuple(context.invocation_metadata()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.disputes_open.wait(), self.HOLD_LIMIT_S)
        return await self._inner.ReceiveDispute(request, context)

    async def NotifyRevocations(self, request: Any, context: Any) -> Any:
        self.pushed.append(_parsed(request))
        self.metadata.append(tuple(context.invocation_metadata()))
        return await self._inner.NotifyRevocations(request, context)

    async def QueryRecords(self, request: Any, context: Any) -> Any:
        self.received.append(_parsed(request))
        self.metadata.append(tuple(context.invocation_metadata()))
        return await self._inner.QueryRecords(request, context)


def _parsed(request: Any) -> Any:
    """What a servicer method was sent, parsed (the service gets it unread: see
    credex.runtime.ports.UnreadRequest)."""
    return request.read() if isinstance(request, UnreadRequest) else request


@dataclass
class Federation:
    root: Path
    loop: LoopThread
    clock: MovableClock
    directory: RunningDirectory
    nodes: dict[str, RunningNode]
    node_configs: dict[str, Path]
    directory_key: SigningKey
    directory_tls: TlsIdentity
    ca_pem: bytes
    requester_homes: dict[str, MemberHome]
    subject_keys: dict[str, SigningKey]
    deadline_s: float
    slow_delay_s: float
    recorder: RecordingNode | None = None
    recorders: dict[str, RecordingNode] = field(default_factory=dict)
    clients: list[Any] = field(default_factory=list)
    node_services: dict[str, NodeService] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.directory.address

    @contextlib.contextmanager
    def clock_moved(self, seconds: float) -> Iterator[None]:
        """Every server's clock `seconds` on (or back) for the block, then back where it was;
        the nodes then sync again, so that none is left stale (or fresh) by a sync made in
        the moved time for the tests that come after."""
        self.clock.offset += seconds
        try:
            yield
        finally:
            self.clock.offset -= seconds
            self.sync_nodes()

    def sync_nodes(self) -> None:
        """Every node pulls the registry and its feed now, rather than at its next tick."""
        for service in self.node_services.values():
            self.loop.run(service.sync.sync_once())

    @property
    def public_address(self) -> str:
        return self.directory.public_address

    @property
    def requester_keys(self) -> dict[str, SigningKey]:
        return {rid: home.signing_key() for rid, home in self.requester_homes.items()}

    def subject(self, subject_id: str = "S1", key: SigningKey | None = None) -> SubjectClient:
        key = key or self.subject_keys[subject_id]
        client: SubjectClient = self.loop.run(
            _make(
                SubjectClient,
                self.public_address,
                subject_id,
                key,
                clock=self.clock,
                ca_pem=self.ca_pem,
            )
        )
        self.clients.append(client)
        return client

    def requester(
        self,
        requester_id: str = "bank",
        key: SigningKey | None = None,
        tls: TlsIdentity | None = None,
    ) -> RequesterClient:
        home = self.requester_homes[requester_id]
        client: RequesterClient = self.loop.run(
            _make(
                RequesterClient,
                self.address,
                requester_id,
                key or home.signing_key(),
                clock=self.clock,
                tls=tls or home.tls(),
                directory_key=home.directory_key(),
            )
        )
        self.clients.append(client)
        return client

    def stop(self) -> None:
        async def _stop() -> None:
            for client in self.clients:
                await client.close()
            await self.directory.stop(0)
            for node in self.nodes.values():
                await node.stop(0)

        self.loop.run(_stop())


async def _make(cls: Any, address: str, member: str, key: SigningKey, **kwargs: Any) -> Any:
    return cls(address, member, key, **kwargs)


async def enroll_requester(
    settings: DirectorySettings, root: Path, requester_id: str, directory: RunningDirectory
) -> MemberHome:
    """Enroll a test requester with its home under `root`, pointed at `directory`."""
    return await enroll_member_requester(
        settings,
        root / requester_id,
        requester_id,
        public_address=directory.public_address,
        directory_address=directory.address,
    )


def start_federation(
    root: Path,
    loop: LoopThread,
    *,
    deadline_s: float = 0.8,
    slow_delay_s: float = 5.0,
    requester_rate_per_s: float = 100_000.0,
    requester_burst: int = 100_000,
    purpose_limits: dict[str, int] | None = None,
    server: str = "",
    locator: dict[str, dict[str, str]] | None = None,
    recorded: tuple[str, ...] = ("volunteers",),
) -> Federation:
    """A directory and its test nodes in this process; `server` is the body of every
    server's [server] table (reflection, metrics); `locator` replaces LOCATOR (who is known
    where); the nodes in `recorded` keep everything they are sent (Federation.recorders)."""
    locator = LOCATOR if locator is None else locator
    # These tests send thousands of refused requests on purpose, from one address: the
    # per-caller refusal budget and connection cap are proven by tests/attacks instead.
    server = f"{UNLIMITED_CALLERS}{server}"
    clock = MovableClock()
    directory_admin.init_home(root / "directory")
    limits = {"loan-application": 10_000, "school-enrollment": 10_000, "promotion": 2}
    limits.update(purpose_limits or {})
    (root / "directory" / "directory.toml").write_text(
        f"[directory]\nnode_deadline_s = {deadline_s}\n"
        f"requester_rate_per_s = {requester_rate_per_s}\nrequester_burst = {requester_burst}\n"
        # Subjects S1, S2 and S9 serve every test of a run: the per-subject limits are proven
        # by tests/attacks/test_subjects_flood.py instead.
        "[subjects]\nrate_per_s = 100000.0\nburst = 100000\nmax_consents = 100000\n"
        "[purpose_limits]\n"
        + "".join(f"{k} = {v}\n" for k, v in limits.items())
        + f"[server]\n{server}\n"
    )
    settings = load_settings(root / "directory")
    directory_key = SigningKey.load(settings.key_path)

    subject_keys = {sid: SigningKey.generate() for sid in locator}
    subjects_csv = root / "subjects.csv"
    subjects_csv.write_text(
        "subject_id,region,public_key\n"
        + "".join(f"{sid},Jiangsu,{k.public.raw.hex()}\n" for sid, k in subject_keys.items())
    )
    locator_csv = root / "locator.csv"
    locator_csv.write_text(
        "subject_id,node_id,local_id\n"
        + "".join(f"{s},{n},{local}\n" for s, m in locator.items() for n, local in m.items())
    )
    directory_admin.import_subjects(settings, subjects_csv, locator_csv)
    directory = loop.run(start_directory(settings, clock=clock))

    configs: dict[str, Path] = {}
    nodes: dict[str, RunningNode] = {}
    recorder: RecordingNode | None = None
    recorders: dict[str, RecordingNode] = {}
    node_services: dict[str, NodeService] = {}
    fixtures = {
        **NODE_FIXTURES,
        "slow": NODE_FIXTURES["pboc"],
        "forger": NODE_FIXTURES["pboc"],
        "down": NODE_FIXTURES["pboc"],
    }
    for node_id, fixture in fixtures.items():
        # "volunteers" never pulls during the tests: only pushes reach it.
        pull_never = node_id == "volunteers"
        configs[node_id] = write_node(
            root / "nodes",
            node_id,
            fixture,
            directory.address,
            sync_interval_s=86_400.0 if pull_never else 0.2,
            offline_grace_s=86_400.0 if pull_never else 60.0,
            server=server,
        )
        enroll_node(
            settings,
            configs[node_id],
            directory.public_address,
            categories=[fixture["category"]],
        )
        if node_id == "down":  # enrolled, never started: its endpoint refuses connections
            directory_admin.set_endpoint(settings, node_id, f"127.0.0.1:{free_port()}")
            continue
        config = load_node_config(configs[node_id])
        # "forger" signs its answers with a key the directory never registered
        forged = {"key": SigningKey.generate()} if node_id == "forger" else {}
        service = build_service(config, clock=clock, **forged)
        front: object | None = None
        if node_id == "slow":
            front = SlowNode(service, slow_delay_s)
        elif node_id in recorded:
            front = recorders[node_id] = RecordingNode(service)
            if node_id == "volunteers":
                recorder = recorders[node_id]
        nodes[node_id] = loop.run(start_node(config, clock=clock, service=service, front=front))
        node_services[node_id] = service

    requester_homes = {
        rid: loop.run(enroll_requester(settings, root / "requesters", rid, directory))
        for rid in ("bank", "school")
    }
    fed = Federation(
        root=root,
        loop=loop,
        clock=clock,
        directory=directory,
        nodes=nodes,
        node_configs=configs,
        directory_key=directory_key,
        directory_tls=tls_identity(settings),
        ca_pem=settings.ca_cert_path.read_bytes(),
        requester_homes=requester_homes,
        subject_keys=subject_keys,
        deadline_s=deadline_s,
        slow_delay_s=slow_delay_s,
        recorder=recorder,
        recorders=recorders,
        node_services=node_services,
    )
    fed.sync_nodes()  # nodes learn of new members at their next pull; do it now
    return fed
