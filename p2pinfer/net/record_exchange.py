"""`/p2pinfer/records/1.0.0`: ask a peer for the signed capability records it knows.

Why: the DHT alone is too slow to enumerate a swarm (measured here: 12 s to get 50 records, and
`find_providers` stops at 20). A record is verifiable whoever delivers it, so any peer can hand
us every record it has verified; we verify each again before caching (never trust the deliverer).

Wire (canonical CBOR, one request and one response per stream, each a varint-length frame whose
length is checked before the body is read; py-libp2p's `request_response` does the framing,
size limits and the deadline):

    request  = {"v": 1, "limit": uint, ? "record": bstr} ; limit 1..MAX_RECORDS_PER_RESPONSE;
                                                       ; "record": the asker's own signed record
    response = {"v": 1, "records": [* bstr]}           ; at most `limit` blobs, each <= MAX_BLOB_BYTES,
                                                       ; whole frame <= MAX_RESPONSE_BYTES

The responder puts its own record first, then the freshest records of its cache. The asker may
push its own record in the request (push-pull anti-entropy): that is how a bootstrap node learns
about a newcomer at once, instead of waiting for someone else to gossip it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

import cbor2
from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.request_response import (
    RequestContext,
    RequestResponse,
    RequestResponseConfig,
    RequestResponseError,
    RequestTimeoutError,
)

from p2pinfer.core.records import MAX_RECORD_BYTES
from p2pinfer.errors import NetworkError, WireError

logger = logging.getLogger(__name__)

PROTOCOL_ID = TProtocol("/p2pinfer/records/1.0.0")
VERSION = 1
MAX_RECORDS_PER_RESPONSE = 256
MAX_BLOB_BYTES = MAX_RECORD_BYTES
MAX_REQUEST_BYTES = MAX_BLOB_BYTES + 64
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # the responder packs records until this budget is used
_RESPONSE_OVERHEAD = 16  # map header, "v", "records" key and array header
DEFAULT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class RecordsRequest:
    """Ask for up to `limit` records, optionally pushing our own signed record."""

    limit: int = MAX_RECORDS_PER_RESPONSE
    record: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or isinstance(self.limit, bool):
            raise WireError(f"records request: limit must be an integer, got {type(self.limit).__name__}")
        if not 1 <= self.limit <= MAX_RECORDS_PER_RESPONSE:
            raise WireError(f"records request: limit {self.limit} outside 1..{MAX_RECORDS_PER_RESPONSE}")
        if self.record is not None and (not isinstance(self.record, bytes) or len(self.record) > MAX_BLOB_BYTES):
            raise WireError(f"records request: pushed record must be bytes of at most {MAX_BLOB_BYTES}")


@dataclass(frozen=True)
class RecordsResponse:
    """Signed record blobs, unverified until the receiver verifies each one."""

    records: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.records) > MAX_RECORDS_PER_RESPONSE:
            raise WireError(f"records response: {len(self.records)} records, limit {MAX_RECORDS_PER_RESPONSE}")
        for blob in self.records:
            if not isinstance(blob, bytes):
                raise WireError(f"records response: element is {type(blob).__name__}, want bytes")
            if len(blob) > MAX_BLOB_BYTES:
                raise WireError(f"records response: record of {len(blob)} bytes over {MAX_BLOB_BYTES}")


def _decode_map(payload: bytes, what: str) -> dict:
    try:
        obj = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises CBORDecodeError and ValueError subclasses
        raise WireError(f"{what}: malformed CBOR: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise WireError(f"{what}: want a map with v={VERSION}")
    return obj


class RecordsCodec:
    """request_response codec: frozen dataclasses <-> canonical CBOR, strict on decode."""

    def encode_request(self, request: RecordsRequest) -> bytes:
        body: dict = {"v": VERSION, "limit": request.limit}
        if request.record is not None:
            body["record"] = request.record
        return cbor2.dumps(body, canonical=True)

    def decode_request(self, payload: bytes) -> RecordsRequest:
        obj = _decode_map(payload, "records request")
        if not {"v", "limit"} <= set(obj) <= {"v", "limit", "record"}:
            raise WireError(f"records request: unexpected keys {sorted(map(str, obj))}")
        return RecordsRequest(limit=obj["limit"], record=obj.get("record"))

    def encode_response(self, response: RecordsResponse) -> bytes:
        return cbor2.dumps({"v": VERSION, "records": list(response.records)}, canonical=True)

    def decode_response(self, payload: bytes) -> RecordsResponse:
        obj = _decode_map(payload, "records response")
        records = obj.get("records")
        if set(obj) != {"v", "records"} or not isinstance(records, list):
            raise WireError("records response: want {v, records: [bytes]}")
        return RecordsResponse(records=tuple(records))


_CODEC = RecordsCodec()
_CONFIG = RequestResponseConfig(
    timeout=DEFAULT_TIMEOUT_S,
    max_request_size=MAX_REQUEST_BYTES,
    max_response_size=MAX_RESPONSE_BYTES,
    max_concurrent_inbound=32,
)

def _pack(blobs: list[bytes], *, limit: int) -> list[bytes]:
    """Take blobs in order while they fit the count limit and the response byte budget."""
    out: list[bytes] = []
    used = _RESPONSE_OVERHEAD
    for blob in blobs:
        cost = len(blob) + 9  # bstr header is at most 9 bytes
        if len(out) >= limit or used + cost > MAX_RESPONSE_BYTES:
            break
        if len(blob) <= MAX_BLOB_BYTES:
            out.append(blob)
            used += cost
    return out


RecordSource = Callable[[int], list[bytes]]
"""Returns up to `limit` signed record blobs to hand out (own record first)."""
RecordSink = Callable[[bytes, ID], Awaitable[None]]
"""Receives a record pushed by an asker (unverified: the sink must verify it)."""


def serve_records(host: IHost, source: RecordSource, sink: RecordSink | None = None) -> RequestResponse:
    """Answer `/p2pinfer/records/1.0.0` on `host` with blobs from `source`."""
    rr = RequestResponse(host)

    async def handler(request: RecordsRequest, ctx: RequestContext) -> RecordsResponse:
        if request.record is not None and sink is not None:
            await sink(request.record, ctx.peer_id)
        blobs = _pack(source(request.limit), limit=request.limit)
        logger.debug("serving %d records to %s", len(blobs), ctx.peer_id)
        return RecordsResponse(records=tuple(blobs))

    rr.set_handler(PROTOCOL_ID, handler, _CODEC, _CONFIG)
    return rr


async def fetch_records(
    host: IHost,
    peer_id: ID,
    *,
    limit: int = MAX_RECORDS_PER_RESPONSE,
    timeout: float = DEFAULT_TIMEOUT_S,
    push: bytes | None = None,
) -> list[bytes]:
    """Ask `peer_id` for its records (unverified blobs). NetworkError/WireError on failure."""
    config = RequestResponseConfig(
        timeout=timeout, max_request_size=MAX_REQUEST_BYTES, max_response_size=MAX_RESPONSE_BYTES
    )
    try:
        response = await RequestResponse(host).send_request(
            peer_id, [PROTOCOL_ID], RecordsRequest(limit=limit, record=push), _CODEC, config
        )
    except RequestTimeoutError as exc:
        raise NetworkError(f"records from {peer_id}: timed out after {timeout}s") from exc
    except RequestResponseError as exc:
        cause = exc.__cause__
        if isinstance(cause, WireError):
            raise WireError(f"records from {peer_id}: {cause}") from exc
        raise NetworkError(f"records from {peer_id}: {exc}") from exc
    return list(response.records)
