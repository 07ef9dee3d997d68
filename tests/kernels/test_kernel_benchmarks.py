"""The kernel benchmarks run on CPU at tiny sizes (so they do not rot), and the roofline arithmetic
agrees with the storage figures of docs (msa.md §3: 576 B of routing tier per memory token)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "kernels")


def load(name):
    sys.path.insert(0, os.path.abspath(BENCH))
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def test_roofline_matches_storage_accounting():
    roofline = load("roofline")
    m = roofline.Model()
    cost = roofline.routing_scan(m, 1e8, query_tokens=32)
    assert cost["bytes"] == pytest.approx(576 * 1e8)  # 57.6 GB routing tier at 100M
    h100 = roofline.DEVICES[0]
    assert roofline.floor_seconds(cost, h100) == pytest.approx(57.6e9 / 3.35e12)
    assert "| 1e+08 | routing scan | 57.6 GB |" in roofline.table()


def test_gpu_bench_runs_on_cpu(capsys):
    load("gpu_bench").main(
        [
            "--op=all",
            "--implementation=xla",
            "--memory_tokens=2e4",
            "--query_tokens=2",
            "--packed_tokens=64",
            "--doc_tokens=32",
            "--iters=1",
            "--dtype=float32",
            "--hbm_gbs=20",
            "--tflops=0.1",
        ]
    )
    out = capsys.readouterr().out
    for op in ("routing", "sparse_attention", "document_attention"):
        assert f"{op}" in out and "of floor" in out


def test_cpu_routing_bandwidth_runs(capsys, monkeypatch):
    module = load("cpu_routing_bandwidth")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "cpu_routing_bandwidth",
            "--memory_tokens=2e5",
            "--repeats=1",
            "--block_chunks=256",
            "--probe_mb=8",
            "--gemm=64",
        ],
    )
    figures = module.main()
    out = capsys.readouterr().out
    assert "fraction of roofline" in out and "72 routing tokens in a row of 128, scanned as 72 query rows" in out
    assert figures["floor_s"] > 0 and figures["scan_s"] > 0
