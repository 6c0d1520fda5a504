"""Integration tests: the directory and nodes as real gRPC servers on loopback, in this
process (tests/harness.py), one federation per test worker."""
