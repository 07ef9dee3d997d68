"""routing op: reference (XLA), pallas (Triton), api (dispatcher)."""
