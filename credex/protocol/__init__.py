"""The protocol kernel: vocabulary, signing, keys, consents, certificates and identities
(the redesign moves the flat kernel modules here; new kernel modules start here)."""
