"""Scenarios: a TOML file of subjects, requesters, consents, queries and expected outcomes, run
step by step against a running federation (`credex-lab scenario FILE --dir DIR`).

Every step goes through the exchange as a real subject, requester or operator would: subjects
sign with their own keys on the public port, requesters use their certificates and keys on the
member port, and operator steps change the directory's registry. See `scenarios/` for examples
and the README for the format.
"""

from __future__ import annotations

import asyncio
import csv
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from credex.directory import admin as directory_admin
from credex.directory.config import DirectorySettings
from credex.lab.federation import (
    Federation,
    FederationError,
    directory_home,
    enroll_requester,
    wait_for_registry,
)
from credex.lab.identities import subject_key
from credex.lab.synth import REGIONS, RequesterEntry
from credex.protocol import vocab
from credex.protocol.config import ConfigError, validate_member_id
from credex.protocol.errors import CredexError, ProfileVerificationError, Reason
from credex.sdk.client import (
    AccessView,
    ConsentView,
    RequesterClient,
    SubjectClient,
    VerifiedProfile,
)

OK = "ok"
SKIPPED = "skipped"  # an earlier step this one depends on did not succeed
ERROR = "error"  # the step could not be carried out (e.g. an unknown member)
UNVERIFIED = "unverified"  # the profile arrived but its signatures do not verify
_NOT_REFUSALS = (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
OUTCOMES = frozenset(
    {OK, UNVERIFIED}
    | {r.value for r in Reason}
    | {c.name for c in grpc.StatusCode if c not in _NOT_REFUSALS}
)
MAX_VALID_DAYS = 3650.0
MAX_USES = 2**32 - 1  # the wire format's limit

# action -> (required fields, optional fields, allowed checks)
_ACTIONS: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    "grant": (
        frozenset({"subject", "requester", "purpose", "categories", "consent"}),
        frozenset({"max_uses", "valid_days"}),
        frozenset(),
    ),
    "revoke": (frozenset({"subject", "consent"}), frozenset(), frozenset()),
    "pause": (frozenset({"subject", "consent"}), frozenset(), frozenset()),
    "resume": (frozenset({"subject", "consent"}), frozenset(), frozenset()),
    "profile": (
        frozenset({"requester", "subject", "consent"}),
        frozenset({"purpose", "categories"}),
        frozenset(
            {
                "records_at_least",
                "records_at_most",
                "only_categories",
                "nodes_ok_at_least",
                "node_status",
                "scored",
                "score_band_in",
            }
        ),
    ),
    "consents": (frozenset({"subject"}), frozenset(), frozenset({"status", "uses"})),
    "access-log": (
        frozenset({"subject"}),
        frozenset(),
        frozenset({"entries_at_least", "requesters_include", "refused_at_least"}),
    ),
    "suspend": (frozenset({"member"}), frozenset(), frozenset()),
    "reinstate": (frozenset({"member"}), frozenset(), frozenset()),
}
_COMMON = frozenset({"name", "action", "expect", "check"})
_REGION_NAMES = frozenset(r.name for r in REGIONS)
_PICK_KEYS = frozenset({"categories", "known_to", "region"})


class ScenarioError(Exception):
    """The scenario file is invalid, or cannot run against this federation."""


@dataclass(frozen=True)
class SubjectPick:
    """Who a subject alias stands for: a fixed id, or the first subject (in id order, not
    taken by an earlier alias) with records in every listed category, known to every listed
    node, and living in `region`, where given."""

    alias: str
    subject_id: str = ""
    categories: tuple[str, ...] = ()
    known_to: tuple[str, ...] = ()
    region: str = ""


@dataclass(frozen=True)
class Step:
    number: int
    name: str
    action: str
    params: dict[str, Any]
    expect: str
    checks: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    subjects: tuple[SubjectPick, ...]
    requesters: tuple[RequesterEntry, ...]
    steps: tuple[Step, ...]


@dataclass
class StepResult:
    number: int
    name: str
    action: str
    expected: str
    got: str
    passed: bool
    detail: str
    failures: list[str] = field(default_factory=list)
    elapsed_ms: float = 0.0


