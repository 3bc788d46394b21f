"""Wire messages and the RFC 8746 tensor codec: round trips and strict rejection."""

from __future__ import annotations

import os

import cbor2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.core import codec, wire
from p2pinfer.errors import WireError


def _c(obj):
    return cbor2.dumps(obj, canonical=True)


def _assignment(**over):
    fields = dict(
        circuit_id=os.urandom(16), hop="hop", requester="req", model_id="mlp", start=0, stop=2,
        weight_hashes=("sha256:aa",), in_link=0, in_key=b"a" * 32, out_key=b"b" * 32,
        next_hop=wire.NextHop("req", ("/ip4/127.0.0.1/tcp/1",), True), deadline_ms=10**12)
    fields.update(over)
    return wire.Assignment(**fields)


def test_assignment_round_trip_is_canonical():
    a = _assignment()
    data = wire.encode(a)
    assert wire.decode(data, expect=[wire.Assignment]) == a
    assert wire.encode(wire.decode(data, expect=[wire.Assignment])) == data


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int32", "uint8", "int8"])
def test_tensor_round_trip_each_dtype(dtype):
    arr = (np.arange(24).reshape(2, 3, 4) % 7).astype(dtype)
    tagged = codec.tensor_to_cbor(arr)
    assert tagged.tag == 40 and tagged.value[1].tag == codec.DTYPE_TAGS[dtype]
    back = codec.tensor_from_cbor(codec.decode_strict(_c(tagged), max_size=1 << 20))
    assert back.dtype == arr.dtype and back.shape == arr.shape and np.array_equal(back, arr)


def test_big_endian_and_non_contiguous_input_is_normalised():
    arr = np.arange(12, dtype=">f4").reshape(3, 4).T
    back = codec.tensor_from_cbor(codec.tensor_to_cbor(arr))
    assert np.array_equal(back, arr) and back.dtype == np.dtype("<f4")


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 5), max_size=4), names=st.sets(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=3))
def test_named_activation_round_trip(shape, names):
    act = {n: np.random.default_rng(0).standard_normal(shape).astype(np.float32) for n in names}
    data = wire.encode(wire.FramePayload(act=act, trace=(1, 2)))
    got = wire.decode(data, expect=[wire.FramePayload], max_size=1 << 20)
    assert set(got.act) == names and all(np.array_equal(got.act[n], act[n]) for n in names)


def test_size_is_checked_before_parsing():
    with pytest.raises(WireError, match="exceeds the limit"):
        codec.decode_strict(b"\xff" * 100, max_size=10)


@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"\x1f", "not valid canonical CBOR"),
    (_c({"t": "assign", "sealed": b"x"}) + b"\x00", "trailing"),
    (_c([1, 2]), "expected a CBOR map"),
    (_c({"t": "nope"}), "unknown type"),
    (_c({"t": "frame"}), "not expected here"),
    (_c({"t": "assign", "sealed": b"x", "extra": 1}), "unknown fields"),
    (_c({"t": "assign"}), "missing fields"),
    (_c({"t": "assign", "sealed": "text"}), "expected a byte string"),
])
def test_malformed_messages_are_rejected_with_the_problem_named(data, problem):
    with pytest.raises(WireError, match=problem):
        wire.decode(data, expect=[wire.AssignRequest])


def test_cross_field_rules_reject_inconsistent_assignments():
    good = wire._to_map(_assignment())
    for change, problem in [({"start": 3, "stop": 3}, "empty or reversed"),
                            ({"out_key": b"a" * 32}, "must differ"),
                            ({"in_key": b"a" * 31}, "expected 32 bytes"),
                            ({"start": -1}, "expected an integer"),
                            ({"start": True}, "expected an integer"),
                            ({"next_hop": {"peer_id": "x", "addrs": [], "final": True}}, "final hop")]:
        with pytest.raises(WireError, match=problem):
            wire.decode(_c({**good, **change}), expect=[wire.Assignment])


