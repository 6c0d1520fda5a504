"""pytest fixtures for a real loopback federation: one event loop and one federation per test
process (each pytest-xdist worker has its own), and a guard that keeps a moved clock inside
the test that moved it. Enable with `pytest_plugins = ["credex.testing.pytest_plugin"]`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from credex.runtime.serving import STOP_WITH_ENV
from credex.testing.federation import Federation, start_federation
from credex.testing.loop import LoopThread


def pytest_configure(config: pytest.Config) -> None:
    """Every server a test starts, however it starts it, stops when this test run ends, even
    by SIGKILL."""
    os.environ[STOP_WITH_ENV] = str(os.getpid())


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory, loop: LoopThread) -> Iterator[Federation]:
    # A 2 s per-node deadline: generous for fsync-bound commits on a busy machine.
    fed = start_federation(Path(tmp_path_factory.mktemp("federation")), loop, deadline_s=2.0)
    yield fed
    fed.stop()


@pytest.fixture(autouse=True)
def clock_comes_back(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that moves the shared federation's clock moves it for itself only
    (`Federation.clock_moved`): one that leaves it moved fails, and the clock is put back."""
    yield
    if "federation" in request.fixturenames:
        fed: Federation = request.getfixturevalue("federation")
        moved, fed.clock.offset = fed.clock.offset, 0.0
        assert moved == 0.0, f"the test left the federation's clock moved by {moved:+g} s"
