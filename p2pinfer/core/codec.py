"""Canonical CBOR and RFC 8746 tensors: the byte-level encoding of every circuit message.

Why a module of its own: the wire messages (core/wire.py) and the sealed frame payloads share one
strict decoder, and every rule about what bytes we accept lives here, in one place:

- `decode_strict` checks the size BEFORE parsing and accepts only canonical CBOR of the small
  subset our messages use (its own ~100-line reader: no floats, no indefinite lengths, keys in
  canonical order, shortest-form heads, bounded depth, no trailing bytes); every problem is a
  `WireError` naming it. Encoding uses cbor2's canonical mode.
- Tensors are RFC 8746 multi-dimensional arrays: tag 40 over `[shape, typed-array]`, where the
  typed array is one of the little-endian typed-array tags below (row-major, C order). Ranks,
  dimensions, element counts and dtypes are bounded; the byte length must equal
  prod(shape) * itemsize exactly.
- An "activation" is either one tensor or a map of names to tensors (a span's input or output
  may be a dict of named tensors, e.g. hidden states plus an attention mask).

Pure: numpy and cbor2 only, no I/O.
"""

from __future__ import annotations

import math
import os
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
    """Deterministic CBOR (RFC 7049 section 3.9 canonical, as cbor2 canonical=True): the bytes we
    sign and hash. Large byte strings are spliced in afterwards (cbor2's canonical mode copies
    every nested value several times while sorting keys; a 16 MiB activation made that ~60 ms)."""
    big: dict[bytes, bytes] = {}
    skeleton = cbor2.dumps(_stub_large(obj, big), canonical=True)
    if not big:
        return skeleton
    parts: list[bytes] = []
    pos = 0
    for marker in sorted(big, key=skeleton.find):
        at = skeleton.find(marker)
        parts += [skeleton[pos:at], _head(2, len(big[marker])), big[marker]]
        pos = at + len(marker)
    parts.append(skeleton[pos:])
    return b"".join(parts)


_SPLICE_MIN = 4096


def _stub_large(obj: Any, big: dict[bytes, bytes]) -> Any:
    """Replace byte strings >= _SPLICE_MIN by unique random 16-byte stubs (map keys untouched)."""
    if isinstance(obj, (bytes, bytearray, memoryview)) and memoryview(obj).nbytes >= _SPLICE_MIN:
        stub = os.urandom(16)
        # 0x50: bstr of length 16. Buffers are joined as they are (no copy before the final join).
        big[b"\x50" + stub] = obj if isinstance(obj, bytes) else memoryview(obj).cast("B")
        return stub
    if isinstance(obj, dict):
        return {k: _stub_large(v, big) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_stub_large(v, big) for v in obj]
    if isinstance(obj, cbor2.CBORTag):
        return cbor2.CBORTag(obj.tag, _stub_large(obj.value, big))
    return obj


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise WireError(f"length {n} does not fit CBOR")


def decode_strict(data: bytes, *, max_size: int, what: str = "message") -> Any:
    """Decode exactly one canonical CBOR item of at most `max_size` bytes, or WireError.

    Accepted subset (all our messages need): unsigned/negative ints, byte and text strings,
    arrays, maps, tags, true/false/null; definite lengths, shortest-form heads, map keys in
    canonical order without duplicates, nesting depth <= 16. Floats, indefinite lengths,
    undefined/simple values and trailing bytes are rejected. Large byte strings are sliced
    out of the frame without re-buffering.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise WireError(f"{what}: {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise WireError(f"{what}: empty")
    reader = _Reader(bytes(data), what)
    obj = reader.item(0)
    if reader.pos != len(reader.data):
        raise WireError(f"{what}: {len(reader.data) - reader.pos} trailing bytes after the CBOR item")
    return obj


class _Reader:
    """Cursor over one frame; each CBOR major type has its own small method (dispatch table)."""

    MAX_DEPTH = 16

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def fail(self, problem: str) -> WireError:
        return WireError(f"{self.what}: not valid canonical CBOR: {problem} at byte {self.pos}")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail(f"truncated (needs {n} more bytes)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def head(self) -> tuple[int, int, int]:
        """(major, info, argument) with the shortest-form rule enforced."""
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 31
        if info < 24:
            return major, info, info
        if info > 27:
            raise self.fail("indefinite length or reserved additional info")
        if major == 7:
            raise self.fail("floats, undefined and simple values are not allowed")
        size = 1 << (info - 24)
        arg = int.from_bytes(self.take(size), "big")
        if arg < (24 if size == 1 else 1 << (4 * size)):
            raise self.fail("integer or length not in shortest form")
        return major, info, arg

    def item(self, depth: int) -> Any:
        if depth > self.MAX_DEPTH:
            raise self.fail(f"nesting deeper than {self.MAX_DEPTH}")
        major, info, arg = self.head()
        return _MAJORS[major](self, info, arg, depth)

    def _uint(self, info: int, arg: int, depth: int) -> int:
        return arg

    def _negint(self, info: int, arg: int, depth: int) -> int:
        return -1 - arg

    def _bytes(self, info: int, arg: int, depth: int) -> bytes:
        return self.take(arg)

    def _text(self, info: int, arg: int, depth: int) -> str:
        try:
            return self.take(arg).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("text string is not UTF-8") from None

    def _array(self, info: int, arg: int, depth: int) -> list[Any]:
        if arg > len(self.data) - self.pos:
            raise self.fail(f"array of {arg} items cannot fit")
        return [self.item(depth + 1) for _ in range(arg)]

    def _map(self, info: int, arg: int, depth: int) -> dict[Any, Any]:
        if arg > len(self.data) - self.pos:
            raise self.fail(f"map of {arg} entries cannot fit")
        out: dict[Any, Any] = {}
        previous = b""
        for _ in range(arg):
            start = self.pos
            key = self.item(depth + 1)
            raw = self.data[start:self.pos]
            if not isinstance(key, (str, int)):
                raise self.fail("map keys must be text or integers")
            if (len(raw), raw) <= (len(previous), previous):
                raise self.fail("map keys not in canonical order or duplicated")
            previous = raw
            out[key] = self.item(depth + 1)
        return out

    def _tag(self, info: int, arg: int, depth: int) -> cbor2.CBORTag:
        return cbor2.CBORTag(arg, self.item(depth + 1))

    def _simple(self, info: int, arg: int, depth: int) -> Any:
        if info in _SIMPLE:
            return _SIMPLE[info]
        raise self.fail("floats, undefined and simple values are not allowed")


_SIMPLE = {20: False, 21: True, 22: None}
_MAJORS = (_Reader._uint, _Reader._negint, _Reader._bytes, _Reader._text, _Reader._array, _Reader._map,
           _Reader._tag, _Reader._simple)


def tensor_to_cbor(arr: np.ndarray) -> cbor2.CBORTag:
    """An ndarray as tag 40 [shape, typed array]; non-LE / non-contiguous input is converted.
    Encode the result right away: a large tensor's bytes are a view of the array's memory."""
    name = arr.dtype.name
    if name not in DTYPE_TAGS:
        raise WireError(f"tensor dtype {name!r} is not one of {sorted(DTYPE_TAGS)}")
    if arr.ndim > MAX_RANK:
        raise WireError(f"tensor rank {arr.ndim} exceeds {MAX_RANK}")
    contiguous = np.ascontiguousarray(arr, dtype=np.dtype(_NUMPY_LE[name]))
    # a large tensor goes to encode_canonical as a view of its memory: copied once, by the final join
    data = contiguous.tobytes() if contiguous.nbytes < _SPLICE_MIN else memoryview(contiguous).cast("B")
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
