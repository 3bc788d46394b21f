"""Bring the user's own models in: a local Hugging Face BERT-family checkpoint directory, or a
`torch.nn.Sequential` of registry layer modules. Both end as a stored manifest + weight blobs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from p2pinfer.errors import ModelError

from .architectures import ZOO_NAMES
from .builder import build_manifest
from .layers import RegistryLayer, get_kind, param_specs
from .manifest import Manifest, TensorSpec
from .store import ModelStore

_EMB = {"word": "word_embeddings", "position": "position_embeddings", "token_type": "token_type_embeddings", "norm": "LayerNorm"}
_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
          "attn_out": "attention.output.dense", "ln1": "attention.output.LayerNorm",
          "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ln2": "output.LayerNorm"}
DEFAULT_SEQ_LEN = 128


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return data


def _bert_configs(cfg: dict[str, Any], where: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if cfg.get("model_type") not in ("bert", None) and not any("Bert" in a for a in cfg.get("architectures") or []):
        raise ModelError(f"{where}: model_type {cfg.get('model_type')!r} is not BERT-family")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ModelError(f"{where}: only absolute position embeddings are supported")
    act = cfg.get("hidden_act", "gelu")
    if act not in ("gelu", "relu"):
        raise ModelError(f"{where}: hidden_act {act!r} is not supported (gelu or relu)")
    try:
        hidden, eps = int(cfg["hidden_size"]), float(cfg.get("layer_norm_eps", 1e-12))
        emb = dict(vocab_size=int(cfg["vocab_size"]), hidden=hidden, max_positions=int(cfg["max_position_embeddings"]),
                   type_vocab_size=int(cfg.get("type_vocab_size", 2)), eps=eps)
        layer = dict(hidden=hidden, heads=int(cfg["num_attention_heads"]), intermediate=int(cfg["intermediate_size"]), eps=eps, act=act)
        int(cfg["num_hidden_layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: missing or bad BERT config field {exc}") from None
    return emb, layer


def _pooling(directory: Path) -> tuple[str, bool]:
    """Pooling from a sentence-transformers layout if present; mean + L2 normalisation otherwise."""
    pool_cfg = directory / "1_Pooling" / "config.json"
    mode = "cls" if pool_cfg.is_file() and _read_json(pool_cfg).get("pooling_mode_cls_token") else "mean"
    modules = directory / "modules.json"
    normalize = True
    if modules.is_file():
        normalize = "Normalize" in modules.read_text()
    return mode, normalize


class _Checkpoint:
    """Lazy reader of a HF safetensors checkpoint, tolerant of a 'bert.' prefix and gamma/beta names."""

    def __init__(self, path: Path) -> None:
        try:
            self._file = safe_open(str(path), framework="pt")
        except (OSError, SafetensorError) as exc:
            raise ModelError(f"cannot read {path}: {exc}") from None
        keys = set(self._file.keys())
        self._prefix = "bert." if any(k.startswith("bert.") for k in keys) else ""
        self._keys, self._path = keys, path

    def get(self, hf_name: str) -> torch.Tensor:
        base, leaf = hf_name.rsplit(".", 1)
        for cand in (hf_name, f"{base}.{ {'weight': 'gamma', 'bias': 'beta'}.get(leaf, leaf)}"):
            if self._prefix + cand in self._keys:
                return self._file.get_tensor(self._prefix + cand).to(torch.float32)
        raise ModelError(f"{self._path}: tensor {hf_name!r} is missing")

    def module(self, mapping: dict[str, str], prefix: str, names: Sequence[str]) -> dict[str, torch.Tensor]:
        out = {}
        for name in names:
            ours, leaf = name.split(".")
            out[name] = self.get(f"{prefix}{mapping[ours]}.{leaf}")
        return out


def _check_name(name: str, zoo_build: bool) -> str:
    if name in ZOO_NAMES and not zoo_build:
        raise ModelError(f"model name {name!r} is reserved for the zoo; choose another with --name")
    return name


def import_bert_dir(directory: Path | str, *, store: ModelStore, name: str | None = None, seq_len: int | None = None,
                    zoo_build: bool = False) -> Manifest:
    """Import a local HF BERT-family checkpoint dir (config.json, model.safetensors, tokenizer.json)."""
    directory = Path(directory)
    name = _check_name(name or _default_name(directory), zoo_build)
    for required in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (directory / required).is_file():
            raise ModelError(f"{directory} is not a BERT checkpoint directory: {required} is missing")
    cfg = _read_json(directory / "config.json")
    emb_cfg, layer_cfg = _bert_configs(cfg, directory)
    tokenizer = (directory / "tokenizer.json").read_bytes()
    seq = seq_len or _tokenizer_len(tokenizer) or min(DEFAULT_SEQ_LEN, emb_cfg["max_positions"])
    if not 1 <= seq <= emb_cfg["max_positions"]:
        raise ModelError(f"sequence length {seq} must be in 1..{emb_cfg['max_positions']}")
    mode, normalize = _pooling(directory)
    n = int(cfg["num_hidden_layers"])
    layers = [("bert_embeddings", emb_cfg)] + [("bert_layer", layer_cfg)] * n + [("pool", dict(mode=mode, normalize=normalize))]
    ckpt = _Checkpoint(directory / "model.safetensors")

    def weights(i: int, kind: str, config: Any) -> dict[str, torch.Tensor]:
        names = list(param_specs(kind, config))
        if kind == "bert_embeddings":
            return ckpt.module(_EMB, "embeddings.", names)
        return ckpt.module(_LAYER, f"encoder.layer.{i - 1}.", names) if kind == "bert_layer" else {}

    inputs = (TensorSpec("input_ids", "int64", (1, seq)), TensorSpec("attention_mask", "int64", (1, seq)))
    return build_manifest(name=name, layers=layers, inputs=inputs, weights=weights, store=store,
                          preprocess="text", tokenizer_hash=store.add_blob(tokenizer))


def _default_name(directory: Path) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in directory.resolve().name).strip("-._")
    return cleaned[:64] or "imported"


def _tokenizer_len(tokenizer_json: bytes) -> int | None:
    """The fixed length the tokenizer was shipped with (padding, else truncation), if any."""
    try:
        tok = json.loads(tokenizer_json)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"tokenizer.json is not valid JSON: {exc}") from None
    fixed = ((tok.get("padding") or {}).get("strategy") or {})
    if isinstance(fixed, dict) and isinstance(fixed.get("Fixed"), int):
        return fixed["Fixed"]
    trunc = (tok.get("truncation") or {}).get("max_length")
    return trunc if isinstance(trunc, int) else None


def manifest_from_sequential(
    model: nn.Sequential,
    *,
    name: str,
    inputs: Sequence[TensorSpec],
    store: ModelStore,
    preprocess: str = "tensor",
    tokenizer_hash: str | None = None,
) -> Manifest:
    """Turn a Sequential of registry layer modules (with their current weights) into a stored manifest."""
    _check_name(name, False)
    if not isinstance(model, nn.Sequential) or len(model) == 0:
        raise ModelError("expected a non-empty torch.nn.Sequential of registry layers")
    for i, module in enumerate(model):
        kind = getattr(module, "kind", None)
        if not isinstance(module, RegistryLayer) or type(module) is not get_kind(str(kind)).module:
            raise ModelError(f"layer {i} ({type(module).__name__}) is not a registry layer module; see docs/models.md")
    defs = [(m.kind, dict(m.config)) for m in model]
    return build_manifest(name=name, layers=defs, inputs=inputs, weights=lambda i, k, c: dict(model[i].state_dict()),
                          store=store, preprocess=preprocess, tokenizer_hash=tokenizer_hash)
