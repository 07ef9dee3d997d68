"""Golden outputs of the reference MSA code (../shared/golden and $MSA_GOLDEN_DIRS).

Every array a fixture's manifest lists is compared (a coverage test fails on one we do not
produce). Tolerances come from the fixture's manifest: |got - want| <= atol + rtol |want|.
Masked scores (-inf or <= -1e30) must be masked here too. Top-k ids are compared tie-aware
(assert_topk_ids: only a genuine tie of the reference's scores at the k-th place may differ).
"""

import functools
import os

import numpy as np
import pytest

from tests.conftest import require_golden_dirs
from tests.golden.harness import Fixture

FIXTURES = require_golden_dirs()  # fails under $CI when there are none

STAGES = ("stage1", "stage2", "routing_variants", "decode", "decode_extras", "train")
# Upstream losses this port does not implement; the fixture must not exercise them.
NOT_PORTED = {
    "train/answer_loss": "answer loss of QA samples (no QA sample in the fixture)",
    "train/reconstruction_loss": "reconstruction loss (recloss_weight 0, as in MSA-4B)",
}
MASKED = -1e30


@functools.lru_cache(maxsize=None)
def fixture(path: str) -> Fixture:
    return Fixture(path)


@functools.lru_cache(maxsize=None)
def produced(path: str, stage: str) -> dict:
    return getattr(fixture(path), stage)()


def stage_of(fx: Fixture, file: str) -> str:
    return {v: k for k, v in fx.manifest["files"].items()}[file]


def tolerance(fx: Fixture, key: str) -> tuple[float, float] | None:
    """(atol, rtol) of the manifest's group for this array; None = compare exactly."""
    tol = fx.manifest["tolerances"]
    name = key.split("/", 1)[1]
    leaf = name.split(".")[-1]
    if key.startswith("train/") and leaf.endswith("loss"):
        group = "losses"
    elif leaf in ("routing_q", "chunk_scores", "doc_scores", "topk_scores"):
        group = "routing_q_chunk_doc_topk_scores"
    elif leaf in ("kv_k", "kv_v"):
        group = "stage2_kv_cache"
    elif leaf in ("hidden_states", "last_hidden_state") and not key.startswith("stage1/"):
        group = "hidden_states"
    elif "logits" in leaf:
        group = "logits"
    elif key.startswith("stage1/") and leaf in ("pooled_k", "pooled_v", "pooled_router_k",
                                                 "prefix_k", "prefix_v", "last_hidden_state"):
        group = "stage1_pooled_prefix_and_hidden"
    else:
        return None
    return tol[group]["atol"], tol[group]["rtol"]


def rows_to_compare(fx: Fixture, key: str, want: np.ndarray) -> np.ndarray | None:
    """Row mask for arrays whose padding rows are meaningless (fixture README)."""
    mask = np.asarray(fx.inputs["stage2"]["attention_mask"], bool)
    if key == "stage2/logits" or key.endswith(".routing_q"):
        return mask
    if key == "stage2/hidden_states":
        return np.broadcast_to(mask, want.shape[:3])
    if key == "train/last_hidden_state":
        return np.asarray(fx.inputs["train"]["attention_mask"], bool)
    return None


def assert_close(fx: Fixture, key: str, got: np.ndarray, want: np.ndarray):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{key}: shape {got.shape}, want {want.shape}"
    tol = tolerance(fx, key)
    if tol is None:
        np.testing.assert_array_equal(got.astype(want.dtype), want, err_msg=key)
        return
    rows = rows_to_compare(fx, key, want)
    if rows is not None:
        got, want = got[rows], want[rows]
    got, want = got.astype(np.float64), want.astype(np.float64)
    masked_want = ~np.isfinite(want) | (want <= MASKED)
    masked_got = ~np.isfinite(got) | (got <= MASKED)
    np.testing.assert_array_equal(masked_got, masked_want, err_msg=f"{key}: masked entries")
    atol, rtol = tol
    got, want = got[~masked_want], want[~masked_want]
    diff = np.abs(got - want)
    bound = atol + rtol * np.abs(want)
    worst = float(np.max(diff - bound)) if diff.size else -1.0
    assert worst <= 0, f"{key}: max |diff| {diff.max():.3g} exceeds atol {atol} + rtol {rtol}"


def assert_topk_ids(fx: Fixture, key: str, got_ids, want_ids, want_doc_scores,
                    well_defined=None):
    """Same ids as sets per row, except for a genuine tie at the k-th place: every id that only
    one side selected must have a *reference* score (want_doc_scores [B, M], looked up at that id)
    within the tie tolerance of the reference's k-th score. The tie tolerance is the manifest's
    routing-score tolerance, atol + rtol |k-th score|: this port's scores are held to it, so two
    reference scores closer than that may be ordered either way by a correct port."""
    atol, rtol = tolerance(fx, key.replace("topk_doc_ids", "topk_scores"))
    for b in range(want_ids.shape[0]):
        if well_defined is not None and not well_defined[b]:
            continue
        got, want = got_ids[b].tolist(), want_ids[b].tolist()
        assert len(set(got)) == len(got), f"{key} row {b}: a document selected twice: {got}"
        if set(got) == set(want):
            continue
        ref = np.asarray(want_doc_scores[b], np.float64)
        kth = ref[want].min()
        tie = atol + rtol * abs(kth)
        for doc in sorted(set(got) ^ set(want)):
            assert abs(ref[doc] - kth) <= tie, (
                f"{key} row {b}: ids {got}, reference {want}: document {doc} has reference score "
                f"{ref[doc]:.7g}, the k-th is {kth:.7g}: not a tie within {tie:.3g}")


