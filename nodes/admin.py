"""Operator actions on a node: create its key, install the directory key, check adapters."""

from __future__ import annotations

import shutil
from pathlib import Path

from credex.db import open_database, open_readonly
from credex.freshness import NonceStore
from credex.keys import SigningKey, load_public
from nodes.adapters import RecordSource
from nodes.config import NodeConfig, load_node_config


def check_node(config: NodeConfig) -> RecordSource:
    """Open the operator database read-only and run every adapter once."""
    source = RecordSource(open_readonly(config.records_db), config.adapters)
    source.validate()
    return source


def init_node(
    config_path: Path, directory_key: Path | None = None
) -> tuple[NodeConfig, SigningKey]:
    """Create the node's signing key (if missing) and state database; install the directory's
    public key if given; fail early on a broken adapter."""
    config = load_node_config(config_path)
    check_node(config)
    if config.signing_key.exists():
        key = SigningKey.load(config.signing_key)
    else:
        key = SigningKey.generate()
        key.save(config.signing_key)
    if directory_key is not None:
        load_public(directory_key)  # refuse to install something that is not a key
        if directory_key.resolve() != config.directory_key.resolve():
            shutil.copyfile(directory_key, config.directory_key)
    db = open_database(config.state_db)
    NonceStore(db)
    db.conn.close()
    return config, key