@dataclass
class ScenarioReport:
    name: str
    path: str
    subjects: dict[str, str]
    steps: list[StepResult]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.steps)

    @property
    def failed(self) -> int:
        return sum(not s.passed for s in self.steps)


# --------------------------------------------------------------------------- loading


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; ScenarioError names the file, step and field at fault."""
    try:
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(data) - {"name", "description", "subjects", "requester", "step"}
    if unknown:
        raise ScenarioError(f"{path}: unknown top-level keys: {', '.join(sorted(unknown))}")
    name = _str(data, "name", str(path))
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{path}: 'description' must be a string")
    subjects = _subjects(data.get("subjects"), str(path))
    requesters = _requesters(data.get("requester", []), str(path))
    raw_steps = data.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(f"{path}: at least one [[step]] is required")
    steps: list[Step] = []
    granted: set[str] = set()
    aliases = {s.alias for s in subjects}
    for number, raw in enumerate(raw_steps, 1):
        where = f"{path}: step {number}"
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: must be a table")
        step = _step(number, raw, where)
        where = f"{where} ({step.name})"
        subject = step.params.get("subject")
        if subject is not None and subject not in aliases:
            raise ScenarioError(
                f"{where}: subject {subject!r} is not declared under [subjects] "
                f"(declared: {', '.join(sorted(aliases)) or 'none'})"
            )
        consent = step.params.get("consent")
        if step.action == "grant":
            consent = str(consent)
            if consent in granted:
                raise ScenarioError(f"{where}: consent name {consent!r} is already used")
            granted.add(consent)
        elif consent is not None and consent not in granted:
            raise ScenarioError(f"{where}: consent {consent!r} is not granted by an earlier step")
        steps.append(step)
    return Scenario(Path(path), name, description, subjects, requesters, tuple(steps))


def _str(table: dict[str, Any], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ScenarioError(f"{where}: '{key}' must be a non-empty string")
    return value


def _str_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ScenarioError(f"{where}: '{key}' must be a list of strings")
    return tuple(value)


def _categories(value: Any, key: str, where: str) -> tuple[str, ...]:
    names = _str_list(value, key, where)
    for name in names:
        try:
            vocab.parse_category(name)
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
    return names


def _subjects(raw: Any, where: str) -> tuple[SubjectPick, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: [subjects] must be a table of alias = id or pick")
    picks = []
    for alias, value in raw.items():
        at = f"{where}: subject {alias!r}"
        if isinstance(value, str):
            if not value.strip():
                raise ScenarioError(f"{at}: the subject id is empty")
            picks.append(SubjectPick(alias, subject_id=value))
            continue
        if not isinstance(value, dict) or not value or set(value) - _PICK_KEYS:
            raise ScenarioError(
                f"{at}: give a subject id, or a table of {', '.join(sorted(_PICK_KEYS))}"
            )
        categories = _categories(value.get("categories", []), "categories", at)
        known_to = _str_list(value.get("known_to", []), "known_to", at)
        region = value.get("region", "")
        if not isinstance(region, str):
            raise ScenarioError(f"{at}: 'region' must be a string")
        if region and region not in _REGION_NAMES:
            raise ScenarioError(
                f"{at}: unknown region {region!r} (known: {', '.join(sorted(_REGION_NAMES))})"
            )
        picks.append(SubjectPick(alias, categories=categories, known_to=known_to, region=region))
    return tuple(picks)


def _requesters(raw: Any, where: str) -> tuple[RequesterEntry, ...]:
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise ScenarioError(f"{where}: [[requester]] entries must be tables")
    entries = []
    for i, r in enumerate(raw, 1):
        at = f"{where}: [[requester]] #{i}"
        unknown = set(r) - {"id", "name", "jurisdiction"}
        if unknown:
            raise ScenarioError(f"{at}: unknown keys {', '.join(sorted(unknown))}")
        try:
            requester_id = validate_member_id(_str(r, "id", at), at)
        except ConfigError as exc:
            raise ScenarioError(str(exc)) from None
        entries.append(
            RequesterEntry(
                id=requester_id,
                name=_str(r, "name", at),
                jurisdiction=_str(r, "jurisdiction", at) if "jurisdiction" in r else "CN",
            )
        )
    return tuple(entries)


def _step(number: int, raw: dict[str, Any], where: str) -> Step:
    action = raw.get("action")
    if not isinstance(action, str) or action not in _ACTIONS:
        raise ScenarioError(f"{where}: 'action' must be one of {', '.join(_ACTIONS)}")
    required, optional, allowed_checks = _ACTIONS[action]
    missing = required - set(raw)
    if missing:
        raise ScenarioError(f"{where}: {action} needs {', '.join(sorted(missing))}")
    unknown = set(raw) - required - optional - _COMMON
    if unknown:
        raise ScenarioError(f"{where}: {action} takes no {', '.join(sorted(unknown))}")
    name = raw.get("name", f"{action} #{number}")
    if not isinstance(name, str):
        raise ScenarioError(f"{where}: 'name' must be a string")
    params: dict[str, Any] = {}
    for key in required | optional:
        if key not in raw:
            continue
        value = raw[key]
        if key == "categories":
            params[key] = _categories(value, key, where)
        elif key == "purpose":
            try:
                vocab.parse_purpose(_str(raw, key, where))
            except ValueError as exc:
                raise ScenarioError(f"{where}: {exc}") from None
            params[key] = value
        elif key == "max_uses":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_USES:
                raise ScenarioError(f"{where}: 'max_uses' must be an integer from 1 to {MAX_USES}")
            params[key] = value
        elif key == "valid_days":
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0 < value <= MAX_VALID_DAYS  # also refuses nan
            ):
                raise ScenarioError(
                    f"{where}: 'valid_days' must be a number above 0 and at most {MAX_VALID_DAYS:g}"
                )
            params[key] = float(value)
        else:
            params[key] = _str(raw, key, where)
    expect = raw.get("expect", OK)
    if not isinstance(expect, str) or expect not in OUTCOMES:
        raise ScenarioError(
            f'{where}: \'expect\' must be "ok", "unverified", a refusal reason such as '
            "CONSENT_REVOKED, or a "
            f"gRPC status such as PERMISSION_DENIED; got {expect!r}"
        )
    checks = raw.get("check", {})
    if not isinstance(checks, dict):
        raise ScenarioError(f"{where}: 'check' must be a table")
    if set(checks) - allowed_checks:
        raise ScenarioError(
            f"{where}: {action} cannot check {', '.join(sorted(set(checks) - allowed_checks))}"
            + (f" (it can check {', '.join(sorted(allowed_checks))})" if allowed_checks else "")
        )
    if checks and expect != OK:
        raise ScenarioError(f"{where}: checks apply only to a step expected to succeed")
    _check_types(checks, where)
    return Step(number, name, action, params, expect, dict(checks))


_CHECK_TYPES: dict[str, type | tuple[type, ...]] = {
    "records_at_least": int,
    "records_at_most": int,
    "nodes_ok_at_least": int,
    "entries_at_least": int,
    "refused_at_least": int,
    "scored": bool,
    "only_categories": list,
    "score_band_in": list,
    "requesters_include": list,
    "node_status": dict,
    "status": dict,
    "uses": dict,
}


def _check_types(checks: dict[str, Any], where: str) -> None:
    for key, value in checks.items():
        wanted = _CHECK_TYPES[key]
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise ScenarioError(f"{where}: check '{key}' has the wrong type")
        if isinstance(value, list):
            _str_list(value, key, where)
        if key == "only_categories":
            _categories(value, key, where)
        wanted_value = int if key == "uses" else str
        if isinstance(value, dict) and not all(
            isinstance(v, wanted_value) and not isinstance(v, bool) for v in value.values()
        ):
            raise ScenarioError(
                f"{where}: check '{key}' must map names to {wanted_value.__name__} values"
            )


# --------------------------------------------------------------------------- subjects


def resolve_subjects(scenario: Scenario, fed: Federation) -> dict[str, str]:
    """alias -> subject id, picking from the federation's subjects and record locator."""
    resolved = {p.alias: p.subject_id for p in scenario.subjects if p.subject_id}
    picks = [p for p in scenario.subjects if not p.subject_id]
    if not picks:
        return resolved
    members = {n.id for n in fed.manifest.nodes}
    for pick in picks:
        unknown = [n for n in pick.known_to if n not in members]
        if unknown:
            raise ScenarioError(
                f"subject {pick.alias!r}: no node {', '.join(unknown)} in this federation"
            )
    serving: dict[str, set[str]] = {}  # node id -> categories it serves
    for node in fed.manifest.nodes:
        serving[node.id] = set(node.categories)
    regions = {}
    with fed.manifest.subjects_csv.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            regions[row["subject_id"]] = row["region"]
    taken = set(resolved.values())
    for subject_id, node_ids in _located(fed.manifest.locator_csv):
        if not picks:
            break
        covered = set().union(*(serving.get(n, set()) for n in node_ids))
        for pick in picks:
            if (
                subject_id not in taken
                and set(pick.categories) <= covered
                and set(pick.known_to) <= set(node_ids)
                and (not pick.region or regions.get(subject_id) == pick.region)
            ):
                resolved[pick.alias] = subject_id
                taken.add(subject_id)
                picks.remove(pick)
                break
    if picks:
        wanted = "; ".join(
            f"{p.alias}: records in {', '.join(p.categories) or 'any category'}"
            + (f", known to {', '.join(p.known_to)}" if p.known_to else "")
            + (f", in {p.region}" if p.region else "")
            for p in picks
        )
        raise ScenarioError(f"no subject in {fed.root} matches {wanted}")
    return resolved


