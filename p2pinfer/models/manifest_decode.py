"""Strict decoding of untrusted manifest bytes into a `Manifest` (every field type-checked)."""

from __future__ import annotations

from typing import Any

import cbor2

from p2pinfer.errors import ModelError

from .manifest import FORMAT, MAX_MANIFEST_BYTES, LayerSpec, Manifest, TensorSpec

_DECODE_ERRORS = (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError, OverflowError, MemoryError, LookupError)


def _map(obj: object, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ModelError(f"manifest: {what} must be a map, got {type(obj).__name__}")
    if set(obj) != keys:
        raise ModelError(f"manifest: {what} must have keys {sorted(keys)}, got {sorted(map(str, obj))}")
    return obj


def _list(obj: object, what: str, limit: int) -> list[Any]:
    if not isinstance(obj, list):
        raise ModelError(f"manifest: {what} must be an array, got {type(obj).__name__}")
    if len(obj) > limit:
        raise ModelError(f"manifest: {what} has {len(obj)} entries, more than {limit}")
    return obj


def _tensor(obj: object, what: str) -> TensorSpec:
    m = _map(obj, {"name", "dtype", "shape"}, what)
    return TensorSpec(m["name"], m["dtype"], tuple(_list(m["shape"], f"{what} shape", 16)))


def _layer(obj: object, index: int) -> LayerSpec:
    m = _map(obj, {"kind", "config", "weights"}, f"layer {index}")
    if not isinstance(m["config"], dict) or not all(isinstance(k, str) for k in m["config"]):
        raise ModelError(f"manifest: layer {index} config must be a map with string keys")
    for key, value in m["config"].items():
        if not isinstance(value, (bool, int, float, str)) or isinstance(value, str) and len(value) > 32:
            raise ModelError(f"manifest: layer {index} config {key!r} has an unsupported value")
    try:
        return LayerSpec(m["kind"], m["config"], m["weights"])
    except ModelError as exc:
        raise ModelError(f"manifest: layer {index}: {exc}") from None


def decode_manifest(data: bytes) -> Manifest:
    if not isinstance(data, (bytes, bytearray)):
        raise ModelError("manifest: expected bytes")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ModelError(f"manifest: {len(data)} bytes exceed the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        obj = cbor2.loads(bytes(data))
    except _DECODE_ERRORS as exc:
        raise ModelError(f"manifest: not valid CBOR ({type(exc).__name__}: {exc})") from None
    top = _map(obj, {"format", "name", "preprocess", "inputs", "outputs", "layers"}, "manifest")
    if top["format"] != FORMAT or type(top["format"]) is not int:
        raise ModelError(f"manifest: unsupported format {top['format']!r} (this peer reads format {FORMAT})")
    pre = _map(top["preprocess"], {"kind", "tokenizer"}, "preprocess")
    manifest = Manifest(
        name=top["name"],
        layers=tuple(_layer(layer, i) for i, layer in enumerate(_list(top["layers"], "layers", 4096))),
        inputs=tuple(_tensor(t, f"input {i}") for i, t in enumerate(_list(top["inputs"], "inputs", 8))),
        outputs=tuple(_tensor(t, f"output {i}") for i, t in enumerate(_list(top["outputs"], "outputs", 8))),
        preprocess=pre["kind"],
        tokenizer_hash=pre["tokenizer"],
    )
    if manifest.to_cbor() != bytes(data):
        raise ModelError("manifest: bytes are not in canonical CBOR form")
    return manifest
