"""Durable state: checkpoint stores (run records) and payload stores (payload and result blobs)."""
