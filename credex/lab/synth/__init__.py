"""A seeded, reproducible synthetic federation: young subjects, and agency nodes that each keep
their own SQLite database, schema and identifiers, so cross-agency queries can be tested at scale.

Layout written by `generate(out)`:

    out/federation.toml                 seed, subject count, nodes, requesters (see `load_manifest`)
    out/subjects.csv                    subject_id,region,birth_year,public_key
    out/locator.csv                     subject_id,node_id,local_id (the directory's record locator)
    out/nodes/<node_id>/records.db      the operator's own database
    out/nodes/<node_id>/node.toml       the node's credex config with its adapters

Subjects and every node draw from their own `random.Random` stream, consumed in subject order, so
the same seed and count give byte-identical CSV/TOML files and identical tables, and the first N
subjects of a larger generation are the same as those of a generation of N.

Each agency kind is one module of `agencies` (its tables, adapters and writer); `base` holds what
they share, `roster` which nodes a federation has, `manifest` the files on disk, `generation` the
driver.
"""

from credex.lab.synth.base import (
    CATEGORIES,
    FIRST_DAY,
    LAST_DAY,
    MAX_RECORDS_PER_CATEGORY,
    REGIONS,
)
from credex.lab.synth.generation import generate
from credex.lab.synth.manifest import (
    Manifest,
    NodeEntry,
    RequesterEntry,
    load_manifest,
    node_toml,
)
from credex.lab.synth.roster import (
    DEFAULT_NODES,
    MAX_NODES,
    NODE_IDS,
    NODE_SPECS,
    node_spec,
    node_specs,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_NODES",
    "FIRST_DAY",
    "LAST_DAY",
    "MAX_NODES",
    "MAX_RECORDS_PER_CATEGORY",
    "NODE_IDS",
    "NODE_SPECS",
    "REGIONS",
    "Manifest",
    "NodeEntry",
    "RequesterEntry",
    "generate",
    "load_manifest",
    "node_spec",
    "node_specs",
    "node_toml",
]
