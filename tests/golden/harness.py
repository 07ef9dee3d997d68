"""Runs this port's pipeline on a golden fixture's inputs and returns outputs keyed like the
fixture's manifest ("file/key"). Every setting comes from the fixture's own files."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from kernels_pallas import routing_chunk_scores
from msa_jax.config import ModelConfig
from msa_jax.convert import load_pretrained
from msa_jax.inference.generate import sample_tokens
from msa_jax.inference.memory_generate import CONTEXT, ROUTING, QueryRow, prefill_rows
from msa_jax.inference.sampling import Sampling
from msa_jax.memory.encoder import DocInput, encode_documents
from msa_jax.model.cache import step_times
from msa_jax.model.decode import forward_step, logits_of
from msa_jax.model.encode import encode_block
from msa_jax.model.query import local_select, prefill_with_memory, prefix_cache
from msa_jax.model.router import document_scores, reduce_mask, routing_query
from msa_jax.model.train_forward import TrainBatch, train_forward
from msa_jax.training.losses import lm_loss, routing_loss


# jitted once here (eager op-by-op dispatch of whole forwards is slow on CPU)
_step = jax.jit(forward_step, static_argnames=("cfg", "route", "collect_hidden"))
_train = jax.jit(train_forward, static_argnames=("cfg", "num_docs"))


class Fixture:
    def __init__(self, path: str, implementation: str = "xla", interpret: bool = False):
        self.path = path
        self.name = os.path.basename(path)
        with open(os.path.join(path, "manifest.json")) as f:
            self.manifest = json.load(f)
        with open(os.path.join(path, self.manifest["files"]["inputs"])) as f:
            self.inputs = json.load(f)
        self.settings = self.manifest["settings"]
        self.impl = dict(kernel_implementation=implementation, kernel_interpret=interpret)

    def want(self, file_key: str) -> np.ndarray:
        file, key = file_key.split("/", 1)
        return self._file(file)[key]

    @functools.lru_cache(maxsize=None)
    def _file(self, name: str) -> dict:
        return load_file(os.path.join(self.path, f"{name}.safetensors"))

    def arrays(self) -> list[dict]:
        return self.manifest["arrays"]

    # -- model -----------------------------------------------------------------------------------
    @functools.cached_property
    def model(self) -> tuple[ModelConfig, dict]:
        s = self.settings
        cfg, params = load_pretrained(os.path.join(self.path, self.manifest["model"]["path"]),
                                      **self.impl)
        assert list(cfg.msa.router_layers) == s["router_layers"]
        assert cfg.msa.pooling_size == s["pooling_kernel_size"]
        msa = dataclasses.replace(
            cfg.msa, prefix_token_ids=tuple(self.inputs["special_tokens"]["template_head"]),
            top_k_docs=s["inference_top_k"], query_position_offset=s["query_position_offset"],
            last_query_rule="upstream")  # the reference's rule for query_reduce "last"
        return cfg.replace(msa=msa), params

    def train_model(self):
        cfg, params = self.model
        return cfg.replace(msa=dataclasses.replace(cfg.msa,
                                                   top_k_docs=self.settings["training_top_k"])), params

    # -- stage 1 ---------------------------------------------------------------------------------
    @functools.cached_property
    def bank(self):
        cfg, params = self.model
        docs = [DocInput(str(i), tuple(t)) for i, t in enumerate(self.inputs["memory"]["docs"])]
        return encode_documents(cfg, params, docs, show_progress=False)

    def stage1(self) -> dict[str, np.ndarray]:
        cfg, params = self.model
        bank = self.bank
        out = {"chunk_doc_id": bank.chunk_doc, "doc_num_chunks": np.asarray(bank.doc_num_chunks),
               "doc_chunk_offset": np.asarray(bank.doc_chunk_offset)}
        p = cfg.msa.pooling_size
        idx = np.concatenate([np.arange(n) for n in bank.doc_num_chunks])
        out["chunk_index_in_doc"] = idx
        lengths = np.asarray([len(t) for t in bank.doc_tokens])
        out["chunk_num_tokens"] = np.minimum(p, np.repeat(lengths, bank.doc_num_chunks) - idx * p)
        for r, layer in enumerate(cfg.msa.router_layers):
            out[f"layer{layer}.pooled_k"] = bank.tier("content_k")[r]
            out[f"layer{layer}.pooled_v"] = bank.tier("content_v")[r]
            out[f"layer{layer}.pooled_router_k"] = bank.tier("routing_keys")[r]
        for layer in range(cfg.num_layers):
            out[f"layer{layer}.prefix_k"] = bank.prefix_k[layer]
            out[f"layer{layer}.prefix_v"] = bank.prefix_v[layer]
        for b, block in enumerate(self.inputs["stage1"]["blocks"]):
            out[f"block{b}.last_hidden_state"] = self._block_hidden(block)
        return {f"stage1/{k}": v for k, v in out.items()}

    def _block_hidden(self, block: dict) -> np.ndarray:
        """The fixture's own stage-1 block (template head included) through encode_block."""
        cfg, params = self.model
        row = lambda k: jnp.asarray([block[k]], jnp.int32)  # noqa: E731
        roles = np.asarray(block["doc_ids"])
        segment = np.where(np.asarray(block["attention_mask"]) > 0, np.maximum(roles, 0), -1)
        chunk = np.full(roles.shape, -1)
        _, h = encode_block(cfg, params, row("input_ids"), row("position_ids"),
                            jnp.asarray(segment[None], jnp.int32),
                            jnp.asarray(chunk[None], jnp.int32), 1, collect_hidden=True)
        return np.asarray(h[0])

    # -- stage 2 ---------------------------------------------------------------------------------
    def _query(self):
        q = self.inputs["stage2"]
        arr = lambda k: jnp.asarray(q[k], jnp.int32)  # noqa: E731
        return arr("input_ids"), arr("attention_mask"), arr("position_ids"), arr("doc_ids")

    @functools.cached_property
    def stage2_run(self):
        cfg, params = self.model
        bank, view = self.bank, self.bank.view()
        tokens, mask, positions, roles = self._query()
        routing = (roles == 0) & (mask > 0)
        captured = {}

        def select(cfg_, memory, r, qr, rmask):  # records the pipeline's own routing queries
            captured[r] = qr
            return local_select(cfg_, memory, r, qr, rmask)

        b, t = tokens.shape
        cache = prefix_cache(cfg, jnp.asarray(bank.prefix_k), jnp.asarray(bank.prefix_v), b,
                             bank.prefix_k.shape[1] + t + 32)
        k_time, q_time = step_times(cache.index, mask)
        h, cache, (infos, hidden) = prefill_with_memory(
            cfg, params, view, cache, tokens, positions, k_time, q_time, routing, select=select,
            keep_doc_scores=True, collect_hidden=True)
        return dict(h=h, cache=cache, infos=infos, hidden=hidden, qr=captured, routing=routing)

    def stage2(self) -> dict[str, np.ndarray]:
        cfg, params = self.model
        run, bank = self.stage2_run, self.bank
        m = bank.num_slots
        out = {"routing_query_mask": np.asarray(run["routing"]),
               "logits": np.asarray(logits_of(cfg, params, run["h"])),
               "hidden_states": np.stack([np.asarray(x) for x in run["hidden"]])}
        cosine = cfg.msa.inference_cosine
        for r, layer in enumerate(cfg.msa.router_layers):
            info = run["infos"][layer]
            qr = routing_query(run["qr"][r], cfg.head_dim, cosine)
            out[f"layer{layer}.routing_q"] = np.asarray(qr)
            mask, reduce = reduce_mask(cfg.msa, run["routing"])
            out[f"layer{layer}.chunk_scores"] = np.asarray(routing_chunk_scores(
                qr, mask, jnp.asarray(bank.tier("routing_keys")[r]),
                similarity="cosine" if cosine else "dot", scale=1.0,
                head_reduce=cfg.msa.head_reduce, query_reduce=reduce))
            out[f"layer{layer}.doc_scores"] = np.asarray(info.doc_scores)[:, :m]
            out[f"layer{layer}.topk_doc_ids"] = np.asarray(info.doc_ids)
            out[f"layer{layer}.topk_scores"] = np.asarray(info.scores)
            out[f"layer{layer}.num_selected_chunks"] = np.asarray(
                run["cache"].layers[layer].memory.valid).sum(1)
        out.update(self._kv_layout())
        return {f"stage2/{k}": v for k, v in out.items()}

    def _kv_layout(self) -> dict[str, np.ndarray]:
        """Our cache in the reference's layout: per row [prefix ; memory chunks ; query],
        right-aligned to the fixture's S_max."""
        cfg, _ = self.model
        cache = self.stage2_run["cache"]
        time = np.asarray(cache.time)
        n = int(cache.index)
        out = {}
        for layer, lc in enumerate(cache.layers):
            s_max = self.want(f"stage2/layer{layer}.kv_k").shape[1]
            rows_k, rows_v = [], []
            for b in range(time.shape[0]):
                local = time[b, :n] < np.iinfo(np.int32).max
                ks, vs = [], []
                pf = self.bank.prefix_k.shape[1]
                ks.append(np.asarray(lc.k[b, :pf]))
                vs.append(np.asarray(lc.v[b, :pf]))
                if lc.memory is not None:
                    valid = np.asarray(lc.memory.valid[b])
                    ks.append(np.asarray(lc.memory.content_k[b])[valid])
                    vs.append(np.asarray(lc.memory.content_v[b])[valid])
                ks.append(np.asarray(lc.k[b, pf:n])[local[pf:]])
                vs.append(np.asarray(lc.v[b, pf:n])[local[pf:]])
                rows_k.append(np.concatenate(ks))
                rows_v.append(np.concatenate(vs))
            lengths = np.asarray([len(r) for r in rows_k])
            k_out = np.zeros((len(rows_k), s_max) + rows_k[0].shape[1:], np.float32)
            v_out = np.zeros_like(k_out)
            mask = np.zeros((len(rows_k), s_max), bool)
            for b, (rk, rv) in enumerate(zip(rows_k, rows_v)):
                k_out[b, s_max - len(rk):], v_out[b, s_max - len(rv):] = rk, rv
                mask[b, s_max - len(rk):] = True
            out.update({f"layer{layer}.kv_k": k_out, f"layer{layer}.kv_v": v_out,
                        f"layer{layer}.kv_mask": mask, f"layer{layer}.kv_lengths": lengths})
        return out

    # -- routing variants ------------------------------------------------------------------------
    def routing_variants(self) -> dict[str, np.ndarray]:
        cfg, _ = self.model
        run, bank, view = self.stage2_run, self.bank, self.bank.view()
        out = {}
        names = {a["key"].split(".")[1] for a in self.arrays()
                 if a["file"] == self.manifest["files"]["routing_variants"]}
        for name in sorted(names):
            head, query, chunk = name.split("_")
            vcfg = cfg.replace(msa=dataclasses.replace(
                cfg.msa, head_reduce=head, query_reduce=query, chunk_reduce=chunk,
                last_query_rule="upstream"))
            for r, layer in enumerate(cfg.msa.router_layers):
                scores = document_scores(vcfg, run["qr"][r], run["routing"],
                                         view.routing_keys[r], view.chunk_doc, view.num_docs,
                                         cfg.msa.inference_cosine)[:, :bank.num_slots]
                s, ids = (np.asarray(x) for x in jnp_topk(scores, cfg.msa.top_k_docs))
                key = f"layer{layer}.{name}"
                out[f"{key}.doc_scores"] = np.asarray(scores)
                out[f"{key}.topk_doc_ids"], out[f"{key}.topk_scores"] = ids, s
                srt = np.sort(np.asarray(scores), axis=1)[:, ::-1]
                k = cfg.msa.top_k_docs
                out[f"{key}.topk_well_defined"] = srt[:, k - 1] != srt[:, k]
        return {f"routing_variants/{k}": v for k, v in out.items()}

    # -- decode ----------------------------------------------------------------------------------
    def _rows(self) -> list[QueryRow]:
        q = self.inputs["stage2"]
        rows = []
        for ids, mask, roles in zip(q["input_ids"], q["attention_mask"], q["doc_ids"]):
            keep = [i for i, m in enumerate(mask) if m]
            rows.append(QueryRow(tuple(ids[i] for i in keep),
                                 tuple(ROUTING if roles[i] == 0 else CONTEXT for i in keep)))
        return rows

    def decode(self) -> dict[str, np.ndarray]:
        cfg, params = self.model
        n_calls = self.settings["decode_forward_calls"]
        tokens, mask, positions, _ = self._query()
        # the step logits: the same forward_step the jitted decode loop runs, one step at a time
        run = self.stage2_run
        cache, logits = run["cache"], np.asarray(logits_of(cfg, params, run["h"]))[:, -1]
        pos = np.asarray(positions)[:, -1]
        step_logits, greedy, fed_pos = [logits], [], []
        for _ in range(n_calls - 1):
            tok = logits.argmax(-1)
            greedy.append(tok)
            pos = pos + 1
            fed_pos.append(pos)
            k_time, q_time = step_times(cache.index, jnp.ones((len(tok), 1), jnp.int32))
            h, cache, _ = _step(cfg, params, cache, jnp.asarray(tok[:, None], jnp.int32),
                                jnp.asarray(pos[:, None], jnp.int32), k_time, q_time)
            logits = np.asarray(logits_of(cfg, params, h))[:, 0]
            step_logits.append(logits)
        greedy.append(logits.argmax(-1))
        fed = np.stack(greedy[:-1], 1)
        out = {"step_logits": np.stack(step_logits), "tokens": np.stack(greedy, 1),
               "step_input_ids": fed, "step_position_ids": np.stack(fed_pos, 1),
               "step_attention_mask": np.ones_like(fed),
               "output_ids": np.concatenate([np.asarray(tokens), fed], 1)}
        out["loop_tokens"] = self._loop_tokens(n_calls)
        return {f"decode/{k}": v for k, v in out.items()}

    def _loop_tokens(self, n: int) -> np.ndarray:
        """Greedy tokens from the real path: prefill_rows (our padding) + the jitted loop."""
        cfg, params = self.model
        bank = self.bank
        pre = prefill_rows(cfg, params, bank.view(), jnp.asarray(bank.prefix_k),
                           jnp.asarray(bank.prefix_v), self._rows(), 16)
        new, _ = sample_tokens(cfg, params, pre.cache, pre.logits, pre.positions, n, Sampling(),
                               (), 0)
        return np.asarray(new)

    def decode_extras(self) -> dict[str, np.ndarray]:
        cfg, params = self.model
        x = self.inputs["decode_extras"]
        cache = self.stage2_run["cache"]
        out = {}
        for step, bidirectional in ((1, False), (2, True)):
            ids = jnp.asarray(x[f"step{step}_input_ids"], jnp.int32)
            mask = jnp.asarray(x[f"step{step}_attention_mask"], jnp.int32)
            pos = jnp.asarray(x[f"step{step}_position_ids"], jnp.int32)
            k_time, q_time = step_times(cache.index, mask, bidirectional)
            h, cache, _ = _step(cfg, params, cache, ids, pos, k_time, q_time)
            logits = np.asarray(logits_of(cfg, params, h))
            out[f"step{step}_logits"] = logits[:, 0] if step == 1 else logits
            for k in ("input_ids", "attention_mask", "position_ids"):
                out[f"step{step}_{k}"] = np.asarray(x[f"step{step}_{k}"])
        time = np.asarray(cache.time)
        n = int(cache.index)
        pf = self.bank.prefix_k.shape[1]
        for layer, lc in enumerate(cache.layers):
            width = self.want(f"decode_extras/layer{layer}.kv_mask_final").shape[1]
            rows = np.zeros((time.shape[0], width), bool)
            for b in range(time.shape[0]):
                local = time[b, :n] < np.iinfo(np.int32).max
                valid = [np.ones(pf, bool)]
                if lc.memory is not None:
                    valid.append(np.ones(int(np.asarray(lc.memory.valid[b]).sum()), bool))
                # query tokens that were valid, then every appended token with its own flag
                q_len = int(self.stage2_run["routing"].shape[1])
                valid.append(local[pf:pf + q_len][local[pf:pf + q_len]])
                valid.append(local[pf + q_len:])
                row = np.concatenate(valid)
                rows[b, width - len(row):] = row
            out[f"layer{layer}.kv_mask_final"] = rows
        return {f"decode_extras/{k}": v for k, v in out.items()}

    # -- training forward ------------------------------------------------------------------------
    def train_batch(self) -> tuple[TrainBatch, int]:
        """The fixture's training batch and its M (documents per sample)."""
        t = self.inputs["train"]
        labels = t["batch_aux_labels"]
        m = max(len(x) for x in labels)
        doc_labels = np.zeros((len(labels), m), np.int32)
        for b, x in enumerate(labels):
            doc_labels[b, :len(x)] = x
        arr = lambda k: jnp.asarray(t[k], jnp.int32)  # noqa: E731
        return TrainBatch(arr("input_ids"), arr("position_ids"), arr("doc_ids"),
                          arr("attention_mask"), arr("labels"), jnp.asarray(doc_labels)), m

    def train(self) -> dict[str, np.ndarray]:
        cfg, params = self.train_model()
        batch, m = self.train_batch()
        outputs = _train(cfg, params, batch, m)
        lm = lm_loss(logits_of(cfg, params, outputs.hidden), batch.labels)
        aux = routing_loss(cfg, outputs.doc_scores, batch.doc_labels)
        msa = cfg.msa
        out = {"lm_loss": np.asarray(lm), "aux_loss": np.asarray(aux),
               "loss": np.asarray(msa.lm_loss_weight * lm + msa.aux_loss_weight * aux),
               "last_hidden_state": np.asarray(outputs.hidden)}
        for layer, scores in zip(msa.router_layers, outputs.doc_scores):
            out[f"layer{layer}.doc_scores"] = np.asarray(scores)
        return {f"train/{k}": v for k, v in out.items()}


def jnp_topk(scores, k):
    from kernels_pallas import topk_documents

    return topk_documents(scores, k)
