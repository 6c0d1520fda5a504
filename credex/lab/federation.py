"""A local federation on loopback: the directory and every node as separate processes.

`prepare` turns a synthetic data set into a directory home and initialised nodes; `start`
launches the processes and waits until each is serving; `stop` ends them all, escalating to
SIGKILL after a grace period, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from credex.directory import admin as directory_admin
from credex.directory.config import DirectorySettings
from credex.directory.registry import Registry
from credex.directory.schema import open_directory_storage
from credex.lab.synth import DEFAULT_NODES, Manifest, RequesterEntry, generate, load_manifest
from credex.node.config import load_node_config
from credex.protocol.channels import open_channel
from credex.protocol.config import validate_member_id
from credex.protocol.tls import TlsIdentity
from credex.runtime.serving import STOP_WITH_ENV, read_ready_file
from credex.sdk.member_home import MemberHome
from credex.testing.enroll import enroll_node
from credex.testing.enroll import enroll_requester as enroll_member
from credex.v1 import node_pb2
from credex.v1.member_pb2 import MemberRole, MemberStatus
from credex.v1.node_pb2_grpc import NodeServiceStub

STATE_FILE = "run/federation.json"
_deferring = 0
_pending: list[int] = []


def exit_on_signals() -> None:
    """SIGTERM/SIGHUP end the program like Ctrl-C does, so cleanup code runs and nothing is
    left running; inside `_signals_deferred` they wait until the critical part is done."""

    def handler(signum: int, frame: object) -> None:
        if _deferring:
            _pending.append(signum)
            return
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending:
        raise SystemExit(128 + _pending.pop())


READY_TIMEOUT_S = 30.0
READY_TIMEOUT_PER_PROCESS_S = 1.0  # Python start-up is CPU-bound: many at once take longer
STOP_GRACE_S = 5.0


class FederationError(Exception):
    """The federation could not be prepared, started or stopped."""


@dataclass
class ProcessInfo:
    name: str
    role: str
    pid: int
    address: str
    log: str
    started: str = ""


@dataclass
class FederationState:
    root: str
    directory_address: str
    public_address: str
    processes: list[ProcessInfo] = field(default_factory=list)

    def save(self, root: Path) -> None:
        path = root / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, root: Path) -> FederationState | None:
        path = root / STATE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(
                root=data["root"],
                directory_address=data.get("directory_address", ""),
                public_address=data.get("public_address", ""),
                processes=[ProcessInfo(**p) for p in data["processes"]],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise FederationError(f"{path} is corrupt: {exc}") from None


def directory_home(root: Path) -> Path:
    return root / "directory"


def requester_home(root: Path, requester_id: str) -> Path:
    return root / "requesters" / requester_id


def prepare(
    root: Path,
    *,
    subjects: int = 1000,
    seed: int = 7,
    nodes: int = DEFAULT_NODES,
    everywhere: int = 0,
) -> Manifest:
    """Generate data unless the same generation is there; create the directory's home (its
    CA included) and load subjects and the record locator."""
    manifest: Manifest | None = None
    if (root / "federation.toml").is_file():
        existing = load_manifest(root)
        found = (existing.subjects, existing.seed, len(existing.nodes), len(existing.everywhere))
        if found == (subjects, seed, nodes, everywhere):
            manifest = existing
    regenerated = manifest is None
    if manifest is None:
        manifest = generate(root, subjects=subjects, seed=seed, nodes=nodes, everywhere=everywhere)
    settings = directory_admin.init_home(directory_home(root))
    directory_admin.import_subjects(
        settings, root / "subjects.csv", root / "locator.csv", replace=regenerated
    )
    return manifest


def enroll_members(
    manifest: Manifest,
    root: Path,
    public_address: str,
    node_hosts: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Enroll every node and requester not yet a member, through the real enrollment service:
    the operator issues a token, the member makes its keys and redeems it. A node's
    certificate names its `node_hosts` entry (default: localhost and 127.0.0.1)."""
    settings = DirectorySettings(home=directory_home(root))
    members = {m.member_id for m in directory_admin.list_members(settings)}
    for node in manifest.nodes:
        if node.id in members:
            continue
        load_node_config(node.config).tls_cert.unlink(missing_ok=True)  # from an earlier directory
        enroll_node(
            settings,
            node.config,
            public_address,
            categories=node.categories,
            name=node.name,
            jurisdiction=node.jurisdiction,
            hosts=(node_hosts or {}).get(node.id),
        )
    for requester in manifest.requesters:
        if requester.id not in members:
            asyncio.run(enroll_requester(root, requester, public_address))


