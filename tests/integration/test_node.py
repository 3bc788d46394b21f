"""The Node as a library: config -> record, services plugged in, held weights/load republished."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2pinfer.config import config_from_dict
from p2pinfer.errors import P2PInferError
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.node import IDENTITY_FILE, Node
from tests.conftest import async_wait_until
from tests.integration._nodes import FAST, capability

ECHO = TProtocol("/test/echo/1.0.0")


class EchoService:
    """A minimal NodeService: registers a stream handler before reporting started."""

    def __init__(self) -> None:
        self.node: Node | None = None

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.node = node

        async def handle(stream: Any) -> None:
            data = await read_frame(stream, max_size=1024, timeout=5)
            await write_frame(stream, data.upper(), max_size=1024, timeout=5)
            await stream.close()

        node.host.set_stream_handler(ECHO, handle)
        task_status.started()
        await trio.sleep_forever()


async def test_node_from_config_advertises_configured_numbers_and_persists_identity(tmp_path: Path) -> None:
    config = config_from_dict({
        "node": {"name": "n1", "record_ttl_s": 30, "republish_s": 10},
        "resources": {"gflops": 7.5, "mem_bytes": "512 MiB"},
        "emulation": {"up_mbps": 20.0, "down_mbps": 40.0, "latency_ms": 12.0},
    })
    async with Node(config, data_dir=tmp_path) as node:
        record = node.record
        assert record is not None and record.peer_id == node.peer_id
        assert (record.gflops, record.mem_bytes) == (7.5, 512 * 2**20)
        assert (record.up_mbps, record.down_mbps, record.latency_ms) == (20.0, 40.0, 12.0)
        assert record.addrs == tuple(node.listen_addrs)
        assert all(a.endswith(f"/p2p/{node.peer_id}") for a in node.listen_addrs)
        assert record.expires_at - record.seq / 1000 == pytest.approx(30, abs=1)
        first_id = node.peer_id
    assert stat.S_IMODE((tmp_path / IDENTITY_FILE).stat().st_mode) == 0o600
    async with Node(config, data_dir=tmp_path) as again:
        assert again.peer_id == first_id


async def test_services_run_alongside_and_updates_are_republished() -> None:
    echo = EchoService()
    async with trio.open_nursery() as nursery:
        server = Node(FAST, capability=capability(0), services=[echo])
        await nursery.start(server.run)
        with pytest.raises(P2PInferError):
            server.add_service(EchoService())  # too late: already started
        client = Node(replace(FAST, bootstrap=(server.listen_addrs[0],)), capability=capability(1))
        await nursery.start(client.run)
        assert echo.node is server
        stream = await client.host.new_stream(ID.from_base58(server.peer_id), [ECHO])
        await write_frame(stream, b"hello", max_size=1024, timeout=5)
        assert await read_frame(stream, max_size=1024, timeout=5) == b"HELLO"

        seq = server.record.seq  # type: ignore[union-attr]
        server.update_held(models=("m1",), weights=("w" * 64,))
        server.set_load(0.25)
        await async_wait_until(
            lambda: any(r.peer_id == server.peer_id and r.models == ("m1",) and r.load == 0.25 and r.seq > seq
                        for r in client.peers()),
            timeout=10, what="the client to see the republished record")
        nursery.cancel_scope.cancel()


async def test_node_settings_without_capability_is_refused() -> None:
    with pytest.raises(P2PInferError, match="capability"):
        Node(FAST)
