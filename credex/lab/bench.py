"""`make bench`: credex's GetProfile against the bare gRPC ceiling, scaling with nodes and
subjects, and peak memory, all in one run on this machine.

credex runs as users run it: separate processes on loopback, mutual TLS, signed requests,
consent and attestation checks, audit logs, scoring, and a requester SDK that verifies every
signature of every profile it receives. Only the directory's per-requester rate and monthly
purpose limits are raised, so the load generator is not refused; they are still checked.
The ceiling (`credex.lab.ceiling`) is the same topology and RPC pattern with none of that work.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from credex.directory.config import SETTINGS_FILE, DirectorySettings, settings_file
from credex.lab.ceiling import PROFILE, REQUEST_BYTES, ceiling_channel
from credex.lab.federation import Launcher, RunningFederation, directory_home, start
from credex.lab.identities import subject_key
from credex.lab.synth import generate, load_manifest
from credex.node.config import load_node_config
from credex.protocol import vocab
from credex.protocol.errors import CredexError
from credex.protocol.keys import SigningKey
from credex.protocol.tickets import SubjectKeys, tickets_for
from credex.protocol.tls import TlsIdentity
from credex.runtime.db import readonly_uri
from credex.sdk.client import RequesterClient, SubjectClient
from credex.v1.common_pb2 import Category, Purpose
from credex.v1.consent_pb2 import Consent

# Research may cover every category a node serves, so a profile asks every node.
PURPOSE = vocab.parse_purpose("research")
REQUESTER = "bank"
EVERYWHERE = 8  # subjects known to every node; the load cycles through them


@dataclass(frozen=True)
class Plan:
    """What one benchmark run measures, and for how long."""

    warmup_s: float
    duration_s: float
    concurrency: int
    base_nodes: int
    base_subjects: int
    node_counts: tuple[int, ...]
    subject_counts: tuple[int, ...]

    @classmethod
    def full(cls) -> Plan:
        return cls(3.0, 15.0, 32, 5, 10_000, (5, 20, 50), (10_000, 1_000_000))

    @classmethod
    def quick(cls) -> Plan:
        return cls(1.0, 3.0, 32, 5, 2_000, (5, 20, 50), (2_000, 50_000))


@dataclass
class Measured:
    """Latency and throughput of one load level."""

    concurrency: int
    completed: int
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float


@dataclass
class Results:
    machine: dict[str, Any]
    plan: dict[str, Any]
    profiles_per_s: float = 0.0
    ceiling_per_s: float = 0.0
    throughput_ratio: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    ceiling_p50_ms: float = 0.0
    latency_ratio: float = 0.0
    p50_ms_by_nodes: dict[str, float] = field(default_factory=dict)
    p50_ms_by_subjects: dict[str, float] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- load generation


async def drive(
    call: Callable[[], Awaitable[object]], concurrency: int, warmup_s: float, duration_s: float
) -> Measured:
    """`concurrency` workers call back to back; latencies after the warm-up are kept."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + warmup_s
    end = measure_from + duration_s

    async def worker() -> None:
        while True:
            started = loop.time()
            if started >= end:
                return
            await call()
            if started >= measure_from:
                latencies.append(loop.time() - started)

    began = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = max(loop.time() - max(measure_from, began), 1e-9)
    if not latencies:
        raise RuntimeError("no request completed in the measuring window")
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return Measured(
        concurrency=concurrency,
        completed=len(latencies),
        seconds=round(seconds, 3),
        per_s=round(len(latencies) / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(quantiles[98] * 1000, 3),
    )


# --------------------------------------------------------------------------- credex


def _write_bench_settings(root: Path) -> None:
    """The directory's default settings with the limits raised (before its first start)."""
    home = directory_home(root)
    home.mkdir(parents=True, exist_ok=True)
    # Raised for the benchmark so the load generator is not refused; still checked on every
    # request.
    settings = settings_file(
        {"requester_rate_per_s": 1_000_000.0, "requester_burst": 1_000_000.0},
        {"research": 1_000_000_000},
    )
    (home / SETTINGS_FILE).write_text(settings)


@contextmanager
def credex_federation(
    root: Path, nodes: int, subjects: int, descriptor_limit: int | None = None
) -> Iterator[RunningFederation]:
    if not (root / "federation.toml").exists():
        generate(root, subjects=subjects, seed=7, nodes=nodes, everywhere=EVERYWHERE)
    _write_bench_settings(root)
    fed = start(
        root,
        subjects=subjects,
        seed=7,
        nodes=nodes,
        everywhere=EVERYWHERE,
        descriptor_limit=descriptor_limit,
    )
    try:
        yield fed
    finally:
        fed.stop()


class CredexLoad:
    """A requester asking for the profiles of the subjects every node knows, in turn."""

    def __init__(self, fed: RunningFederation) -> None:
        self.fed = fed
        self.subjects = list(fed.manifest.everywhere)
        if not self.subjects:
            raise RuntimeError("the bench population has no subject known to every node")
        self.consents: dict[str, str] = {}
        self.failed_nodes = 0
        self.served = 0
        self.refused: dict[str, int] = {}
        self._next = 0
        home = fed.requester(REQUESTER)
        self.client = RequesterClient(
            fed.directory_address,
            REQUESTER,
            home.signing_key(),
            tls=home.tls(),
            directory_key=home.directory_key(),
        )

    async def grant(self) -> None:
        categories = sorted(vocab.PURPOSE_CATEGORIES[PURPOSE])
        for subject_id in self.subjects:
            async with SubjectClient(
                self.fed.public_address,
                subject_id,
                subject_key(self.fed.seed, subject_id),
                ca_pem=self.fed.ca_pem,
            ) as subject:
                self.consents[subject_id] = await subject.grant(
                    requester_id=REQUESTER,
                    purpose=PURPOSE,
                    categories=categories,
                    max_uses=1_000_000_000,
                    valid_days=1,
                )

    async def call(self) -> None:
        subject_id = self.subjects[self._next % len(self.subjects)]
        self._next += 1
        profile = await self.client.get_profile(
            subject_id=subject_id, consent_id=self.consents[subject_id], purpose=PURPOSE
        )
        self.failed_nodes += sum(n.status != "OK" for n in profile.nodes)
        self.served += 1

    async def call_counting_refusals(self) -> None:
        """`call`, but a refused or failed profile is counted instead of raised."""
        try:
            await self.call()
        except CredexError as err:
            key = f"{err.code.name}:{err.reason}"
            self.refused[key] = self.refused.get(key, 0) + 1

    def uses(self) -> int:
        """Consent uses the directory has counted for this load's consents."""
        settings = DirectorySettings(home=directory_home(self.fed.root))
        conn = sqlite3.connect(readonly_uri(settings.db_path), uri=True)
        try:
            marks = ", ".join("?" for _ in self.consents)
            row = conn.execute(
                f"SELECT coalesce(sum(uses), 0) FROM consents WHERE consent_id IN ({marks})",
                list(self.consents.values()),
            ).fetchone()
        finally:
            conn.close()
        return int(row[0])

    async def fan_out(self) -> int:
        """How many nodes one profile asks (every node, for these subjects)."""
        subject_id = self.subjects[0]
        profile = await self.client.get_profile(
            subject_id=subject_id, consent_id=self.consents[subject_id], purpose=PURPOSE
        )
        return len(profile.nodes)


def peak_rss_mb(pid: int) -> float:
    """A live process's peak resident set size (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def federation_rss(fed: RunningFederation) -> dict[str, float]:
    return {p.name: peak_rss_mb(p.pid) for p in fed.launcher.infos}


def rss_mb(pid: int) -> float:
    """A live process's resident set size now (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# --------------------------------------------------------------------------- under attack

# The base federation runs with this many descriptors per server, and the flood holds more
# idle connections than that on each port it attacks.
FLOOD_DESCRIPTOR_LIMIT = 4096
FLOOD_RAMP_S = 3.0


@contextmanager
def flooding(fed: RunningFederation, out: Path) -> Iterator[Path]:
    """An attacker process (credex.lab.flood) against `fed` from 127.0.0.2 until the block ends."""
    node = next(p for p in fed.launcher.infos if p.role == "node")
    settings = DirectorySettings(home=directory_home(fed.root))
    args = [
        sys.executable, "-m", "credex.lab.flood",
        "--public", fed.public_address, "--ca", str(settings.ca_cert_path), "--out", str(out),
        "--idle-count", str(FLOOD_DESCRIPTOR_LIMIT + 256),
        *(a for address in (fed.public_address, fed.directory_address, node.address)
          for a in ("--idle", address)),
    ]  # fmt: skip
    out.unlink(missing_ok=True)
    attacker = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield out
    finally:
        attacker.send_signal(signal.SIGTERM)
        try:
            _, err = attacker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            attacker.kill()
            _, err = attacker.communicate()
        if attacker.returncode != 0 or not out.exists():
            raise RuntimeError(f"the flood failed: {err.decode(errors='replace')[-2000:]}")


async def _measure_under_flood(fed: RunningFederation, plan: Plan, report: Path) -> dict[str, Any]:
    """p50 at concurrency 1 with no attack and then under the flood, the directory's memory
    meanwhile, and whether any consent use was spent on a profile that failed."""
    directory = next(p.pid for p in fed.launcher.infos if p.role == "directory")
    load = CredexLoad(fed)
    try:
        await load.grant()
        calm = await drive(load.call_counting_refusals, 1, plan.warmup_s, plan.duration_s)
        rss_before = rss_mb(directory)
        samples: list[float] = []
        with flooding(fed, report):
            await asyncio.sleep(FLOOD_RAMP_S)
            uses_before, served_before = load.uses(), load.served

            async def sample() -> None:
                while True:
                    samples.append(rss_mb(directory))
                    await asyncio.sleep(0.25)

            sampler = asyncio.create_task(sample())
            try:
                under = await drive(load.call_counting_refusals, 1, plan.warmup_s, plan.duration_s)
            finally:
                sampler.cancel()
            uses_spent = load.uses() - uses_before
            served = load.served - served_before
    finally:
        await load.client.close()
    return {
        "calm": asdict(calm),
        "under_flood": asdict(under),
        "p50_ratio": round(under.p50_ms / calm.p50_ms, 3),
        "profiles_served": served,
        "profiles_refused": dict(load.refused),
        "uses_spent_on_failures": uses_spent - served,
        "directory_rss_mb": {"before": rss_before, "max_under_flood": max(samples or [0.0])},
    }


async def _measure_credex(
    fed: RunningFederation, plan: Plan, levels: tuple[int, ...]
) -> tuple[list[Measured], int, int]:
    load = CredexLoad(fed)
    try:
        await load.grant()
        width = await load.fan_out()
        measured = [await drive(load.call, c, plan.warmup_s, plan.duration_s) for c in levels]
    finally:
        await load.client.close()
    return measured, width, load.failed_nodes


# --------------------------------------------------------------------------- ceiling


@contextmanager
def ceiling_processes(
    root: Path, nodes: int, tls: list[tuple[Path, Path, Path]] | None
) -> Iterator[str]:
    """A bare directory and `nodes` bare nodes as processes; yields the directory's address."""
    launcher = Launcher(root)
    try:
        pending = {
            f"node-{i}": launcher.spawn(
                f"node-{i}", "node", ["credex.lab.ceiling", "node", *_tls_args(tls, i + 1)]
            )
            for i in range(nodes)
        }
        addresses = launcher.wait_ready(pending)
        node_args = [a for i in range(nodes) for a in ("--node", addresses[f"node-{i}"]["address"])]
        pending = {
            "directory": launcher.spawn(
                "directory",
                "directory",
                ["credex.lab.ceiling", "directory", *node_args, *_tls_args(tls, 0)],
            )
        }
        yield launcher.wait_ready(pending)["directory"]["address"]
    finally:
        launcher.stop()


def _tls_args(tls: list[tuple[Path, Path, Path]] | None, index: int) -> list[str]:
    if tls is None:
        return []
    return ["--tls", *(str(p) for p in tls[index])]


async def _measure_ceiling(
    address: str, identity: TlsIdentity | None, plan: Plan, levels: tuple[int, ...]
) -> list[Measured]:
    channel = ceiling_channel(address, identity)
    call = channel.unary_unary(PROFILE, None, None)
    request = bytes(REQUEST_BYTES)

    async def one() -> None:
        await call(request, timeout=5.0)

    try:
        await one()
        return [await drive(one, c, plan.warmup_s, plan.duration_s) for c in levels]
    finally:
        await channel.close(None)


def federation_tls(fed: RunningFederation, nodes: int) -> list[tuple[Path, Path, Path]]:
    """TLS material of the directory (index 0), its nodes, and the requester (last)."""
    settings = DirectorySettings(home=directory_home(fed.root))
    out = [(settings.ca_cert_path, settings.tls_cert_path, settings.tls_key_path)]
    for node in fed.manifest.nodes[:nodes]:
        config = load_node_config(node.config)
        out.append((config.ca_cert, config.tls_cert, config.tls_key))
    home = fed.requester(REQUESTER)
    out.append((home.ca_path, home.cert_path, home.tls_key_path))
    return out


# --------------------------------------------------------------------------- the run


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


TICKET_NODES = 20


def ticket_signing(nodes: int = TICKET_NODES, rounds: int = 50) -> dict[str, float]:
    """What granting a consent costs the subject's device in tickets for `nodes` nodes, in ms
    (median of `rounds`): with every node key derived first (a device's first grant after
    start), and with the keys already derived."""
    main = SigningKey.generate()
    consent = Consent(
        consent_id="c-bench",
        requester_id="bank",
        purpose=Purpose.PURPOSE_LOAN_APPLICATION,
        categories=[Category.CATEGORY_FINANCIAL],
        max_uses=1,
    )
    consent.not_after.FromSeconds(3600)
    served = {f"node-{i:02d}": [Category.CATEGORY_FINANCIAL] for i in range(nodes)}
    cold, warm = [], []
    for _ in range(rounds):
        keys = SubjectKeys(main)
        start = time.perf_counter()
        tickets_for(consent, keys, served)
        cold.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        tickets_for(consent, keys, served)
        warm.append((time.perf_counter() - start) * 1000)
    return {
        "nodes": nodes,
        "p50_ms_keys_derived": round(statistics.median(cold), 3),
        "p50_ms_keys_cached": round(statistics.median(warm), 3),
    }


def run_bench(root: Path, plan: Plan, say: Callable[[str], None] = print) -> Results:
    """Every measurement of the benchmark, in order; each federation is stopped after use."""
    results = Results(machine=machine(), plan=asdict(plan))
    signing = results.detail["ticket_signing"] = ticket_signing()
    say(
        f"tickets for {signing['nodes']} nodes on the subject's device: "
        f"{signing['p50_ms_keys_derived']} ms (keys derived), "
        f"{signing['p50_ms_keys_cached']} ms (keys cached)"
    )
    levels = (1, plan.concurrency)
    base = root / f"n{plan.base_nodes}-s{plan.base_subjects}"

    say(f"credex: {plan.base_nodes} nodes, {plan.base_subjects} subjects")
    with credex_federation(
        base, plan.base_nodes, plan.base_subjects, descriptor_limit=FLOOD_DESCRIPTOR_LIMIT
    ) as fed:
        (single, many), width, failed = asyncio.run(_measure_credex(fed, plan, levels))
        base_rss = federation_rss(fed)
        tls = federation_tls(fed, plan.base_nodes)
        say("credex under an unauthenticated flood (idle connections, garbage, health watches)")
        attack = asyncio.run(_measure_under_flood(fed, plan, root / "flood.json"))
        attack["flood"] = json.loads((root / "flood.json").read_text())
    results.detail["under_attack"] = attack
    say(
        f"  c=1 p50 {attack['calm']['p50_ms']} ms calm, {attack['under_flood']['p50_ms']} ms "
        f"under the flood; {attack['uses_spent_on_failures']} uses spent on failures"
    )
    results.detail["credex"] = {"c1": asdict(single), f"c{plan.concurrency}": asdict(many)}
    results.detail["fan_out"] = width
    results.detail["failed_node_answers"] = failed
    results.profiles_per_s, results.p50_ms, results.p99_ms = (
        many.per_s,
        single.p50_ms,
        single.p99_ms,
    )
    results.p50_ms_by_nodes[str(plan.base_nodes)] = single.p50_ms
    say(f"  c=1 p50 {single.p50_ms} ms; c={plan.concurrency} {many.per_s}/s")

    for label, material in (("ceiling", None), ("ceiling_tls", tls)):
        say(f"{label}: {plan.base_nodes} bare nodes")
        with ceiling_processes(root / label, plan.base_nodes, material) as address:
            identity = None if material is None else TlsIdentity.load(*material[-1])
            bare_single, bare_many = asyncio.run(_measure_ceiling(address, identity, plan, levels))
        results.detail[label] = {
            "c1": asdict(bare_single),
            f"c{plan.concurrency}": asdict(bare_many),
        }
        say(f"  c=1 p50 {bare_single.p50_ms} ms; c={plan.concurrency} {bare_many.per_s}/s")
        if label == "ceiling":
            results.ceiling_per_s, results.ceiling_p50_ms = bare_many.per_s, bare_single.p50_ms

    results.throughput_ratio = round(results.profiles_per_s / results.ceiling_per_s, 3)
    results.latency_ratio = round(results.p50_ms / results.ceiling_p50_ms, 3)

    # For context: how the bare fan-out itself scales when every node shares these cores.
    ceiling_by_nodes = {str(plan.base_nodes): results.ceiling_p50_ms}
    results.detail["ceiling_p50_ms_by_nodes"] = ceiling_by_nodes
    for nodes in plan.node_counts:
        if nodes == plan.base_nodes:
            continue
        say(f"credex: {nodes} nodes")
        with credex_federation(
            root / f"n{nodes}-s{plan.base_subjects}", nodes, plan.base_subjects
        ) as fed:
            (single,), width, _ = asyncio.run(_measure_credex(fed, plan, (1,)))
        results.p50_ms_by_nodes[str(nodes)] = single.p50_ms
        results.detail[f"fan_out_{nodes}"] = width
        say(f"  p50 {single.p50_ms} ms over {width} nodes")
        with ceiling_processes(root / f"ceiling-{nodes}", nodes, None) as address:
            (bare,) = asyncio.run(_measure_ceiling(address, None, plan, (1,)))
        ceiling_by_nodes[str(nodes)] = bare.p50_ms
        say(f"  ceiling over {nodes} bare nodes: p50 {bare.p50_ms} ms")

    results.p50_ms_by_subjects[str(plan.base_subjects)] = results.p50_ms
    node_rss, directory_rss = (
        max(v for k, v in base_rss.items() if k != "directory"),
        base_rss["directory"],
    )
    for subjects in plan.subject_counts:
        if subjects == plan.base_subjects:
            continue
        say(f"credex: {plan.base_nodes} nodes, {subjects} subjects (generated once, then reused)")
        with credex_federation(
            root / f"n{plan.base_nodes}-s{subjects}", plan.base_nodes, subjects
        ) as fed:
            (single,), _, _ = asyncio.run(_measure_credex(fed, plan, (1,)))
            rss = federation_rss(fed)
        results.p50_ms_by_subjects[str(subjects)] = single.p50_ms
        node_rss = max(v for k, v in rss.items() if k != "directory")
        directory_rss = rss["directory"]
        results.detail["largest_node_records"] = largest_node_records(
            root / f"n{plan.base_nodes}-s{subjects}"
        )
        say(f"  p50 {single.p50_ms} ms")
    results.rss_mb = {"node": node_rss, "directory": directory_rss}
    return results


def largest_node_records(root: Path) -> dict[str, int]:
    """Rows in the biggest table of each node's database: what the node holds."""
    out = {}
    for node in load_manifest(root).nodes:
        conn = sqlite3.connect(readonly_uri(node.directory / "records.db"), uri=True)
        try:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            out[node.id] = sum(
                conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables
            )
        finally:
            conn.close()
    return out


TARGETS = (
    ("throughput_ratio", ">=", 0.6, "throughput at 32 concurrent / ceiling"),
    ("latency_ratio", "<=", 1.5, "p50 at concurrency 1 / ceiling's"),
)


def verdicts(results: Results, plan: Plan) -> list[tuple[str, str, str, bool]]:
    """(what, measured, target, met) for every target of the issue."""
    rows = []
    for key, op, bound, what in TARGETS:
        value = getattr(results, key)
        met = value >= bound if op == ">=" else value <= bound
        rows.append((what, f"{value:g}", f"{op} {bound:g}", met))
    by_nodes = results.p50_ms_by_nodes
    most = str(max(plan.node_counts))
    if most in by_nodes and str(plan.base_nodes) in by_nodes:
        ratio = by_nodes[most] / by_nodes[str(plan.base_nodes)]
        rows.append(
            (f"p50 at {most} nodes / at {plan.base_nodes}", f"{ratio:.2f}", "<= 3", ratio <= 3)
        )
    by_subjects = results.p50_ms_by_subjects
    lo, hi = str(min(plan.subject_counts)), str(max(plan.subject_counts))
    if lo in by_subjects and hi in by_subjects:
        ratio = by_subjects[hi] / by_subjects[lo]
        rows.append((f"p50 at {hi} subjects / at {lo}", f"{ratio:.2f}", "<= 1.2", ratio <= 1.2))
    signing = results.detail.get("ticket_signing")
    if signing:
        ms = signing["p50_ms_keys_derived"]
        rows.append(
            (f"signing tickets for {signing['nodes']} nodes (ms)", f"{ms:g}", "< 10", ms < 10)
        )
    attack = results.detail.get("under_attack")
    if attack:
        ratio, wasted = attack["p50_ratio"], attack["uses_spent_on_failures"]
        grown = attack["directory_rss_mb"]["max_under_flood"] - attack["directory_rss_mb"]["before"]
        rows.append(("p50 under a flood / calm", f"{ratio:g}", "<= 2", ratio <= 2))
        rows.append(("directory RSS growth under a flood (MB)", f"{grown:g}", "< 64", grown < 64))
        rows.append(("consent uses spent on failed profiles", str(wasted), "0", wasted == 0))
    rows.append(
        (
            "node peak RSS (MB)",
            f"{results.rss_mb.get('node', 0):g}",
            "< 150",
            results.rss_mb.get("node", 0) < 150,
        )
    )
    rows.append(
        (
            "directory peak RSS (MB)",
            f"{results.rss_mb.get('directory', 0):g}",
            "< 200",
            results.rss_mb.get("directory", 0) < 200,
        )
    )
    return rows


def write_results(results: Results, path: Path) -> None:
    path.write_text(json.dumps(asdict(results), indent=2, sort_keys=True) + "\n")
