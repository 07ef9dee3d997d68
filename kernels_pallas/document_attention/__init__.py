"""document_attention op: reference (XLA), pallas (Triton), api (dispatcher)."""
