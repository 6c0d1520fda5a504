"""The directory and three nodes, each on its own host: a Linux network namespace with its own
address, joined by a bridge. Cutting one node's link mid-run makes profiles report it
UNAVAILABLE or TIMEOUT while the others keep answering; restoring the link brings it back.

The namespaces, links and processes are created and removed by the test itself. Where the
machine does not allow network namespaces (not root, no `ip`), the test is skipped and says
why."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from credex.lab.federation import enroll_members, prepare, requester_home
from credex.lab.identities import subject_key
from credex.protocol import vocab
from credex.runtime.serving import read_ready_file
from credex.sdk.client import RequesterClient, SubjectClient
from credex.sdk.member_home import MemberHome
from tests.commands import BIN

SEED = 13
PURPOSE = vocab.parse_purpose("research")  # covers every category the three nodes serve


def run(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@dataclass
class Hosts:
    """A bridge in its own namespace, one namespace per host, and a link from the test."""

    tag: str
    subnet: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return f"{self.tag}-hub"

    def address(self, index: int) -> str:
        return f"{self.subnet}.{index}"

    def create(self, names: list[str]) -> dict[str, str]:
        """Namespaces for `names` at .2, .3, …; the test itself reaches them from .1."""
        run("netns", "add", self.hub)
        self.namespaces.append(self.hub)
        run("-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("-n", self.hub, "link", "set", "br0", "up")
        run("link", "add", f"{self.tag}ra", "type", "veth", "peer", "name", f"{self.tag}rb")
        run("link", "set", f"{self.tag}rb", "netns", self.hub)
        run("addr", "add", f"{self.address(1)}/24", "dev", f"{self.tag}ra")
        run("link", "set", f"{self.tag}ra", "up")
        run("-n", self.hub, "link", "set", f"{self.tag}rb", "master", "br0", "up")
        addresses = {}
        for i, name in enumerate(names, 2):
            ns = f"{self.tag}-{i}"
            run("netns", "add", ns)
            self.namespaces.append(ns)
            run("link", "add", f"{self.tag}{i}a", "type", "veth", "peer", "name", f"{self.tag}{i}b")
            run("link", "set", f"{self.tag}{i}a", "netns", ns)
            run("link", "set", f"{self.tag}{i}b", "netns", self.hub)
            run("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", f"{self.tag}{i}a")
            run("-n", ns, "link", "set", f"{self.tag}{i}a", "up")
            run("-n", ns, "link", "set", "lo", "up")
            run("-n", self.hub, "link", "set", f"{self.tag}{i}b", "master", "br0", "up")
            addresses[name] = self.address(i)
        return addresses

    def namespace_of(self, address: str) -> str:
        return f"{self.tag}-{address.rsplit('.', 1)[1]}"

    def link(self, address: str, up: bool) -> None:
        """Plug or unplug the host at `address` from the bridge."""
        index = address.rsplit(".", 1)[1]
        run("-n", self.hub, "link", "set", f"{self.tag}{index}b", "up" if up else "down")

    def start(self, address: str, args: list[str], ready: Path, log: Path) -> dict[str, str]:
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace_of(address), *args, "--ready-file", str(ready)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
            env={**os.environ, "CREDEX_DIRECTORY_DIRECTORY_NODE_DEADLINE_S": "1.5"},
        )  # fmt: skip
        self.processes.append(process)
        deadline = time.monotonic() + 40
        while not ready.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{args[0]} never became ready: {log.read_text()}"
            time.sleep(0.05)
        return read_ready_file(ready)

    def remove(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for ns in reversed(self.namespaces):  # deleting a namespace deletes its links
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", f"{self.tag}ra"], capture_output=True, timeout=30)


def namespaces_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"cxprobe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"this machine does not allow network namespaces: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(reason)
    tag = f"cx{os.getpid() % 100000}"
    made = Hosts(tag=tag, subnet=f"10.213.{os.getpid() % 250}")
    try:
        yield made
    finally:
        made.remove()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert tag not in leftover


def test_a_cut_link_is_reported_and_recovers(tmp_path: Path, hosts: Hosts) -> None:
    root = tmp_path / "fed"
    manifest = prepare(root, subjects=150, seed=SEED, nodes=3, everywhere=3)
    node_ids = [node.id for node in manifest.nodes]
    addresses = hosts.create(["directory", *node_ids])
    directory_ip = addresses["directory"]
    directory = hosts.start(
        directory_ip,
        [str(BIN / "credex-directory"), "serve", "--home", str(root / "directory"),
         "--listen", f"{directory_ip}:7100", "--public-listen", f"{directory_ip}:7099"],
        tmp_path / "directory.ready", tmp_path / "directory.log",
    )  # fmt: skip
    enroll_members(
        manifest, root, directory["public_address"], {n: [addresses[n]] for n in node_ids}
    )
    for node in manifest.nodes:
        hosts.start(
            addresses[node.id],
            [str(BIN / "credex-node"), "serve", str(node.config),
             "--listen", f"{addresses[node.id]}:7101", "--directory", directory["address"]],
            tmp_path / f"{node.id}.ready", tmp_path / f"{node.id}.log",
        )  # fmt: skip
    bank = MemberHome.load(requester_home(root, manifest.requesters[0].id))
    subject = manifest.everywhere[0]
    ca = (root / "directory" / "ca.crt").read_bytes()
    cut = node_ids[1]

    async def scenario() -> dict[str, list[dict[str, str]]]:
        seen: dict[str, list[dict[str, str]]] = {"before": [], "cut": [], "restored": []}
        async with (
            SubjectClient(directory["public_address"], subject, subject_key(SEED, subject),
                          ca_pem=ca) as owner,
            RequesterClient(directory["address"], bank.member_id, bank.signing_key(),
                            tls=bank.tls(), directory_key=bank.directory_key(),
                            timeout_s=15) as requester,
        ):  # fmt: skip
            categories = sorted({c for node in manifest.nodes for c in node.categories})
            consent_id = await owner.grant(
                requester_id=bank.member_id,
                purpose=PURPOSE,
                categories=[vocab.parse_category(c) for c in categories],
                max_uses=1000,
            )

            async def statuses() -> dict[str, str]:
                profile = await requester.get_profile(
                    subject_id=subject, consent_id=consent_id, purpose=PURPOSE
                )
                return {n.node_id: n.status for n in profile.nodes}

            async def until(phase: str, wanted: object, seconds: float) -> None:
                deadline = time.monotonic() + seconds
                while True:
                    got = await statuses()
                    seen[phase].append(got)
                    if wanted(got):  # type: ignore[operator]
                        return
                    assert time.monotonic() < deadline, f"{phase}: {seen[phase][-3:]}"
                    await asyncio.sleep(0.2)

            def everyone_ok(got: dict[str, str]) -> bool:
                return set(got) == set(node_ids) and all(s == "OK" for s in got.values())

            await until("before", everyone_ok, 40)  # every node announced and synced
            hosts.link(addresses[cut], up=False)
            await until(
                "cut",
                lambda got: (
                    got.get(cut) in ("UNAVAILABLE", "TIMEOUT")
                    and all(got[n] == "OK" for n in node_ids if n != cut)
                ),
                20,
            )
            hosts.link(addresses[cut], up=True)
            await until("restored", everyone_ok, 30)
        return seen

    seen = asyncio.run(scenario())
    cut_profiles = seen["cut"]
    last = cut_profiles[-1]
    assert last[cut] in ("UNAVAILABLE", "TIMEOUT")
    assert all(last[n] == "OK" for n in node_ids if n != cut)
    # While cut, the others kept answering in every profile, not only the last.
    assert all(p[n] == "OK" for p in cut_profiles for n in node_ids if n != cut)
    assert seen["restored"][-1][cut] == "OK"
