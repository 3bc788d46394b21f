"""framing.read_frame/write_frame over an in-memory stream that hands out bytes in chosen chunks
(the chunking a yamux stream produces), so every path of the read loop is exercised exactly."""

from __future__ import annotations

from collections import deque

import pytest
import trio
from libp2p.io.exceptions import MessageTooLarge
from libp2p.utils.varint import encode_uvarint

from p2pinfer.errors import NetworkError, WireError
from p2pinfer.net.framing import MAX_VARINT_BYTES, read_frame, write_frame


class ChunkedStream:
    """read(n) returns at most n bytes and never crosses a chunk boundary; written bytes are kept."""

    def __init__(self, chunks: list[bytes] = (), *, then_block: bool = False) -> None:
        self.chunks, self.then_block, self.read_calls, self.writes = deque(chunks), then_block, 0, []

    async def read(self, n: int) -> bytes:
        self.read_calls += 1
        if not self.chunks:
            if self.then_block:
                await trio.sleep_forever()
            return b""
        head = self.chunks[0]
        out, rest = head[:n], head[n:]
        if rest:
            self.chunks[0] = rest
        else:
            self.chunks.popleft()
        return out

    async def write(self, data: bytes) -> None:
        self.writes.append(data)

    def remaining(self) -> int:
        return sum(map(len, self.chunks))


async def test_a_body_that_arrives_in_one_read_is_returned_without_a_copy():
    body = bytes(range(256)) * 4096  # 1 MiB
    prefix = encode_uvarint(len(body))
    stream = ChunkedStream([prefix, body])
    out = await read_frame(stream, max_size=len(body), timeout=5)
    assert out is body


@pytest.mark.parametrize("size, cut", [(3000, 1), (30_000, 7), (1_000_000, 65536), (1_000_000, 300_000)])
async def test_a_body_in_many_chunks_is_reassembled_exactly(size, cut):
    body = bytes(range(251)) * (size // 251)
    wire = encode_uvarint(len(body)) + body + encode_uvarint(3) + b"abc"
    stream = ChunkedStream([wire[i:i + cut] for i in range(0, len(wire), cut)])
    assert await read_frame(stream, max_size=1 << 20, timeout=5) == body
    assert await read_frame(stream, max_size=1 << 20, timeout=5) == b"abc"  # nothing of frame 2 was eaten
    assert stream.remaining() == 0


async def test_write_frame_is_one_write_that_read_frame_reads_back():
    stream = ChunkedStream()
    await write_frame(stream, b"x" * 1000, max_size=1000, timeout=5)
    await write_frame(stream, b"", max_size=1000, timeout=5)
    assert len(stream.writes) == 2
    reader = ChunkedStream(stream.writes)
    assert await read_frame(reader, max_size=1000, timeout=5) == b"x" * 1000
    assert await read_frame(reader, max_size=1000, timeout=5) == b""


async def test_write_frame_refuses_an_oversized_payload_before_writing():
    stream = ChunkedStream()
    with pytest.raises(WireError, match="exceeds the limit"):
        await write_frame(stream, b"x" * 11, max_size=10, timeout=5)
    assert stream.writes == []


async def test_an_oversized_length_is_refused_before_any_body_byte_is_read():
    body = b"\0" * 2000
    stream = ChunkedStream([encode_uvarint(len(body)), body])
    with pytest.raises(WireError, match="over the limit") as info:
        await read_frame(stream, max_size=1999, timeout=5)
    assert isinstance(info.value.__cause__, MessageTooLarge)
    assert stream.remaining() == len(body)


async def test_a_huge_length_is_refused_as_soon_as_its_prefix_exceeds_the_limit():
    stream = ChunkedStream([encode_uvarint((1 << 40) - 1), b"\0" * 16])
    with pytest.raises(WireError, match="over the limit"):
        await read_frame(stream, max_size=1 << 20, timeout=5)
    assert stream.read_calls == 3  # 3 bytes announce >= 2^21 - 1 > 2^20: the rest is never read
    assert stream.remaining() == len(encode_uvarint((1 << 40) - 1)) - 3 + 16


async def test_an_endless_varint_is_a_wire_error():
    stream = ChunkedStream([b"\x80" * (MAX_VARINT_BYTES + 2)])
    with pytest.raises(WireError, match="not a varint"):
        await read_frame(stream, max_size=1 << 62, timeout=5)


@pytest.mark.parametrize("chunks", [[b""], [b"\x85"], [encode_uvarint(100), b"x" * 40]])
async def test_a_stream_ending_inside_a_frame_is_a_network_error(chunks):
    with pytest.raises(NetworkError, match="ended inside a frame"):
        await read_frame(ChunkedStream(chunks), max_size=1000, timeout=5)


async def test_a_silent_peer_hits_the_deadline(autojump_clock):
    stream = ChunkedStream([encode_uvarint(100), b"x" * 40], then_block=True)
    with pytest.raises(NetworkError, match="timed out after 3"):
        await read_frame(stream, max_size=1000, timeout=3)