def _located(locator: Path) -> Iterator[tuple[str, list[str]]]:
    """(subject id, node ids knowing it) in subject order; the locator is written that way."""
    current, nodes = "", list[str]()
    with locator.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["subject_id"] != current:
                if current:
                    yield current, nodes
                current, nodes = row["subject_id"], []
            nodes.append(row["node_id"])
    if current:
        yield current, nodes


# --------------------------------------------------------------------------- running


class _Run:
    """State of one run: clients per subject and requester, consents granted so far."""

    def __init__(self, fed: Federation, subjects: dict[str, str], stack: AsyncExitStack) -> None:
        self.fed = fed
        self.subjects = subjects
        self.stack = stack
        self.consents: dict[str, tuple[str, str]] = {}  # name -> (consent id, purpose)
        self.suspended: set[str] = set()  # members this run suspended and has not reinstated
        self.started_at = time.time()
        self._subject_clients: dict[str, SubjectClient] = {}
        self._requester_clients: dict[str, RequesterClient] = {}

    async def set_status(self, member_id: str, status: str) -> str:
        settings = DirectorySettings(home=directory_home(self.fed.root))
        try:
            member = directory_admin.set_member_status(settings, member_id, status)
        except ConfigError as exc:
            raise ScenarioError(str(exc)) from None
        if status == "suspended":
            self.suspended.add(member.member_id)
        else:
            self.suspended.discard(member.member_id)
        return member.member_id

    async def settled(self) -> float:
        """Wait until every node has the registry change; returns the seconds waited."""
        try:
            return await wait_for_registry(self.fed.root)
        except FederationError as exc:
            raise ScenarioError(str(exc)) from None

    async def restore(self) -> None:
        """Reinstate whoever this run suspended and left suspended (failed or interrupted)."""
        if self.suspended:
            for member_id in sorted(self.suspended):
                await self.set_status(member_id, "active")
            await self.settled()

    async def subject(self, alias: str) -> SubjectClient:
        if alias not in self._subject_clients:
            subject_id = self.subjects[alias]
            client = SubjectClient(
                self.fed.public_address,
                subject_id,
                subject_key(self.fed.seed, subject_id),
                ca_pem=self.fed.ca_pem,
            )
            self._subject_clients[alias] = await self.stack.enter_async_context(client)
        return self._subject_clients[alias]

    async def requester(self, requester_id: str) -> RequesterClient:
        if requester_id not in self._requester_clients:
            try:
                home = self.fed.requester(requester_id)
            except ConfigError:
                raise ScenarioError(
                    f"requester {requester_id!r} is not a member of this federation; declare "
                    "it under [[requester]] to enroll it"
                ) from None
            client = RequesterClient(
                self.fed.directory_address,
                requester_id,
                home.signing_key(),
                tls=home.tls(),
                directory_key=home.directory_key(),
            )
            self._requester_clients[requester_id] = await self.stack.enter_async_context(client)
        return self._requester_clients[requester_id]

    def consent(self, name: str) -> tuple[str, str]:
        if name not in self.consents:
            raise _Skip(f"consent {name!r} was not granted in an earlier step")
        return self.consents[name]


