"""credex: shared kernel and client SDK of the federated credit-information exchange."""

__version__ = "0.1.0"
