"""Weight and manifest transfer by content hash: a lying peer's bytes are discarded and the next
holder is used; nothing unverified reaches the store."""

from __future__ import annotations

import contextlib

import pytest
import trio
from libp2p.peer.peerinfo import PeerInfo

from p2pinfer.core import wire
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import ModelError, UnknownModelError
from p2pinfer.models import zoo
from p2pinfer.models.store import ModelStore
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.net.weights_protocol import WEIGHTS_PROTOCOL, WeightFetcher, WeightService

from tests.integration.circuit_swarm import _host


def _liar(host):
    """A hostile peer: answers every request with bytes that do not match the hash."""
    async def handle(stream):
        request = wire.decode(await read_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=5), expect=[wire.WeightRequest])
        await write_frame(stream, wire.encode(wire.WeightBlob(hash=request.hash, data=b"not the weights")), max_size=1 << 20, timeout=5)
        await stream.close()
    host.set_stream_handler(WEIGHTS_PROTOCOL, handle)


async def test_lying_source_is_skipped_and_honest_source_used(tmp_path):
    honest_id, liar_id, me_id = Identity.generate(), Identity.generate(), Identity.generate()
    async with contextlib.AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        honest, liar, me = [await stack.enter_async_context(_host(i)) for i in (honest_id, liar_id, me_id)]
        honest_store = ModelStore(tmp_path / "honest")
        manifest = zoo.get_manifest("mlp", store=honest_store)
        await nursery.start(WeightService(honest, honest_store).run)
        _liar(liar)
        for other in (honest, liar):
            await me.connect(PeerInfo(other.get_id(), other.get_addrs()))
        store = ModelStore(tmp_path / "me")
        fetcher = WeightFetcher(me, store)
        with pytest.raises(UnknownModelError):
            await fetcher.ensure_manifest(manifest.model_id, [liar_id.peer_id])
        assert not store.has_manifest(manifest.model_id) and fetcher.rejected == 1
        got = await fetcher.ensure_manifest(manifest.model_id, [liar_id.peer_id, honest_id.peer_id])
        assert got == manifest and store.has_manifest(manifest.model_id)
        hashes = manifest.weight_hashes()
        with pytest.raises(ModelError, match="not held"):
            await fetcher.ensure_blobs(hashes[:1], [liar_id.peer_id])
        assert not store.has_blob(hashes[0])
        assert await fetcher.ensure_blobs(hashes, [liar_id.peer_id, honest_id.peer_id]) == len(hashes)
        assert all(store.get_blob(h) == honest_store.get_blob(h) for h in hashes)
        assert await fetcher.ensure_blobs(hashes, []) == 0  # cached on disk: nothing fetched again