async def enroll_requester(
    root: Path, requester: RequesterEntry, public_address: str, directory_address: str = ""
) -> MemberHome:
    """Enroll one requester through the enrollment service and keep its home under `root`."""
    validate_member_id(requester.id, "requester")
    settings = DirectorySettings(home=directory_home(root))
    home_path = requester_home(root, requester.id)
    if home_path.exists():  # left from an earlier directory; a valid id stays inside root
        shutil.rmtree(home_path)
    return await enroll_member(
        settings,
        home_path,
        requester.id,
        public_address=public_address,
        directory_address=directory_address or "(set when the federation starts)",
        name=requester.name,
        jurisdiction=requester.jurisdiction,
    )


def match_node_members(manifest: Manifest, root: Path) -> None:
    """Suspend node members an earlier, larger generation enrolled and this one lacks, and
    reinstate those it has again, so the registry lists exactly the nodes that will run."""
    settings = DirectorySettings(home=directory_home(root))
    wanted = {n.id for n in manifest.nodes}
    for member in directory_admin.list_members(settings):
        if member.role != MemberRole.MEMBER_ROLE_NODE:
            continue
        status = member.status
        if member.member_id in wanted and status == MemberStatus.MEMBER_STATUS_SUSPENDED:
            directory_admin.set_member_status(settings, member.member_id, "active")
        elif member.member_id not in wanted and status == MemberStatus.MEMBER_STATUS_ACTIVE:
            directory_admin.set_member_status(settings, member.member_id, "suspended")


