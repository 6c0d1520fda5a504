"""The requester and subject SDK (the redesign moves client, member home, enrollment and
rotation here; new SDK modules start here)."""
