"""Canonical CBOR and RFC 8746 tensors: the byte-level encoding of every circuit message.

Why a module of its own: the wire messages (core/wire.py) and the sealed frame payloads share one
strict decoder, and every rule about what bytes we accept lives here, in one place:

- `decode_strict` checks the size BEFORE parsing, rejects trailing bytes, and turns every cbor2
  failure into a `WireError` naming the problem.
- Tensors are RFC 8746 multi-dimensional arrays: tag 40 over `[shape, typed-array]`, where the
  typed array is one of the little-endian typed-array tags below (row-major, C order). Ranks,
  dimensions, element counts and dtypes are bounded; the byte length must equal
  prod(shape) * itemsize exactly.
- An "activation" is either one tensor or a map of names to tensors (a span's input or output
  may be a dict of named tensors, e.g. hidden states plus an attention mask).

Pure: numpy and cbor2 only, no I/O.
"""

from __future__ import annotations

import io
import math
import re
from types import MappingProxyType
from typing import Any, Mapping, Union

import cbor2
import numpy as np

from p2pinfer.errors import WireError

TAG_NDARRAY = 40  # RFC 8746 section 3.1: multi-dimensional array, row-major
# RFC 8746 section 2: typed arrays, little-endian variants (uint8/int8 have no endianness)
DTYPE_TAGS: Mapping[str, int] = MappingProxyType({
    "uint8": 64,
    "int8": 72,
    "int32": 78,
    "int64": 79,
    "float16": 84,
    "float32": 85,
    "float64": 86,
})
TAG_DTYPES: Mapping[int, str] = MappingProxyType({tag: name for name, tag in DTYPE_TAGS.items()})
_NUMPY_LE: Mapping[str, str] = MappingProxyType({
    "uint8": "u1", "int8": "i1", "int32": "<i4", "int64": "<i8",
    "float16": "<f2", "float32": "<f4", "float64": "<f8",
})

MAX_RANK = 8
MAX_DIM = 1 << 31
MAX_TENSOR_ELEMENTS = 1 << 30
MAX_NAMED_TENSORS = 32
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")

Activation = Union[np.ndarray, Mapping[str, np.ndarray]]


def encode_canonical(obj: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 core deterministic encoding): the bytes we sign and hash."""
    return cbor2.dumps(obj, canonical=True)


def decode_strict(data: bytes, *, max_size: int, what: str = "message") -> Any:
    """Decode exactly one CBOR item of at most `max_size` bytes; anything else is a WireError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise WireError(f"{what}: {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise WireError(f"{what}: empty")
    buf = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(buf).decode()
    except Exception as exc:  # cbor2 raises many types (ValueError, CBORDecodeError, ...)
        raise WireError(f"{what}: not valid CBOR ({type(exc).__name__}: {exc})") from None
    if buf.tell() != len(data):
        raise WireError(f"{what}: {len(data) - buf.tell()} trailing bytes after the CBOR item")
    return obj


def tensor_to_cbor(arr: np.ndarray) -> cbor2.CBORTag:
    """An ndarray as tag 40 [shape, typed array]; non-LE / non-contiguous input is converted."""
    name = arr.dtype.name
    if name not in DTYPE_TAGS:
        raise WireError(f"tensor dtype {name!r} is not one of {sorted(DTYPE_TAGS)}")
    if arr.ndim > MAX_RANK:
        raise WireError(f"tensor rank {arr.ndim} exceeds {MAX_RANK}")
    data = np.ascontiguousarray(arr, dtype=np.dtype(_NUMPY_LE[name])).tobytes()
    return cbor2.CBORTag(TAG_NDARRAY, [list(arr.shape), cbor2.CBORTag(DTYPE_TAGS[name], data)])


def _shape_of(raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, (list, tuple)):
        raise WireError("tensor: shape must be an array of unsigned integers")
    if len(raw) > MAX_RANK:
        raise WireError(f"tensor: rank {len(raw)} exceeds {MAX_RANK}")
    for dim in raw:
        if type(dim) is not int or not 0 <= dim <= MAX_DIM:
            raise WireError(f"tensor: dimension {dim!r} is not an integer in [0, {MAX_DIM}]")
    shape = tuple(raw)
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise WireError(f"tensor: {math.prod(shape)} elements exceeds {MAX_TENSOR_ELEMENTS}")
    return shape


def tensor_from_cbor(obj: Any) -> np.ndarray:
    """Inverse of `tensor_to_cbor`; the result is a read-only view on the frame's bytes."""
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != TAG_NDARRAY:
        raise WireError("tensor: expected RFC 8746 tag 40 (multi-dimensional array)")
    if not isinstance(obj.value, (list, tuple)) or len(obj.value) != 2:
        raise WireError("tensor: tag 40 content must be [shape, typed-array]")
    shape = _shape_of(obj.value[0])
    typed = obj.value[1]
    if not isinstance(typed, cbor2.CBORTag) or typed.tag not in TAG_DTYPES:
        raise WireError(f"tensor: element array must be a typed array with a tag in {sorted(TAG_DTYPES)}")
    if not isinstance(typed.value, bytes):
        raise WireError("tensor: typed array content must be a byte string")
    dtype = np.dtype(_NUMPY_LE[TAG_DTYPES[typed.tag]])
    expected = math.prod(shape) * dtype.itemsize
    if len(typed.value) != expected:
        raise WireError(f"tensor: {len(typed.value)} data bytes, shape {list(shape)} needs {expected}")
    return np.frombuffer(typed.value, dtype=dtype).reshape(shape)


def activation_to_cbor(act: Activation) -> Any:
    """One tensor, or a map name -> tensor (sorted by the canonical encoder)."""
    if isinstance(act, np.ndarray):
        return tensor_to_cbor(act)
    if isinstance(act, Mapping):
        _check_names(list(act))
        return {name: tensor_to_cbor(np.asarray(value)) for name, value in act.items()}
    raise WireError(f"activation must be an ndarray or a mapping of them, got {type(act).__name__}")


def activation_from_cbor(obj: Any) -> Activation:
    if isinstance(obj, cbor2.CBORTag):
        return tensor_from_cbor(obj)
    if isinstance(obj, dict):
        _check_names(list(obj))
        return MappingProxyType({name: tensor_from_cbor(value) for name, value in obj.items()})
    raise WireError("activation: expected a tensor (tag 40) or a map of named tensors")


def _check_names(names: list[Any]) -> None:
    if not names or len(names) > MAX_NAMED_TENSORS:
        raise WireError(f"activation: a tensor map needs 1..{MAX_NAMED_TENSORS} entries, got {len(names)}")
    for name in names:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise WireError(f"activation: tensor name {name!r} is not an identifier of <= 64 chars")
