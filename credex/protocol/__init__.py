"""The protocol kernel every party shares: vocabulary, signed envelopes, keys, consents and
tickets, the error catalog, certificates and identities, channels, clock and config reading.
Needs grpcio, protobuf and cryptography only."""