class _Skip(Exception):
    """A step cannot run because an earlier one did not do what it depends on."""


async def _execute(run: _Run, step: Step) -> tuple[str, list[str]]:
    """Run one step; returns a one-line account and the failed checks."""
    p, checks = step.params, step.checks
    if step.action == "grant":
        client = await run.subject(p["subject"])
        consent_id = await client.grant(
            requester_id=p["requester"],
            purpose=vocab.parse_purpose(p["purpose"]),
            categories=[vocab.parse_category(c) for c in p["categories"]],
            max_uses=p.get("max_uses", 1),
            valid_days=p.get("valid_days", 30.0),
        )
        run.consents[p["consent"]] = (consent_id, p["purpose"])
        return f"consent {p['consent']!r} is {consent_id}", []
    if step.action in ("revoke", "pause", "resume"):
        consent_id, _ = run.consent(p["consent"])
        client = await run.subject(p["subject"])
        if step.action == "revoke":
            status = await client.revoke(consent_id)
        else:
            status = await client.pause(consent_id, paused=step.action == "pause")
        return f"consent {p['consent']!r} is now {status}", []
    if step.action == "profile":
        consent_id, purpose = run.consent(p["consent"])
        requester = await run.requester(p["requester"])
        profile = await requester.get_profile(
            subject_id=run.subjects[p["subject"]],
            consent_id=consent_id,
            purpose=vocab.parse_purpose(p.get("purpose", purpose)),
            categories=[vocab.parse_category(c) for c in p.get("categories", ())],
        )
        return _describe_profile(profile), _profile_checks(profile, checks)
    if step.action == "consents":
        client = await run.subject(p["subject"])
        views = await client.consents()
        return f"{len(views)} consents", _consent_checks(run, views, checks)
    if step.action == "access-log":
        client = await run.subject(p["subject"])
        log = await client.access_log(since=run.started_at)  # this run's requests
        entries = log.records
        refused = sum(entry.count for entry in entries if entry.outcome.startswith("refused"))
        requests = sum(entry.count for entry in entries)
        detail = f"{requests} requests during this run, {refused} refused"
        return detail, _access_checks(entries, checks)
    status = "suspended" if step.action == "suspend" else "active"
    member_id = await run.set_status(p["member"], status)
    waited = await run.settled()
    return f"{member_id} is now {status}; every node had it after {waited:.1f} s", []


