"""A model as data: canonical CBOR listing its layers (kind, config, weights hash) and its I/O.

The model id is the SHA-256 (hex) of the canonical encoding, so the same model has the same id
on every machine, and a manifest fetched from the network is only accepted when every field
checks out: closed registry of kinds, exact config keys and bounds, bounded sizes, layer names
chaining, and canonical bytes (re-encoding must reproduce the input exactly).

CBOR layout (FORMAT 1), a map with exactly these keys:
  "format": 1, "name": str, "preprocess": {"kind": "tensor"|"image"|"text", "tokenizer": hash|null},
  "inputs" / "outputs": [{"name": str, "dtype": "float32"|"int64", "shape": [int, ...]}, ...],
  "layers": [{"kind": str, "config": {str: int|float|bool|str}, "weights": hash|null}, ...]
Dimension 0 of every tensor is the batch; shapes are given at batch 1.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any, Mapping

import cbor2

from p2pinfer.errors import ModelError

from .layers import get_kind, param_bytes

FORMAT = 1
MAX_MANIFEST_BYTES = 1 << 20
MAX_LAYERS = 4096
MAX_TENSORS = 8
MAX_RANK = 6
MAX_DIM = 1 << 24
MAX_LAYER_PARAM_BYTES = 2 << 30
DTYPES = ("float32", "int64")
PREPROCESS_KINDS = ("tensor", "image", "text")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TENSOR_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


def content_hash(data: bytes) -> str:
    """The content address used for manifests, weight blobs and tokenizers: SHA-256, lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def is_hash(value: object) -> bool:
    return isinstance(value, str) and bool(_HASH_RE.match(value))


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor at a model boundary (shape at batch 1)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))
        if not isinstance(self.name, str) or not _TENSOR_NAME_RE.match(self.name):
            raise ModelError(f"tensor name {self.name!r} is not a short lowercase identifier")
        if self.dtype not in DTYPES:
            raise ModelError(f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {list(DTYPES)}")
        if not 1 <= len(self.shape) <= MAX_RANK or any(type(d) is not int or not 1 <= d <= MAX_DIM for d in self.shape):
            raise ModelError(f"tensor {self.name!r}: shape {list(self.shape)} must have 1..{MAX_RANK} dims in 1..{MAX_DIM}")

    @property
    def nbytes(self) -> int:
        n = 8 if self.dtype == "int64" else 4
        for d in self.shape:
            n *= d
        return n

    def to_obj(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True, eq=False)
class LayerSpec:
    """One layer: a registry kind, its config, and the content hash of its safetensors weights (None: no weights)."""

    kind: str
    config: Mapping[str, Any]
    weights_hash: str | None

    def __post_init__(self) -> None:
        spec = get_kind(self.kind) if isinstance(self.kind, str) else None
        if spec is None:
            raise ModelError(f"layer kind must be a string, got {type(self.kind).__name__}")
        if not isinstance(self.config, Mapping):
            raise ModelError(f"layer {self.kind!r}: config must be a map")
        spec.check_config(self.config)
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        nbytes = param_bytes(self.kind, self.config)
        if nbytes > MAX_LAYER_PARAM_BYTES:
            raise ModelError(f"layer {self.kind!r}: {nbytes} weight bytes exceed the {MAX_LAYER_PARAM_BYTES} limit")
        if (nbytes > 0) != (self.weights_hash is not None):
            want = "a weights hash" if nbytes else "no weights hash (it has no weights)"
            raise ModelError(f"layer {self.kind!r} needs {want}")
        if self.weights_hash is not None and not is_hash(self.weights_hash):
            raise ModelError(f"layer {self.kind!r}: weights hash {self.weights_hash!r} is not 64 lowercase hex digits")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerSpec) and self.to_obj() == other.to_obj()

    def to_obj(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": dict(self.config), "weights": self.weights_hash}


@dataclass(frozen=True, eq=False)
class Manifest:
    """An immutable, validated model description. Equality and hashing go by `model_id`."""

    name: str
    layers: tuple[LayerSpec, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: str = "tensor"
    tokenizer_hash: str | None = None

    def __post_init__(self) -> None:
        for attr in ("layers", "inputs", "outputs"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ModelError(f"model name {self.name!r} must be 1-64 characters of letters, digits, '.', '_', '-'")
        if not 1 <= len(self.layers) <= MAX_LAYERS:
            raise ModelError(f"model {self.name}: needs 1..{MAX_LAYERS} layers, got {len(self.layers)}")
        if not 1 <= len(self.inputs) <= MAX_TENSORS or len(self.outputs) != 1:
            raise ModelError(f"model {self.name}: needs 1..{MAX_TENSORS} inputs and exactly one output")
        if self.preprocess not in PREPROCESS_KINDS:
            raise ModelError(f"model {self.name}: preprocess {self.preprocess!r} is not one of {list(PREPROCESS_KINDS)}")
        if (self.preprocess == "text") != (self.tokenizer_hash is not None):
            raise ModelError(f"model {self.name}: a tokenizer hash is required for text models and only for them")
        if self.tokenizer_hash is not None and not is_hash(self.tokenizer_hash):
            raise ModelError(f"model {self.name}: tokenizer hash is not 64 lowercase hex digits")
        self._check_chain()

    def _check_chain(self) -> None:
        names = tuple(sorted(t.name for t in self.inputs))
        for index, layer in enumerate(self.layers):
            kind = get_kind(layer.kind)
            if tuple(sorted(kind.inputs)) != names:
                raise ModelError(f"model {self.name}: layer {index} ({layer.kind}) takes {list(kind.inputs)} but gets {list(names)}")
            names = tuple(sorted(kind.outputs))
        if names != tuple(sorted(t.name for t in self.outputs)):
            raise ModelError(f"model {self.name}: last layer gives {list(names)}, outputs declare {[t.name for t in self.outputs]}")

    def to_obj(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "preprocess": {"kind": self.preprocess, "tokenizer": self.tokenizer_hash},
            "inputs": [t.to_obj() for t in self.inputs],
            "outputs": [t.to_obj() for t in self.outputs],
            "layers": [layer.to_obj() for layer in self.layers],
        }

    def to_cbor(self) -> bytes:
        """Canonical CBOR (RFC 8949 core deterministic encoding, as cbor2's canonical mode)."""
        return cbor2.dumps(self.to_obj(), canonical=True)

    @cached_property
    def model_id(self) -> str:
        return content_hash(self.to_cbor())

    @property
    def input_spec(self) -> tuple[TensorSpec, ...]:
        return self.inputs

    @property
    def output_spec(self) -> TensorSpec:
        return self.outputs[0]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def weight_hashes(self) -> list[str]:
        """Distinct blob hashes this model needs (layer weights and tokenizer), in layer order."""
        seen = [layer.weights_hash for layer in self.layers if layer.weights_hash] + [self.tokenizer_hash] * bool(self.tokenizer_hash)
        return list(dict.fromkeys(h for h in seen if h))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and self.model_id == other.model_id

    def __hash__(self) -> int:
        return hash(self.model_id)

    @classmethod
    def from_cbor(cls, data: bytes) -> "Manifest":
        """Decode and fully validate a manifest (it may come from an untrusted peer)."""
        from .manifest_decode import decode_manifest

        return decode_manifest(data)
