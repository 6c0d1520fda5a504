"""`generate`: the subject stream, and every node's writer fed from it chunk by chunk.

The subjects and each node draw from their own seeded stream, in subject order, and nothing else
is random: the same seed and count give the same files and tables.
"""

from __future__ import annotations

import csv
import os
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from random import Random
from typing import Any, Protocol

from credex.lab.identities import subject_key
from credex.lab.synth.base import (
    MAX_AGE,
    MIN_AGE,
    REFERENCE_YEAR,
    REGIONS,
    NodeWriter,
    Subject,
    pick,
)
from credex.lab.synth.manifest import (
    FEDERATION_FILE,
    LOCATOR_FILE,
    NODE_CONFIG,
    NODES_DIR,
    PARTIAL,
    RECORDS_DB,
    SUBJECTS_FILE,
    Manifest,
    federation_toml,
    load_manifest,
    node_toml,
)
from credex.lab.synth.roster import DEFAULT_NODES, MAX_NODES, WRITERS, node_specs

MAX_SUBJECTS = 9_999_999  # subject ids are S + 7 digits
CHUNK_SUBJECTS = 5_000

_REGION_CUMULATIVE: tuple[float, ...] = tuple(
    sum(r.population_m for r in REGIONS[: i + 1]) for i in range(len(REGIONS))
)


def _subjects(seed: int, count: int) -> Iterator[Subject]:
    """The subject stream: region by population, age 14-35, reliability ~ Beta(2.5, 1.2)."""
    rng = Random(f"credex-lab/{seed}/subjects")
    total = _REGION_CUMULATIVE[-1]
    for n in range(1, count + 1):
        region = REGIONS[bisect_right(_REGION_CUMULATIVE, rng.random() * total)]
        city = pick(rng, region.cities)
        age = MIN_AGE + int(rng.random() * (MAX_AGE - MIN_AGE + 1))
        yield Subject(
            f"S{n:07d}", region.name, city, REFERENCE_YEAR - age, rng.betavariate(2.5, 1.2)
        )


def _generated_paths() -> list[Path]:
    """Every path `generate` may create, relative to its output directory."""
    paths = [Path(FEDERATION_FILE), Path(SUBJECTS_FILE), Path(LOCATOR_FILE), Path(NODES_DIR)]
    for spec in node_specs(MAX_NODES):
        node_dir = Path(NODES_DIR) / spec.id
        paths += [node_dir, node_dir / RECORDS_DB, node_dir / NODE_CONFIG]
    return paths


