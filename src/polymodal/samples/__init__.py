"""Sample documents and a generator of labelled synthetic receipts and invoices (for demos, tests, benchmarks)."""
