"""Unit tests: one module at a time, with real keys and real SQLite files; no server runs."""
