"""Model configuration: the Qwen3 backbone, the MSA additions, presets, and Hugging Face config.json.

Frozen dataclasses, so a config is hashable and can be a static argument of `jax.jit`. Derive
variants with `dataclasses.replace`. Letters follow `docs/msa.md`: D model dim, N query heads,
K KV heads, H head dim, P pooling size (tokens per pooled chunk).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from msa_jax.errors import ConfigError

# Upstream keys of `msa_config` and the field each maps to (the rest are kept verbatim in `extra`).
_MSA_KEYS = {
    "pooling_kernel_size": "pooling_size",
    "top_k_docs": "top_k_docs",
    "decouple_router": "decouple_router",
    "head_reduce_method": "head_reduce",
    "query_reduce_method": "query_reduce",
    "chunk_reduce_method": "chunk_reduce",
    "aux_loss_method": "aux_loss_method",
    "aux_loss": "aux_loss",
    "infonce_loss_temp": "infonce_temperature",
    "lmloss_weigth": "lm_loss_weight",  # sic: upstream spelling
    "auxloss_weight": "aux_loss_weight",
    "recloss_weight": "rec_loss_weight",
    "ansloss_weight": "answer_loss_weight",
    "rewrite_position": "rewrite_position",
    "decouple_pooling_mode": "pooling_mode",
}

# The reference hard-codes these; this port keeps them in msa_config["msa_jax"].
_PORT_KEY = "msa_jax"
_PORT_FIELDS = ("prefix_token_ids", "query_position_offset", "inference_score_mode",
                "last_query_rule", "bidirectional_injected_blocks", "router_init_std",
                "shared_selection")

# Hugging Face config fields that change the computation, with the only values this port computes
# (absent counts as that value); any other value is refused rather than silently ignored.
_SUPPORTED_HF = {
    "model_type": ("qwen3", "msa"),
    "hidden_act": ("silu",),
    "hidden_activation": ("silu",),
    "use_sliding_window": (False,),
    "attention_bias": (False,),
    "mlp_bias": (False,),
    "attention_dropout": (0, 0.0),
}

_CHOICES = {
    "head_reduce": ("mean", "max"),
    "query_reduce": ("max", "mean", "last"),
    "chunk_reduce": ("max", "mean"),
    "inference_score_mode": ("reference", "cosine", "dot"),
    "last_query_rule": ("upstream", "routing_token"),
    "pooling_mode": ("mean",),
}


class FrozenDict(tuple):
    """A JSON object kept hashable: sorted (key, value) pairs; `thaw` turns it back into a dict."""


def freeze(value: Any) -> Any:
    """A JSON value made hashable (a config is a static jit argument): lists -> tuples,
    objects -> FrozenDict, recursively."""
    if isinstance(value, Mapping):
        return FrozenDict(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of `freeze`: FrozenDict -> dict, tuples -> lists (what json.load gives)."""
    if isinstance(value, FrozenDict):
        return {k: thaw(v) for k, v in value}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class MSAConfig:
    """What MSA adds to Qwen3 (docs/msa.md §2-§6).

    `router_layers` are the layers that route to memory. The fields after `answer_loss_weight` are
    settings the reference code hard-codes; their defaults reproduce it.
    """

    router_layers: tuple[int, ...] = ()
    pooling_size: int = 64
    top_k_docs: int = 16
    decouple_router: bool = True
    head_reduce: str = "mean"
    query_reduce: str = "max"
    chunk_reduce: str = "max"
    aux_loss_method: str = "INFONCE_DECOUPLE"
    aux_loss: bool = False
    infonce_temperature: float = 0.1
    lm_loss_weight: float = 1.0
    aux_loss_weight: float = 0.1
    rec_loss_weight: float = 0.0
    answer_loss_weight: float = 1.0
    rewrite_position: bool = True
    pooling_mode: str = "mean"
    # -- settings the reference hard-codes ------------------------------------------------------
    # Token ids of the fixed chat prefix every query attends to (msa_jax/data/template.py
    # CHAT_HEAD in the model's tokenizer).
    prefix_token_ids: tuple[int, ...] = ()
    # Query tokens start at this position; None: len(prefix) + top_k_docs (the reference's rule).
    query_position_offset: int | None = None
    # Stage-2 similarity: "reference" = cosine iff aux_loss_method == "INFONCE", else dot * H^-0.5.
    inference_score_mode: str = "reference"
    # query_reduce="last": "upstream" takes index (#routing tokens - 1) of the padded row (the
    # reference's behaviour, wrong under left padding); "routing_token" takes the last routing token.
    last_query_rule: str = "routing_token"
    # The reference lets the tokens of a multi-token block fed during decode see each other.
    bidirectional_injected_blocks: bool = False
    # Std of the router projections when a plain Qwen3 checkpoint is upgraded to MSA.
    router_init_std: float = 0.02
    # Not in the reference (which selects per router layer): every router layer reads the
    # documents the FIRST router layer selects (the later layers' routing scans are skipped at
    # inference; in training their scores still feed the routing loss). For a reader trained
    # with `optim.read="target"`, which saw one document set in all its router layers.
    shared_selection: bool = False
    # Upstream msa_config keys this port does not interpret, kept for a faithful round trip;
    # values frozen (lists -> tuples, objects -> FrozenDict) so that the config stays hashable.
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "extra", tuple((str(k), freeze(v)) for k, v in self.extra))
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"msa.{name}={value!r}; expected one of {allowed}")
        if self.pooling_size < 1:
            raise ConfigError(f"msa.pooling_size must be >= 1, got {self.pooling_size}")
        if self.top_k_docs < 1:
            raise ConfigError(f"msa.top_k_docs must be >= 1, got {self.top_k_docs}")
        if list(self.router_layers) != sorted(set(self.router_layers)):
            raise ConfigError(f"msa.router_layers must be sorted and unique: {self.router_layers}")

    @property
    def prefix_len(self) -> int:
        return len(self.prefix_token_ids)

    @property
    def query_offset(self) -> int:
        """Position of the first query token (the retrieved memory reads as if just before it)."""
        if self.query_position_offset is not None:
            return self.query_position_offset
        return self.prefix_len + self.top_k_docs

    @property
    def inference_cosine(self) -> bool:
        """True when stage-2 routing uses cosine similarity (else a dot product scaled by H^-0.5)."""
        if self.inference_score_mode == "reference":
            return self.aux_loss_method == "INFONCE"
        return self.inference_score_mode == "cosine"

    @property
    def training_cosine(self) -> bool:
        """The reference's training path normalises whenever "INFONCE" is in the method name."""
        return "INFONCE" in self.aux_loss_method

    def router_index(self, layer: int) -> int:
        """Position of `layer` among the router layers (its slot in the memory tiers)."""
        return self.router_layers.index(layer)

    # -- msa_config (Hugging Face / upstream) ---------------------------------------------------
    @classmethod
    def from_hf(cls, d: Mapping[str, Any], num_layers: int, **overrides) -> "MSAConfig":
        kwargs: dict[str, Any] = {}
        extra = []
        for key, value in d.items():
            if key == _PORT_KEY:  # this port's settings, written by to_hf
                kwargs.update({k: freeze(v) for k, v in value.items() if k in _PORT_FIELDS})
            elif key == "router_layer_idx":
                kwargs["router_layers"] = parse_router_layers(value, num_layers)
            elif key in _MSA_KEYS:
                kwargs[_MSA_KEYS[key]] = freeze(value)
            else:
                extra.append((key, value))
        kwargs["extra"] = tuple(sorted(extra, key=lambda kv: kv[0]))
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: thaw(v) for k, v in self.extra}
        d["router_layer_idx"] = ",".join(str(i) for i in self.router_layers)
        for key, field in _MSA_KEYS.items():
            d[key] = getattr(self, field)
        d[_PORT_KEY] = {f: (list(v) if isinstance(v, tuple) else v)
                        for f in _PORT_FIELDS for v in [getattr(self, f)]}
        return dict(sorted(d.items()))


