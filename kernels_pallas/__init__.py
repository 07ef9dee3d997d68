"""MSA kernels: routing scan, sparse memory attention, document-wise attention (SPEC.md).

Each op has an XLA reference (default on CPU, test oracle) and Pallas Triton kernels (default on
GPU); pick with implementation="xla" | "pallas" | "auto", and interpret=True to run Pallas on CPU.
"""

from kernels_pallas.common import INVALID_TIME
from kernels_pallas.document_attention.api import document_attention
from kernels_pallas.routing.api import routing_chunk_scores
from kernels_pallas.routing.api import routing_doc_scores
from kernels_pallas.routing.api import topk_documents
from kernels_pallas.sparse_memory_attention.api import sparse_memory_attention

__all__ = [
    "INVALID_TIME",
    "document_attention",
    "routing_chunk_scores",
    "routing_doc_scores",
    "sparse_memory_attention",
    "topk_documents",
]