def _describe_profile(profile: VerifiedProfile) -> str:
    ok = sum(n.status == "OK" for n in profile.nodes)
    text = f"{len(profile.records)} records from {ok} of {len(profile.nodes)} nodes"
    if profile.score is not None:
        text += f"; score {profile.score.value:g} ({profile.score.band})"
    others = [f"{n.node_id} {n.status} ({n.detail})" for n in profile.nodes if n.status != "OK"]
    if others:
        text += "; " + ", ".join(others)
    return text


def _profile_checks(profile: VerifiedProfile, checks: dict[str, Any]) -> list[str]:
    failures = []
    count = len(profile.records)
    if count < checks.get("records_at_least", 0):
        failures.append(f"{count} records, expected at least {checks['records_at_least']}")
    if "records_at_most" in checks and count > checks["records_at_most"]:
        failures.append(f"{count} records, expected at most {checks['records_at_most']}")
    if "only_categories" in checks:
        allowed = {vocab.category_name(vocab.parse_category(c)) for c in checks["only_categories"]}
        extra = sorted({r.category for r in profile.records} - allowed)
        if extra:
            failures.append(f"records in {', '.join(extra)}, outside {', '.join(sorted(allowed))}")
    ok = sum(n.status == "OK" for n in profile.nodes)
    if ok < checks.get("nodes_ok_at_least", 0):
        failures.append(f"{ok} nodes answered OK, expected at least {checks['nodes_ok_at_least']}")
    statuses = {n.node_id: n.status for n in profile.nodes}
    for node_id, wanted in checks.get("node_status", {}).items():
        got = statuses.get(node_id, "not asked")
        if got != wanted:
            failures.append(f"node {node_id} was {got}, expected {wanted}")
    if "scored" in checks and (profile.score is not None) != checks["scored"]:
        failures.append("profile was scored" if profile.score else "profile carried no score")
    if "score_band_in" in checks:
        band = profile.score.band if profile.score else "none"
        if band not in checks["score_band_in"]:
            failures.append(f"band {band}, expected one of {', '.join(checks['score_band_in'])}")
    return failures