def parse_router_layers(value: Any, num_layers: int) -> tuple[int, ...]:
    """`"all"`, `"18,19,..."` or a list of ints -> sorted tuple of layer indices."""
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return tuple(range(num_layers))
        items = [int(v) for v in value.replace(" ", "").split(",") if v]
    else:
        items = [int(v) for v in value]
    bad = [i for i in items if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(f"router_layer_idx {value!r} names layers {bad} outside 0..{num_layers - 1}")
    return tuple(sorted(set(items)))


DTYPES = ("float32", "bfloat16", "float16", "float64")  # ModelConfig.dtype / param_dtype


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Qwen3 backbone (docs/msa.md §1), optional MSA settings, dtype and kernel policy."""

    vocab_size: int = 151936
    hidden_size: int = 2560  # D
    intermediate_size: int = 9728
    num_layers: int = 36
    num_heads: int = 32  # N
    num_kv_heads: int = 8  # K
    head_dim: int = 128  # H
    rms_norm_eps: float = 1e-6
    rope_theta: float = 5_000_000.0
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 262144
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    msa: MSAConfig | None = None
    # -- policy (not part of the checkpoint) -----------------------------------------------------
    # compute dtype of activations and matmuls, and storage dtype of parameters: float32,
    # bfloat16, float16, or float64 (needs jax_enable_x64; statistics, scores and losses then
    # run in float64 too: for gradient checks against finite differences, not for checkpoints)
    dtype: str = "float32"
    param_dtype: str = "float32"
    kernel_implementation: str = "auto"  # "xla" | "pallas" | "auto" (Pallas on GPU)
    kernel_interpret: bool = False  # run Pallas kernels in interpret mode (CPU tests)
    remat: bool = False  # rematerialise each decoder layer in the backward pass (training)

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected {'|'.join(DTYPES)}")
        if self.kernel_implementation not in ("xla", "pallas", "auto"):
            raise ConfigError(f"kernel_implementation={self.kernel_implementation!r}")
        if self.msa is not None and self.msa.router_layers and \
                self.msa.router_layers[-1] >= self.num_layers:
            raise ConfigError(f"router layers {self.msa.router_layers} exceed {self.num_layers} layers")

    @property
    def group_size(self) -> int:
        """G = N / K: query heads per KV head."""
        return self.num_heads // self.num_kv_heads

    @property
    def is_msa(self) -> bool:
        return self.msa is not None

    @property
    def eos_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def is_router_layer(self, layer: int) -> bool:
        return self.msa is not None and layer in self.msa.router_layers

    def replace(self, **kwargs) -> "ModelConfig":
        return dataclasses.replace(self, **kwargs)

    # -- Hugging Face config.json ---------------------------------------------------------------
    @classmethod
    def from_hf(cls, d: Mapping[str, Any], **overrides) -> "ModelConfig":
        """Build from a Hugging Face (or upstream MSA) config dict; theta from `rope_theta` (4.x)
        or `rope_parameters` (5.x)."""
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size",
                               "num_hidden_layers", "num_attention_heads") if k not in d]
        if missing:
            raise ConfigError(f"config.json lacks {missing}")
        _refuse_unsupported(d)
        rope = d.get("rope_parameters") or {}
        theta = d.get("rope_theta", rope.get("rope_theta", 1_000_000.0))
        n_layers = int(d["num_hidden_layers"])
        num_heads = int(d["num_attention_heads"])
        msa = None
        if "msa_config" in d and d["msa_config"] is not None:
            msa = MSAConfig.from_hf(d["msa_config"], n_layers, **overrides.pop("msa_overrides", {}))
        overrides.pop("msa_overrides", None)
        eos = d.get("eos_token_id")
        stored = d.get("dtype") or d.get("torch_dtype")  # transformers 5.x / 4.x
        stored = stored if stored in ("float32", "bfloat16", "float16") else "float32"
        kwargs = dict(
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_layers=n_layers,
            num_heads=num_heads,
            num_kv_heads=int(d.get("num_key_value_heads") or num_heads),
            head_dim=int(d.get("head_dim") or int(d["hidden_size"]) // num_heads),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
            pad_token_id=d.get("pad_token_id"),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            msa=msa,
            dtype=stored,
            param_dtype=stored,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """A config.json that `transformers` (Qwen3) or the reference (MSA) loads."""
        d = {
            "architectures": ["MSAForCausalLM" if self.is_msa else "Qwen3ForCausalLM"],
            "model_type": "msa" if self.is_msa else "qwen3",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_sliding_window": False,
            "sliding_window": None,
            "torch_dtype": self.param_dtype,
            "pad_token_id": self.pad_token_id,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
        }
        if self.is_msa:
            d["msa_config"] = self.msa.to_hf()
        return d

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides) -> "ModelConfig":
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: not valid JSON ({e})") from e
        return cls.from_hf(d, **overrides)


def _refuse_unsupported(d: Mapping[str, Any]):
    """ConfigError naming the first field of a Hugging Face config that asks for a computation
    this port does not do (another activation, sliding-window attention, biases, RoPE scaling):
    loading it anyway would compute another model and answer wrongly without a word."""
    for key, allowed in _SUPPORTED_HF.items():
        if key in d and d[key] is not None and d[key] not in allowed:
            raise ConfigError(f"{key}={d[key]!r} is not supported (this port computes only "
                              f"{key}={allowed[0]!r})")
    sliding = [t for t in d.get("layer_types") or () if t != "full_attention"]
    if sliding:
        raise ConfigError(f"layer_types has {sliding[0]!r} layers: only full attention is "
                          "supported")
    for key in ("rope_scaling", "rope_parameters"):
        rope = d.get(key) or {}
        if not isinstance(rope, Mapping):
            raise ConfigError(f"{key}={rope!r} is not supported (expected an object or null)")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaled = {k: v for k, v in rope.items() if k not in ("rope_type", "type", "rope_theta")}
        if rope_type not in ("default", None) or (key == "rope_scaling" and scaled):
            raise ConfigError(f"{key}={dict(rope)!r} is not supported (only default RoPE, "
                              "no scaling)")


def _qwen3(**kw) -> ModelConfig:
    return ModelConfig(**kw)


# Published Qwen3 sizes (from their config.json files) and tiny test sizes.
PRESETS: dict[str, ModelConfig] = {
    "qwen3-0.6b": _qwen3(hidden_size=1024, intermediate_size=3072, num_layers=28, num_heads=16,
                         num_kv_heads=8, rope_theta=1e6, max_position_embeddings=40960),
    "qwen3-1.7b": _qwen3(hidden_size=2048, intermediate_size=6144, num_layers=28, num_heads=16,
                         num_kv_heads=8, rope_theta=1e6, max_position_embeddings=40960),
    "qwen3-4b": _qwen3(hidden_size=2560, intermediate_size=9728, num_layers=36, num_heads=32,
                       num_kv_heads=8, rope_theta=1e6, max_position_embeddings=40960),
    "qwen3-4b-instruct-2507": _qwen3(),
    "qwen3-8b": _qwen3(hidden_size=4096, intermediate_size=12288, num_layers=36, num_heads=32,
                       num_kv_heads=8, rope_theta=1e6, tie_word_embeddings=False,
                       max_position_embeddings=40960),
    "tiny": _qwen3(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
                   num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=1e4,
                   max_position_embeddings=4096),
}
PRESETS["msa-4b"] = PRESETS["qwen3-4b-instruct-2507"].replace(
    msa=MSAConfig(router_layers=tuple(range(18, 36)), pooling_size=64, top_k_docs=16,
                  # CHAT_HEAD (msa_jax/data/template.py) in the Qwen3 tokenizer
                  prefix_token_ids=(151644, 872, 198)),
    pad_token_id=151643, eos_token_id=(151645, 151643))
PRESETS["tiny-msa"] = PRESETS["tiny"].replace(
    num_layers=4, msa=MSAConfig(router_layers=(2, 3), pooling_size=8, top_k_docs=4,
                                prefix_token_ids=(1, 2, 3)))


def preset(name: str, **overrides) -> ModelConfig:
    """A named configuration; `overrides` are `dataclasses.replace` fields."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