def point_requesters(manifest: Manifest, root: Path, address: str, public_address: str) -> None:
    """Record the directory's current addresses in every requester's home."""
    for requester in manifest.requesters:
        MemberHome(
            path=requester_home(root, requester.id),
            member_id=requester.id,
            directory=address,
            directory_public=public_address,
        ).save()


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' if unknown): with the pid it
    identifies one process, so a recycled pid is never mistaken for ours."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def is_running(process: ProcessInfo) -> bool:
    """True while the recorded process (same pid, same start time) exists and is no zombie."""
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and fields[19] == process.started


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Launcher:
    """Starts credex servers as child processes and stops them again."""

    def __init__(
        self, root: Path, *, tied: bool = False, descriptor_limit: int | None = None
    ) -> None:
        """`tied`: the servers stop when this process ends, however it ends (for tests).
        `descriptor_limit`: run them with at most this many open files, as a service manager's
        LimitNOFILE would (needs util-linux's prlimit)."""
        self.root = root
        self.tied = tied
        self.descriptor_limit = descriptor_limit
        self.run_dir = root / "run"
        self.log_dir = root / "logs"
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.infos: list[ProcessInfo] = []

    def spawn(
        self, name: str, role: str, args: list[str], env: dict[str, str] | None = None
    ) -> tuple[Path, Path]:
        """Start `python -m args…` as `name`; `env` adds to (never overrides) the
        environment it inherits."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ready = self.run_dir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        log = self.log_dir / f"{name}.log"
        # No stop signal may act between starting the child and recording it, or it would leak.
        with _signals_deferred():
            with log.open("ab") as fh:
                proc = subprocess.Popen(
                    [
                        *self._limited(),
                        sys.executable,
                        "-m",
                        *args,
                        "--listen",
                        "127.0.0.1:0",
                        "--ready-file",
                        str(ready),
                    ],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**(env or {}), **self._environment()},
                )
            self.children[name] = proc
            self.infos.append(
                ProcessInfo(
                    name=name,
                    role=role,
                    pid=proc.pid,
                    address="",
                    log=str(log),
                    started=_start_ticks(proc.pid),
                )
            )
            self.save_state()  # recorded at once, so `down` finds it even if we are killed now
        return ready, log

    def _limited(self) -> list[str]:
        if self.descriptor_limit is None:
            return []
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise FederationError("a descriptor limit needs prlimit (Debian package util-linux)")
        n = self.descriptor_limit
        return [prlimit, f"--nofile={n}:{n}", "--"]

    def _environment(self) -> dict[str, str]:
        """Tied: the servers stop when this process ends. Otherwise they inherit whatever
        process the caller is itself tied to (a test run sets one for everything it starts)."""
        if self.tied:
            return {**os.environ, STOP_WITH_ENV: str(os.getpid())}
        return dict(os.environ)

    def save_state(self, address: str = "", public_address: str = "") -> None:
        FederationState(
            root=str(self.root),
            directory_address=address,
            public_address=public_address,
            processes=self.infos,
        ).save(self.root)

    def wait_ready(self, pending: dict[str, tuple[Path, Path]]) -> dict[str, dict[str, str]]:
        """Block until every named process has written its ready file; fail fast on a death."""
        addresses: dict[str, dict[str, str]] = {}
        timeout = READY_TIMEOUT_S + READY_TIMEOUT_PER_PROCESS_S * len(pending)
        deadline = time.monotonic() + timeout
        while len(addresses) < len(pending):
            for name, (ready, log) in pending.items():
                if name in addresses:
                    continue
                if ready.is_file():
                    addresses[name] = read_ready_file(ready)
                elif self.children[name].poll() is not None:
                    raise FederationError(
                        f"{name} exited with code {self.children[name].returncode}; "
                        f"log {log}:\n{_log_tail(log)}"
                    )
            if time.monotonic() > deadline:
                late = sorted(set(pending) - set(addresses))
                raise FederationError(f"not ready after {timeout:g}s: {', '.join(late)}")
            time.sleep(0.05)
        for info in self.infos:
            if info.name in addresses:
                info.address = addresses[info.name]["address"]
        return addresses

    def stop(self) -> int:
        """SIGTERM every child, SIGKILL what is left after the grace period; reap all."""
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.children.values():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        count = len(self.children)
        self.children.clear()
        (self.root / STATE_FILE).unlink(missing_ok=True)
        return count


@dataclass
class Federation:
    """A federation whose processes run: where its directory is, and its data and members."""

    root: Path
    manifest: Manifest
    directory_address: str
    public_address: str

    @property
    def seed(self) -> int:
        return self.manifest.seed

    @property
    def ca_pem(self) -> bytes:
        return DirectorySettings(home=directory_home(self.root)).ca_cert_path.read_bytes()

    def requester(self, requester_id: str) -> MemberHome:
        return MemberHome.load(requester_home(self.root, requester_id))


@dataclass
class RunningFederation(Federation):
    """A federation this process started, and can stop."""

    launcher: Launcher
    # The directory's Prometheus endpoint (host:port) when its settings serve one, else "".
    metrics_address: str = ""

    def stop(self) -> int:
        return self.launcher.stop()


REGISTRY_WAIT_S = 30.0


async def wait_for_registry(root: Path, timeout_s: float = REGISTRY_WAIT_S) -> float:
    """Wait until every running node of the federation in `root` holds the directory's current
    registry version (a member enrolled, suspended or reinstated has reached all of them);
    returns the seconds waited. FederationError names the nodes still behind at the timeout."""
    settings = DirectorySettings(home=directory_home(root))
    with open_directory_storage(settings.db_path) as storage:
        target = Registry(storage.connection).version
    state = FederationState.load(root)
    nodes = [p for p in (state.processes if state else []) if p.role == "node" and is_running(p)]
    tls = operator_tls(root)
    loop = asyncio.get_running_loop()
    started = loop.time()
    behind = {p.name: p.address for p in nodes}
    while behind:
        for name, address in list(behind.items()):
            channel = open_channel(address, tls)
            try:
                described = await NodeServiceStub(channel).Describe(
                    node_pb2.DescribeRequest(), timeout=2.0
                )
                if described.registry_version >= target:
                    del behind[name]
            except grpc.aio.AioRpcError:
                pass  # busy or restarting: asked again below
            finally:
                await channel.close(None)
        if behind and loop.time() - started > timeout_s:
            raise FederationError(
                f"after {timeout_s:g} s these nodes still lack registry version {target}: "
                + ", ".join(sorted(behind))
            )
        if behind:
            await asyncio.sleep(0.2)
    return loop.time() - started


def attach(root: Path) -> Federation:
    """The federation `credex-lab up` started in `root`; FederationError if none runs there."""
    state = FederationState.load(root)
    if state is None or not state.directory_address:
        raise FederationError(f"no federation is running in {root}; start one with `credex-lab up`")
    directory = next((p for p in state.processes if p.role == "directory"), None)
    if directory is None or not is_running(directory):
        raise FederationError(
            f"the directory of the federation in {root} is not running; "
            f"see `credex-lab status --dir {root}`"
        )
    try:
        manifest = load_manifest(root)
    except ValueError as exc:
        raise FederationError(str(exc)) from None
    return Federation(root, manifest, state.directory_address, state.public_address)


def operator_tls(root: Path) -> TlsIdentity:
    """The directory's own TLS identity, which the lab uses for health checks."""
    settings = DirectorySettings(home=directory_home(root))
    return TlsIdentity.load(settings.ca_cert_path, settings.tls_cert_path, settings.tls_key_path)