def _check_output(out: Path) -> None:
    """Refuse a file, or a non-empty directory that holds anything but an earlier generation."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if (out / FEDERATION_FILE).exists():
        try:
            load_manifest(out)
        except ValueError as exc:
            raise ValueError(
                f"{out} holds a federation.toml that is not a credex-lab generation ({exc}); "
                "refusing to overwrite it"
            ) from None
        return
    ours = {str(p) for p in _generated_paths()}
    ours |= {p + PARTIAL for p in ours}
    foreign = sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if str(p.relative_to(out)) not in ours
    )
    if foreign:
        raise ValueError(
            f"{out} is not empty and holds no earlier generation (no {FEDERATION_FILE}; "
            f"found {', '.join(foreign[:3])}); refusing to write into it"
        )


def generate(
    out: Path,
    subjects: int = 1000,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
    nodes: int = DEFAULT_NODES,
    everywhere: int = 0,
) -> Manifest:
    """Write a complete synthetic federation into `out` and return its manifest.

    Rewrites an earlier generation in place (records.db, node.toml, the CSVs and federation.toml
    only; keys and credex state databases beside them are left alone). Memory stays bounded:
    subjects are streamed in chunks of CHUNK_SUBJECTS and each chunk is committed.

    `everywhere`: the first that many subjects aged EVERYWHERE_MIN_AGE or more are known to
    every node, whatever their region, with records in every category: benchmarks use them
    to measure a fan-out to all nodes. Everyone else is covered as usual.
    """
    out = Path(out)
    if isinstance(subjects, bool) or not isinstance(subjects, int) or subjects < 1:
        raise ValueError(f"subjects must be a positive integer, got {subjects!r}")
    if subjects > MAX_SUBJECTS:
        raise ValueError(f"at most {MAX_SUBJECTS} subjects, got {subjects}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    specs = node_specs(nodes)
    if isinstance(everywhere, bool) or not isinstance(everywhere, int) or everywhere < 0:
        raise ValueError(f"everywhere must be a non-negative integer, got {everywhere!r}")
    _check_output(out)

    final: list[Path] = []  # files written as <name>.partial, renamed into place at the end
    writers: list[NodeWriter] = []
    try:
        for spec in specs:
            node_dir = out / NODES_DIR / spec.id
            node_dir.mkdir(parents=True, exist_ok=True)
            db = node_dir / RECORDS_DB
            _partial(db).unlink(missing_ok=True)
            final.append(db)
            writers.append(WRITERS[spec.kind or spec.id](spec, _partial(db), seed))
            config = node_dir / NODE_CONFIG
            _partial(config).write_text(node_toml(spec), encoding="utf-8")
            final.append(config)
        subjects_csv, locator_csv = out / SUBJECTS_FILE, out / LOCATOR_FILE
        final += [subjects_csv, locator_csv]
        with (
            _partial(subjects_csv).open("w", newline="", encoding="utf-8") as subjects_fh,
            _partial(locator_csv).open("w", newline="", encoding="utf-8") as locator_fh,
        ):
            subject_rows = csv.writer(subjects_fh, lineterminator="\n")
            locator_rows = csv.writer(locator_fh, lineterminator="\n")
            subject_rows.writerow(("subject_id", "region", "birth_year", "public_key"))
            locator_rows.writerow(("subject_id", "node_id", "local_id"))
            known = _stream(
                seed, subjects, writers, subject_rows, locator_rows, progress, everywhere
            )
        for writer in writers:
            writer.finish()
        writers.clear()
        for path in final:
            for suffix in ("-journal", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            os.replace(_partial(path), path)
        manifest_path = out / FEDERATION_FILE
        _partial(manifest_path).write_text(
            federation_toml(seed, subjects, specs, known), encoding="utf-8"
        )
        os.replace(_partial(manifest_path), manifest_path)
    except BaseException:
        for writer in writers:
            writer.close()
        for path in [*final, out / FEDERATION_FILE]:
            _partial(path).unlink(missing_ok=True)
        raise
    return load_manifest(out)


def _partial(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL)


class _RowWriter(Protocol):
    """The part of a csv writer that `_stream` uses."""

    def writerows(self, rows: Iterable[Iterable[Any]], /) -> None: ...


def _stream(
    seed: int,
    count: int,
    writers: list[NodeWriter],
    subject_rows: _RowWriter,
    locator_rows: _RowWriter,
    progress: Callable[[int], None] | None,
    everywhere: int = 0,
) -> list[str]:
    """Generate subjects chunk by chunk; each node decides whom it knows and writes their rows.
    Returns the ids of the subjects made known to every node."""
    known_everywhere: list[str] = []
    chunk_subjects: list[tuple[str, str, int, str]] = []
    chunk_locator: list[tuple[str, str, str]] = []
    by_city: dict[str, list[NodeWriter]] = {}  # city -> the nodes that may know its people
    for region in REGIONS:
        for city in region.cities:
            by_city[city] = [
                w
                for w in writers
                if (not w.spec.regions or region.name in w.spec.regions)
                and (not w.spec.cities or city in w.spec.cities)
            ]
    for done, s in enumerate(_subjects(seed, count), 1):
        public_key = subject_key(seed, s.id).public.raw.hex()
        chunk_subjects.append((s.id, s.region, s.birth_year, public_key))
        if len(known_everywhere) < everywhere and REFERENCE_YEAR - s.birth_year >= 25:
            known_everywhere.append(s.id)
            for writer in writers:
                chunk_locator.append((s.id, writer.spec.id, _insist(writer, s)))
        else:
            for writer in by_city[s.city]:
                local_id = writer.person(s)
                if local_id is not None:
                    chunk_locator.append((s.id, writer.spec.id, local_id))
        if len(chunk_subjects) >= CHUNK_SUBJECTS or done == count:
            subject_rows.writerows(chunk_subjects)
            locator_rows.writerows(chunk_locator)
            chunk_subjects.clear()
            chunk_locator.clear()
            for writer in writers:
                writer.flush()
            if progress is not None:
                progress(done)
    return known_everywhere


def _insist(writer: NodeWriter, s: Subject) -> str:
    """Ask the node about `s` until it knows them (each try draws anew from its stream)."""
    for _ in range(1_000_000):
        local_id = writer.person(s)
        if local_id is not None:
            return local_id
    raise RuntimeError(f"{writer.spec.id} never took {s.id}")  # pragma: no cover
