"""One module per synthetic agency kind: its tables, its adapters and its writer."""
