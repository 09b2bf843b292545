"""A generator of labelled synthetic receipts and invoices (for demos, tests and benchmarks)."""