@pytest.mark.parametrize("tensor, problem", [
    (cbor2.CBORTag(41, [[1], cbor2.CBORTag(85, b"\0" * 4)]), "tag 40"),
    (cbor2.CBORTag(40, [[2], cbor2.CBORTag(85, b"\0" * 4)]), "needs 8"),
    (cbor2.CBORTag(40, [[1] * 9, cbor2.CBORTag(85, b"\0" * 4)]), "rank 9"),
    (cbor2.CBORTag(40, [[-1], cbor2.CBORTag(85, b"")]), "dimension"),
    (cbor2.CBORTag(40, [[1 << 20, 1 << 20], cbor2.CBORTag(85, b"")]), "elements exceeds"),
    (cbor2.CBORTag(40, [[1], cbor2.CBORTag(81, b"\0" * 4)]), "typed array"),  # big-endian f32
    (cbor2.CBORTag(40, [[1], b"\0" * 4]), "typed array"),
    ({"bad name!": cbor2.CBORTag(40, [[1], cbor2.CBORTag(85, b"\0" * 4)])}, "tensor name"),
    ({}, "1..32 entries"),
])
def test_bad_tensors_are_rejected(tensor, problem):
    data = _c({"t": "payload", "act": tensor, "trace": []})
    with pytest.raises(WireError, match=problem):
        wire.decode(data, expect=[wire.FramePayload])


def test_unsupported_dtype_cannot_be_encoded():
    with pytest.raises(WireError, match="dtype"):
        codec.tensor_to_cbor(np.zeros(2, dtype=np.complex64))


def test_refusal_reason_must_be_known():
    data = _c({"t": "refused", "circuit_id": b"", "hop": "h", "reason": "whatever", "message": ""})
    with pytest.raises(WireError, match="not one of"):
        wire.decode(data, expect=[wire.AssignmentRefused])


@pytest.mark.parametrize("data, problem", [
    (b"\x18\x05", "shortest form"),                       # 5 encoded in two bytes
    (b"\x5f\x41a\xff", "indefinite"),                    # indefinite-length byte string
    (b"\xa2\x61b\x01\x61a\x02", "canonical order"),      # keys out of order
    (b"\xa2\x61a\x01\x61a\x02", "canonical order"),      # duplicate key
    (b"\xfb" + b"\0" * 8, "floats"),
    (b"\xf7", "floats, undefined"),                        # undefined
    (b"\x62\xff\xfe", "UTF-8"),
    (b"\x45abc", "truncated"),
    (b"\x9a\xff\xff\xff\xff", "cannot fit"),            # array claiming 4G items
    (b"\x81" * 40 + b"\x00", "nesting"),
    (b"\xa1\x41k\x00", "map keys must be"),                # byte-string key
])
def test_only_canonical_cbor_is_accepted(data, problem):
    with pytest.raises(WireError, match=problem):
        codec.decode_strict(data, max_size=1 << 10)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=5000) | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4), max_leaves=12))
def test_strict_decoder_agrees_with_cbor2_on_canonical_data(obj):
    data = codec.encode_canonical(obj)
    assert data == cbor2.dumps(obj, canonical=True)  # splicing big byte strings changes nothing
    assert codec.decode_strict(data, max_size=1 << 20) == cbor2.loads(data)


_VALID = [wire.encode(_assignment()),
          wire.encode(wire.FramePayload(act={"x": np.ones((2, 2), np.float32)}, trace=(3,))),
          wire.encode(wire.ActivationFrame(circuit_id=b"c" * 16, link=1, seq=2, nonce=b"n" * 24, box=b"b" * 40))]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300) | st.sampled_from(_VALID).flatmap(
    lambda v: st.tuples(st.integers(0, len(v) - 1), st.integers(0, 255)).map(lambda m: v[:m[0]] + bytes([m[1]]) + v[m[0] + 1:])))
def test_arbitrary_or_mutated_bytes_only_ever_raise_wire_error(data):
    """Fuzz: the decoder never crashes with anything but WireError, whatever the bytes."""
    try:
        wire.decode(data, expect=list(wire.DECODERS.values()), max_size=1 << 16)
    except WireError:
        pass


def test_large_tensors_encode_to_the_same_canonical_bytes_as_cbor2():
    """Large tensors are spliced from a view of the array's memory: the bytes must not change
    (digests, commitments and signatures are over them)."""
    arr = np.random.default_rng(3).standard_normal((64, 1024)).astype(np.float32)
    act = {"x": arr, "mask": np.ones((1, 64), dtype=np.int64)}
    reference = cbor2.dumps({name: cbor2.CBORTag(40, [list(a.shape), cbor2.CBORTag(codec.DTYPE_TAGS[a.dtype.name], a.tobytes())])
                             for name, a in act.items()}, canonical=True)
    encoded = codec.encode_canonical(codec.activation_to_cbor(act))
    assert isinstance(encoded, bytes) and encoded == reference
    back = codec.activation_from_cbor(codec.decode_strict(encoded, max_size=1 << 20))
    assert np.array_equal(back["x"], arr)
