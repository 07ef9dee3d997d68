"""Shared attention kernels (forward, dq, dk/dv) of sparse_memory_attention and
document_attention."""