def _consent_checks(run: _Run, views: list[ConsentView], checks: dict[str, Any]) -> list[str]:
    failures = []
    by_id = {v.consent_id: v for v in views}
    for check, field_name in (("status", "status"), ("uses", "uses")):
        for name, wanted in checks.get(check, {}).items():
            if name not in run.consents:
                failures.append(f"consent {name!r} was not granted in an earlier step")
                continue
            view = by_id.get(run.consents[name][0])
            got = getattr(view, field_name) if view is not None else "not listed"
            if got != wanted:
                failures.append(f"consent {name!r} has {check} {got}, expected {wanted}")
    return failures


def _access_checks(entries: list[AccessView], checks: dict[str, Any]) -> list[str]:
    failures = []
    count = sum(entry.count for entry in entries)
    if count < checks.get("entries_at_least", 0):
        failures.append(f"{count} entries, expected at least {checks['entries_at_least']}")
    refused = sum(entry.count for entry in entries if entry.outcome.startswith("refused"))
    if refused < checks.get("refused_at_least", 0):
        failures.append(f"{refused} refusals, expected at least {checks['refused_at_least']}")
    seen = {entry.requester_id for entry in entries}
    missing = [r for r in checks.get("requesters_include", ()) if r not in seen]
    if missing:
        failures.append(f"no request from {', '.join(missing)} in the log")
    return failures


def _matches(expect: str, got: str, err: CredexError | None) -> bool:
    if expect == got:
        return True
    return err is not None and expect == err.code.name


async def run_scenario(
    scenario: Scenario,
    fed: Federation,
    on_step: Callable[[StepResult], None] | None = None,
) -> ScenarioReport:
    """Run every step in order; a failed expectation is reported and the run goes on."""
    subjects = resolve_subjects(scenario, fed)
    members = {
        m.member_id
        for m in directory_admin.list_members(DirectorySettings(home=directory_home(fed.root)))
    }
    enrolled = [r for r in scenario.requesters if r.id not in members]
    for requester in enrolled:
        await enroll_requester(
            fed.root, requester, fed.public_address, directory_address=fed.directory_address
        )
    if enrolled:  # until every node knows the new members
        try:
            await wait_for_registry(fed.root)
        except FederationError as exc:
            raise ScenarioError(str(exc)) from None
    report = ScenarioReport(scenario.name, str(scenario.path), subjects, [])
    async with AsyncExitStack() as stack:
        run = _Run(fed, subjects, stack)
        stack.push_async_callback(run.restore)
        for step in scenario.steps:
            started = time.perf_counter()
            err: CredexError | None = None
            failures: list[str] = []
            try:
                detail, failures = await _execute(run, step)
                got = OK
            except CredexError as exc:
                err, got, detail = exc, exc.reason.value, exc.message
            except ProfileVerificationError as exc:  # delivered, but does not verify
                got, detail = UNVERIFIED, exc.message
            except _Skip as exc:
                got, detail = SKIPPED, str(exc)
            except ScenarioError as exc:
                got, detail = ERROR, str(exc)
            passed = (
                got not in (SKIPPED, ERROR) and _matches(step.expect, got, err) and not failures
            )
            if got == OK and step.expect != OK:
                failures = [f"expected {step.expect}, but the step succeeded"]
            result = StepResult(
                number=step.number,
                name=step.name,
                action=step.action,
                expected=step.expect,
                got=got,
                passed=passed,
                detail=detail,
                failures=failures,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            report.steps.append(result)
            if on_step is not None:
                on_step(result)
    return report


def run_scenario_file(
    path: Path, fed: Federation, on_step: Callable[[StepResult], None] | None = None
) -> ScenarioReport:
    return asyncio.run(run_scenario(load_scenario(path), fed, on_step))
