"""Per-layer weights as safetensors bytes: canonical encoding, verified decoding, seeded init.

Encoding is our own canonical writer of the safetensors format (names sorted, compact JSON
header padded to 8 bytes, little-endian data), so the bytes - and therefore every weights hash
and model id - do not depend on the installed safetensors version. Decoding uses the
safetensors library and then checks the tensor names, shapes and dtypes against what the layer
kind and config require, so a blob can never smuggle in extra or differently-shaped tensors.

Seeded weights (for the image zoo and `mlp`) come from numpy's PCG64 bit generator, whose raw
stream is fixed by its seed on every platform: uniform float32 `Generator.random(dtype=float32)`
scaled in float32 to [-bound, bound). Per layer the seed is SeedSequence([ZOO_SEED, model
tag, layer index]). Rules by parameter name/shape: conv weights He-uniform (var 2/fan_in),
linear weights LeCun-uniform (var 1/fan_in), embeddings uniform with std 0.02, norm gains and
running variances 1, biases and running means 0; `LayerKind.init_scale` damps named gains.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Mapping

import numpy as np
import safetensors
from safetensors.torch import load as load_safetensors
import torch

from p2pinfer.errors import WeightIntegrityError

from .layers import get_kind, param_specs

ZOO_SEED = 20261121
_ST_DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def encode(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Canonical safetensors bytes for a layer's tensors (float32/int64 only)."""
    header: dict[str, object] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _ST_DTYPES:
            raise WeightIntegrityError(f"tensor {name!r}: dtype {t.dtype} is not float32/int64")
        arr = t.numpy()
        raw = memoryview(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).cast("B")  # no copy yet
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + raw.nbytes]}
        chunks.append(raw)
        offset += raw.nbytes
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    return b"".join([len(head).to_bytes(8, "little"), head, *chunks])


def decode(data: bytes, kind: str, config: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes, checked against the names/shapes/dtypes the kind requires."""
    try:
        tensors = load_safetensors(data)  # safetensors: a plain header + raw arrays, never pickle
    except (safetensors.SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise WeightIntegrityError(f"layer {kind!r}: weights are not valid safetensors ({exc})") from None
    expected = param_specs(kind, config)  # type: ignore[arg-type]
    if set(tensors) != set(expected):
        raise WeightIntegrityError(
            f"layer {kind!r}: weights hold {sorted(tensors)[:6]}..., expected {sorted(expected)[:6]}..."
            if len(expected) > 6 else f"layer {kind!r}: weights hold {sorted(tensors)}, expected {sorted(expected)}"
        )
    for name, (shape, dtype) in expected.items():
        t = tensors[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise WeightIntegrityError(f"layer {kind!r}: tensor {name!r} is {t.dtype}{list(t.shape)}, expected {dtype}{list(shape)}")
    return tensors


def _bound(name: str, shape: tuple[int, ...]) -> float | None:
    """Half-width of the uniform init for a weight tensor, or None for constant tensors."""
    if len(shape) == 4:
        return math.sqrt(6.0 / (shape[1] * shape[2] * shape[3]))
    if len(shape) == 2:
        short = name.split(".")[0]
        return 0.02 * math.sqrt(3.0) if short in ("word", "position", "token_type") else math.sqrt(3.0 / shape[1])
    return None


def seeded(kind: str, config: Mapping[str, object], *, tag: str, index: int) -> dict[str, torch.Tensor]:
    """Deterministic weights for one layer, identical on every machine for the same (tag, index)."""
    seq = np.random.SeedSequence([ZOO_SEED, zlib.crc32(tag.encode()), index])
    rng = np.random.Generator(np.random.PCG64(seq))
    scale = get_kind(kind).init_scale
    out: dict[str, torch.Tensor] = {}
    for name, (shape, dtype) in sorted(param_specs(kind, config).items()):  # type: ignore[arg-type]
        bound = _bound(name, shape)
        if bound is not None:
            arr = rng.random(shape, dtype=np.float32)  # in [0, 1), 24-bit resolution
            arr *= np.float32(2.0 * bound)
            arr -= np.float32(bound)
        elif name.endswith("running_mean") or name.endswith("bias"):
            arr = np.zeros(shape, np.float32)
        else:  # norm gains and running variances
            arr = np.full(shape, scale.get(name, 1.0), np.float32)
        out[name] = torch.from_numpy(arr).to(dtype)
    return out