# Connections one node keeps to the directory (sync, witness, announce, renewal), with room.
CONNECTIONS_PER_LAB_NODE = 4


def lab_directory_env(nodes: int) -> dict[str, str]:
    """Every lab member dials the directory from 127.0.0.1, which the per-address connection
    cap counts as one caller: admit the default 64 plus a few for each node."""
    cap = 64 + CONNECTIONS_PER_LAB_NODE * nodes
    return {"CREDEX_DIRECTORY_SERVER_MAX_CONNECTIONS_PER_PEER": str(cap)}


def start(
    root: Path,
    *,
    subjects: int = 1000,
    seed: int = 7,
    nodes: int = DEFAULT_NODES,
    everywhere: int = 0,
    tied: bool = False,
    descriptor_limit: int | None = None,
    directory_env: Mapping[str, str] | None = None,
) -> RunningFederation:
    """Prepare, then start every node and the directory; stops them all if any fails.
    `tied` and `descriptor_limit`: see `Launcher`. `directory_env`: settings for the directory
    as CREDEX_DIRECTORY_<TABLE>_<KEY> variables (e.g. lower limits for a test)."""
    state = FederationState.load(root)
    if state is not None and any(is_running(p) for p in state.processes):
        raise FederationError(f"a federation is already running in {root}; run `credex-lab down`")
    manifest = prepare(root, subjects=subjects, seed=seed, nodes=nodes, everywhere=everywhere)
    launcher = Launcher(root, tied=tied, descriptor_limit=descriptor_limit)
    try:
        home = str(directory_home(root))
        pending = {
            "directory": launcher.spawn(
                "directory",
                "directory",
                ["credex.directory.cli", "serve", "--home", home, "--public-listen", "127.0.0.1:0"],
                env={**lab_directory_env(len(manifest.nodes)), **(directory_env or {})},
            )
        }
        ready = launcher.wait_ready(pending)["directory"]
        address, public_address = ready["address"], ready["public_address"]
        enroll_members(manifest, root, public_address)
        match_node_members(manifest, root)
        point_requesters(manifest, root, address, public_address)
        pending = {
            node.id: launcher.spawn(
                node.id,
                "node",
                [
                    *("credex.node.cli", "serve", str(node.config), "--directory", address),
                    *("--directory-public", public_address),
                ],
            )
            for node in manifest.nodes
        }
        launcher.wait_ready(pending)
    except BaseException:
        launcher.stop()
        raise
    launcher.save_state(address, public_address)
    return RunningFederation(
        root=root,
        manifest=manifest,
        directory_address=address,
        public_address=public_address,
        launcher=launcher,
        metrics_address=ready.get("metrics_address", ""),
    )


def stop_recorded(root: Path) -> int:
    """Stop a federation started by another process, from its state file."""
    state = FederationState.load(root)
    if state is None:
        return 0
    alive = [p for p in state.processes if is_running(p)]
    for p in alive:
        os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(is_running(p) for p in alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in alive:
        if is_running(p):
            os.kill(p.pid, signal.SIGKILL)
    (root / STATE_FILE).unlink(missing_ok=True)
    return len(alive)
