"""End-to-end tests: credex's commands as separate processes, as operators run them."""
