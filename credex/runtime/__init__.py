"""The server runtime shared by the directory and the nodes (the redesign moves handlers,
serving, group commit, health, metrics and logs here; new runtime modules start here)."""
