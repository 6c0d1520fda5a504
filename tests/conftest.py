"""The fixtures of credex.testing: one background event loop and one real loopback federation
per test process, and a moved clock kept inside the test that moved it."""

pytest_plugins = ["credex.testing.pytest_plugin"]