def cases():
    out = []
    for path in FIXTURES:
        fx = fixture(path)
        for a in fx.arrays():
            out.append(pytest.param(path, f"{stage_of(fx, a['file'])}/{a['key']}",
                                    id=f"{fx.name}:{stage_of(fx, a['file'])}/{a['key']}"))
    return out


@pytest.mark.parametrize("path,key", cases())
def test_golden_array(path, key):
    fx = fixture(path)
    stage, name = key.split("/", 1)
    file = fx.manifest["files"][stage]
    want = fx.want(f"{os.path.splitext(file)[0]}/{name}")
    if key in NOT_PORTED:
        assert np.all(want == 0), f"{key} is nonzero here but not ported: {NOT_PORTED[key]}"
        return
    got_all = produced(path, stage)
    assert key in got_all, f"this port produces no {key}"
    got = got_all[key]
    if name.endswith("topk_doc_ids"):
        stem, prefix = os.path.splitext(file)[0], name[:-len("topk_doc_ids")]
        listed = {a["key"] for a in fx.arrays()}
        well = fx.want(f"{stem}/{prefix}topk_well_defined") \
            if f"{prefix}topk_well_defined" in listed else None
        assert got.shape == want.shape
        assert_topk_ids(fx, key, got, want, fx.want(f"{stem}/{prefix}doc_scores"), well)
        return
    if name.endswith("topk_scores"):
        well_key = name[:-len("topk_scores")] + "topk_well_defined"
        if well_key in {a["key"] for a in fx.arrays()}:
            ok = fx.want(f"{os.path.splitext(file)[0]}/{well_key}")
            got, want = got[ok], want[ok]
    assert_close(fx, key, got, want)


@pytest.mark.parametrize("path", FIXTURES, ids=[os.path.basename(p) for p in FIXTURES])
def test_jitted_decode_loop_gives_the_greedy_tokens(path):
    fx = fixture(path)
    # Exact tokens from two different computations are sound only because every step's logits
    # are held to the manifest's tolerance (test_golden_array) and the reference's top-1 / top-2
    # margin is wider than twice that, so no logits within tolerance pick another token.
    atol, rtol = fx.manifest["tolerances"]["logits"].values()
    stem = os.path.splitext(fx.manifest["files"]["decode"])[0]
    big = max(float(np.abs(fx.want(f"{stem}/{a['key']}")).max()) for a in fx.arrays()
              if stage_of(fx, a["file"]) == "decode" and "logits" in a["key"])
    assert fx.manifest["checks"]["decode_min_argmax_margin"] > 2 * (atol + rtol * big)
    got = produced(path, "decode")["decode/loop_tokens"]
    np.testing.assert_array_equal(got, fx.want("decode/tokens"))


@pytest.mark.parametrize("path", FIXTURES, ids=[os.path.basename(p) for p in FIXTURES])
def test_inference_score_rule_matches_fixture(path):
    fx = fixture(path)
    cfg, _ = fx.model
    mode = fx.settings["inference_score_mode"]
    assert cfg.msa.inference_cosine == (mode == "cosine"), mode


def test_topk_ids_accept_only_a_reference_tie_at_the_kth_place():
    """assert_topk_ids on hand-made rows (k = 3): the reference's own scores decide."""
    fx = type("Fx", (), {"manifest": {"tolerances": {
        "routing_q_chunk_doc_topk_scores": {"atol": 5e-5, "rtol": 1e-4}}}})()
    ref = np.array([[0.9, 0.5, 0.3, 0.3 + 1e-6, 0.1]])  # [B=1, M=5]: 2 and 3 tie at the k-th
    want = np.array([[0, 1, 2]])
    key = "stage2/layer2.topk_doc_ids"
    assert_topk_ids(fx, key, np.array([[1, 0, 3]]), want, ref)  # the tie, either way
    with pytest.raises(AssertionError, match="document 4 has reference score 0.1"):
        assert_topk_ids(fx, key, np.array([[0, 1, 4]]), want, ref)  # not a tie
    with pytest.raises(AssertionError, match="document 1 has reference score 0.5"):
        assert_topk_ids(fx, key, np.array([[0, 2, 3]]), want, ref)  # drops a non-tied one
    with pytest.raises(AssertionError, match="selected twice"):
        assert_topk_ids(fx, key, np.array([[0, 1, 1]]), want, ref)
    assert_topk_ids(fx, key, np.array([[0, 1, 4]]), want, ref, well_defined=[False])
