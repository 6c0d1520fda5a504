"""The credex directory: registry, consents, record locator, fan-out and profile assembly."""
