"""The record-exchange wire codec: strict decoding, bounded sizes and counts."""

from __future__ import annotations

import cbor2
import pytest

from p2pinfer.errors import WireError
from p2pinfer.net.record_exchange import (
    MAX_BLOB_BYTES,
    MAX_RECORDS_PER_RESPONSE,
    MAX_RESPONSE_BYTES,
    RecordsCodec,
    RecordsRequest,
    RecordsResponse,
    _pack,
)

codec = RecordsCodec()


def test_round_trip() -> None:
    request = RecordsRequest(limit=7, record=b"mine")
    assert codec.decode_request(codec.encode_request(request)) == request
    assert codec.decode_request(codec.encode_request(RecordsRequest())) == RecordsRequest()
    response = RecordsResponse(records=(b"a", b"bb"))
    assert codec.decode_response(codec.encode_response(response)) == response


@pytest.mark.parametrize("payload", [
    b"\xff\x00",
    cbor2.dumps([1, 2]),
    cbor2.dumps({"v": 2, "limit": 1}),
    cbor2.dumps({"v": 1}),
    cbor2.dumps({"v": 1, "limit": 0}),
    cbor2.dumps({"v": 1, "limit": MAX_RECORDS_PER_RESPONSE + 1}),
    cbor2.dumps({"v": 1, "limit": True}),
    cbor2.dumps({"v": 1, "limit": 1, "extra": 1}),
    cbor2.dumps({"v": 1, "limit": 1, "record": "text"}),
    cbor2.dumps({"v": 1, "limit": 1, "record": b"x" * (MAX_BLOB_BYTES + 1)}),
])
def test_bad_requests_are_wire_errors(payload: bytes) -> None:
    with pytest.raises(WireError):
        codec.decode_request(payload)


@pytest.mark.parametrize("payload", [
    cbor2.dumps({"v": 1, "records": "nope"}),
    cbor2.dumps({"v": 1, "records": [1]}),
    cbor2.dumps({"v": 1, "records": [b"x" * (MAX_BLOB_BYTES + 1)]}),
    cbor2.dumps({"v": 1, "records": [b"x"] * (MAX_RECORDS_PER_RESPONSE + 1)}),
    cbor2.dumps({"v": 1}),
])
def test_bad_responses_are_wire_errors(payload: bytes) -> None:
    with pytest.raises(WireError):
        codec.decode_response(payload)


def test_pack_respects_count_and_byte_budget() -> None:
    assert len(_pack([b"x"] * 10, limit=3)) == 3
    big = [b"y" * MAX_BLOB_BYTES] * 100
    packed = _pack(big, limit=MAX_RECORDS_PER_RESPONSE)
    assert 0 < len(packed) < 100
    assert len(codec.encode_response(RecordsResponse(records=tuple(packed)))) <= MAX_RESPONSE_BYTES
