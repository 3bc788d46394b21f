"""Per-layer cost profiles, counted by torch's FlopCounterMode on meta tensors (no weights needed).

FLOPs are attributed to compute classes (see p2pinfer.core.profile): 'attention' for everything
inside a layer's `attn_core` submodule (the Q K^T and softmax-V matmuls), 'conv' for
convolutions, 'linear' for the remaining matmuls (mm/addmm/bmm of dense layers), 'other' for
anything else FlopCounterMode counts, plus the window operations of pooling layers, which
FlopCounterMode does not count (one per window element: output elements x kernel area for
max_pool, input elements for the adaptive average pool; as ptflops counts pooling). Without them
a pooling layer would be free in the cost model, yet VGG-16's five pools take ~7% of its time. `out_bytes` is the size of everything a layer hands on at
batch 1 (for BERT layers that includes the attention mask, which travels with the hidden states);
`weights_hash` is the layer's blob hash from the manifest ("" for layers without weights).
Profiles are deterministic, so they are cached in the store and in memory.
"""

from __future__ import annotations

import json
import threading

import torch
from torch.utils.flop_counter import FlopCounterMode

from p2pinfer.core.profile import LayerProfile, ModelProfile

from .layers import build_layer, param_bytes
from .manifest import Manifest
from .shapes import boundaries, meta_inputs
from .store import ModelStore

PROFILE_VERSION = 3  # 3: pooling work
_LINEAR_OPS = ("mm", "addmm", "bmm", "baddbmm")
_memo: dict[str, ModelProfile] = {}
_lock = threading.Lock()


def _op_name(op: object) -> str:
    return str(op).split(".")[-1] if str(op).startswith("aten.") else str(op)


def _classify(counts: dict[str, dict[object, int]]) -> dict[str, int]:
    attention = sum(n for key, ops in counts.items() if key.endswith("attn_core") for n in ops.values())
    by_class = {"linear": 0, "conv": 0, "attention": attention, "other": 0}
    for op, n in counts.get("Global", {}).items():
        name = _op_name(op)
        cls = "conv" if name.startswith("convolution") else "linear" if name in _LINEAR_OPS else "other"
        by_class[cls] += n
    by_class["linear"] -= min(attention, by_class["linear"])  # attention matmuls were counted as mm/bmm
    return by_class


def _pooling_work(kind: str, config: dict[str, object], inputs: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> int:
    if kind == "max_pool":
        return out["x"].numel() * int(config["kernel"]) ** 2  # type: ignore[call-overload]
    if kind == "avgpool_flatten":
        return inputs["x"].numel()
    return 0


def layer_flops(kind: str, config: dict[str, object], module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, int]:
    """FLOPs of one call of a registry layer on `inputs` (meta tensors are fine), per compute class.
    The one FLOP count: profiles and the compute calibration (models/calibrate.py) both use it."""
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        out = module(inputs)
    by_class = _classify(counter.get_flop_counts())
    by_class["other"] += _pooling_work(kind, config, inputs, out)
    return by_class


def compute_profile(manifest: Manifest) -> ModelProfile:
    """Count FLOPs layer by layer at the manifest's default (batch 1) input shapes."""
    specs = boundaries(manifest)
    layers = []
    with torch.inference_mode():
        for index, layer in enumerate(manifest.layers):
            module = build_layer(layer.kind, layer.config, device="meta")
            by_class = layer_flops(layer.kind, dict(layer.config), module, meta_inputs(specs[index]))
            layers.append(LayerProfile(index, layer.kind, sum(by_class.values()), param_bytes(layer.kind, layer.config),
                                       sum(s.nbytes for s in specs[index + 1]), by_class, layer.weights_hash or ""))
    return ModelProfile(manifest.name, manifest.model_id, sum(s.nbytes for s in specs[0]), tuple(layers))


def _to_json(p: ModelProfile) -> str:
    layers = [dict(index=l.index, kind=l.kind, flops=l.flops, param_bytes=l.param_bytes, out_bytes=l.out_bytes,
                   flops_by_class=dict(l.flops_by_class), weights_hash=l.weights_hash) for l in p.layers]
    return json.dumps(dict(version=PROFILE_VERSION, name=p.name, model_id=p.model_id, input_bytes=p.input_bytes, layers=layers))


def _from_json(text: str, manifest: Manifest) -> ModelProfile | None:
    try:
        d = json.loads(text)
        if d["version"] != PROFILE_VERSION or d["model_id"] != manifest.model_id or len(d["layers"]) != manifest.num_layers:
            return None
        layers = tuple(LayerProfile(**layer) for layer in d["layers"])
        return ModelProfile(d["name"], d["model_id"], d["input_bytes"], layers)
    except (ValueError, KeyError, TypeError):
        return None  # a damaged cache entry is simply recomputed


def profile(manifest: Manifest, store: ModelStore | None = None) -> ModelProfile:
    """The model's cost profile; cached in memory and (when given) in the store."""
    with _lock:
        hit = _memo.get(manifest.model_id)
    if hit is not None:
        return hit
    text = store.read_profile_text(manifest.model_id) if store is not None else None
    result = _from_json(text, manifest) if text else None
    if result is None:
        result = compute_profile(manifest)
        if store is not None:
            store.write_profile_text(manifest.model_id, _to_json(result))
    with _lock:
        _memo[manifest.model_id] = result
    return result
