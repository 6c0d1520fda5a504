"""credex lab: synthetic federations, a local launcher, scenarios and benchmarks for researchers."""
