"""The credex node: serves an operator's own records to consented, directory-signed queries."""
