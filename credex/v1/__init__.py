"""Generated from protos/credex/v1 by `make protos`; never edit by hand."""
