"""Real federations for tests and notebooks: an in-process directory and nodes on loopback
(`federation`), the loop they run on (`loop`), a clock tests can move (`clock`), enrollment as
operators do it (`enroll`, which the lab's process federations use too) and a pytest plugin
(`pytest_plugin`) with the fixtures. Needs the `server` extra; the plugin needs pytest."""
