"""Shared fixtures: one background event loop and one real loopback federation per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Federation, LoopThread, start_federation


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory, loop: LoopThread) -> Iterator[Federation]:
    fed = start_federation(Path(tmp_path_factory.mktemp("federation")), loop)
    yield fed
    fed.stop()
