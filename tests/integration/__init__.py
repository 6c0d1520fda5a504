"""Integration tests: the directory and nodes as real gRPC servers on loopback, in this
process (credex.testing.federation), one federation per test worker."""
