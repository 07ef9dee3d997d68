"""The content tier stays in host memory; per question only the selected documents' chunks move
to device memory, however large the bank.

Two views of the same computation: XLA:CPU's compiled module and memory analysis (host and device
share RAM on CPU, but parameters keep their memory space, S(5) = host, and buffer sizes are real),
and the GPU lowering (jax.export for "cuda", no GPU needed), whose host->device copies are explicit
`annotate_device_placement` ops.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import pytest
from jax import export

import msa_jax
from msa_jax.memory.parallel import MemoryPlacement, memory_mesh
from msa_jax.model.router import selected_chunks
from tests.parallel import common

BATCH, TOP_K = 2, 4
SIZES = {"small": 24, "large": 96}  # documents; same max_doc_chunks, 4x the chunks


@pytest.fixture(scope="module")
def placement():
    return MemoryPlacement(memory_mesh(1, jax.devices()[:2]))


@pytest.fixture(scope="module")
def views(placement):
    return {name: placement.view(common.synthetic_bank(n)) for name, n in SIZES.items()}


def fetch_step(placement):
    """One router layer's fetch for BATCH rows of TOP_K selected documents."""

    def step(view, ids, valid):
        idx, _ = selected_chunks(ids, valid, view.doc_chunk_offset, view.doc_num_chunks,
                                 view.max_doc_chunks)
        return placement.fetch(view, 0, idx)

    return jax.jit(step)


def selection():
    ids = jnp.arange(BATCH * TOP_K, dtype=jnp.int32).reshape(BATCH, TOP_K)
    return ids, jnp.ones((BATCH, TOP_K), bool)


def entry_layout(compiled) -> list[str]:
    """Parameter layouts of the compiled entry computation, e.g. 'f32[2,256,2,16]{3,2,1,0:S(5)}'."""
    head = compiled.as_text().split("entry_computation_layout={(", 1)[1].split(")->", 1)[0]
    return re.findall(r"\w+\[[\d,]*\]\{[^}]*\}", head)


def test_content_tier_is_a_host_parameter(placement, views):
    view = views["small"]
    compiled = fetch_step(placement).lower(view, *selection()).compile()
    layouts = entry_layout(compiled)
    rows, k, h = view.content_k[0].shape
    shard = f"f32[{rows // placement.num_shards},{k},{h}]"  # the compiled module is per device
    host = [p for p in layouts if p.endswith(":S(5)}")]
    assert len(host) == 2 and all(p.startswith(shard) for p in host), layouts  # content_k, _v
    assert all(x.sharding.memory_kind == "device" for x in view.routing_keys)


def test_device_bytes_do_not_grow_with_the_bank(placement, views):
    # memory_analysis() counts one device (one memory shard of the two)
    stats = {name: fetch_step(placement).lower(v, *selection()).compile().memory_analysis()
             for name, v in views.items()}
    small, large = stats["small"], stats["large"]
    view = views["small"]
    _, k, h = view.content_k[0].shape
    fetched = 2 * BATCH * TOP_K * view.max_doc_chunks * k * h * 4  # keys and values, float32
    assert small.output_size_in_bytes - fetched < 64  # (+ the output tuple's pointers)
    assert large.output_size_in_bytes == small.output_size_in_bytes
    assert large.temp_size_in_bytes == small.temp_size_in_bytes  # no copy of the tier
    assert small.temp_size_in_bytes <= 2 * fetched  # only windows of selected documents
    grew = large.argument_size_in_bytes - small.argument_size_in_bytes  # per device (shard)
    tier_grew = 2 * (views["large"].content_k[0].nbytes - view.content_k[0].nbytes)
    tier_grew //= placement.num_shards
    assert grew >= tier_grew  # the tier itself is an argument (host memory), never a temp


def test_a_bfloat16_content_tier_is_not_copied(placement):
    """XLA:CPU computed a loop's bfloat16 window updates in float32 and converted the whole
    tier shard to float32 for them, on every question (CPU meshes slice without the loop:
    host_fetch._own_windows)."""
    views = {name: placement.view(common.synthetic_bank(n, dtype="bfloat16"))
             for name, n in SIZES.items()}
    assert views["small"].content_k[0].dtype == "bfloat16"
    stats = {name: fetch_step(placement).lower(v, *selection()).compile().memory_analysis()
             for name, v in views.items()}
    assert stats["large"].temp_size_in_bytes == stats["small"].temp_size_in_bytes  # 4x the tier


def route_step(placement):
    """One router layer's routing for a question batch: select (sharded scoring and top-k),
    then fetch, as a GPU program moves windows (only the owned ones, in a loop)."""
    cfg = msa_jax.preset("tiny-msa")
    fetch = dataclasses.replace(placement.fetch, window_loop=True)

    def step(view, qr, mask):
        info = placement.select(cfg, view, 0, qr, mask)
        idx, _ = selected_chunks(info.doc_ids, info.valid, view.doc_chunk_offset,
                                 view.doc_num_chunks, view.max_doc_chunks)
        return fetch(view, 0, idx)

    return jax.jit(step)


def device_moves(view, placement) -> list[str]:
    """Shapes moved to device memory by the GPU lowering of a routing step."""
    qr, mask = common.integer_queries(batch=BATCH)
    exported = export.export(route_step(placement), platforms=["cuda"])(view, qr, mask)
    text = exported.mlir_module()
    host_args = re.findall(r'mhlo\.memory_kind = "pinned_host"', text)
    assert len(host_args) == 2, "content_k and content_v are pinned-host arguments"
    return re.findall(r'annotate_device_placement\(%\w+\) \{[^}]*_xla_buffer_placement = '
                      r'"device"\}[^:]*: \((tensor<[^>]*>)\)', text)


def test_gpu_lowering_moves_only_document_windows(placement, views):
    moves = {name: device_moves(v, placement) for name, v in views.items()}
    view = views["small"]
    _, k, h = view.content_k[0].shape
    window = f"tensor<{view.max_doc_chunks}x{k}x{h}xf32>"
    assert moves["small"] == [window, window], moves  # one window of keys, one of values
    assert moves["large"] == moves["small"]
