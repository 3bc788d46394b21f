"""Content-addressed weight and manifest transfer over "/p2pinfer/weights/1.0.0".

Request/response on one stream: the client writes WeightRequest frames (kind "blob" or
"manifest", plus the content hash / model id), the server answers each with WeightBlob or
WeightMissing, until the client closes. Nothing received is trusted: a blob is stored only via
`ModelStore.put_blob`, which re-hashes it, and a manifest only if its canonical encoding hashes
to the requested model id. Sources are tried in order; any peer that has the content will do,
since the hash, not the sender, vouches for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from p2pinfer.core import wire
from p2pinfer.errors import ModelError, NetworkError, P2PInferError, UnknownModelError, WeightIntegrityError, WireError
from p2pinfer.models.manifest import Manifest
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_io import close_stream, next_frame, open_stream, remote_peer
from p2pinfer.net.framing import read_frame, write_frame

log = logging.getLogger(__name__)
WEIGHTS_PROTOCOL = TProtocol("/p2pinfer/weights/1.0.0")
T = TypeVar("T")


@dataclass(frozen=True)
class WeightsConfig:
    io_timeout_s: float = 60.0
    max_blob_bytes: int = wire.MAX_WEIGHT_FRAME

    def __post_init__(self) -> None:
        if self.io_timeout_s <= 0 or self.max_blob_bytes <= 0:
            raise ValueError("weights: timeouts and size limits must be positive")


def _lookup(store: ModelStore, request: wire.WeightRequest) -> bytes | None:
    """Runs in a worker thread (disk I/O); None when we do not hold it."""
    try:
        if request.kind == "manifest":
            return store.get_manifest(request.hash).to_cbor() if store.has_manifest(request.hash) else None
        return store.get_blob(request.hash) if store.has_blob(request.hash) else None
    except ModelError as exc:  # includes a corrupted local copy: do not serve it
        log.warning("not serving %s %s: %s", request.kind, request.hash[:16], exc)
        return None


class WeightService:
    """Serves blobs and manifests from a ModelStore to any peer that asks by hash."""

    def __init__(self, host: IHost, store: ModelStore, *, config: WeightsConfig = WeightsConfig()) -> None:
        self.host, self.store, self.config = host, store, config
        self.served = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(WEIGHTS_PROTOCOL, self._handle)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.host.remove_stream_handler(WEIGHTS_PROTOCOL)

    async def _handle(self, stream: INetStream) -> None:
        try:
            while True:
                data = await next_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=self.config.io_timeout_s)
                if data is None:
                    return  # client closed or went quiet
                request = wire.decode(data, expect=[wire.WeightRequest])
                content = await trio.to_thread.run_sync(_lookup, self.store, request)
                reply = wire.WeightMissing(hash=request.hash) if content is None else wire.WeightBlob(hash=request.hash, data=content)
                self.served += content is not None
                await write_frame(stream, wire.encode(reply), max_size=self.config.max_blob_bytes + 1024, timeout=self.config.io_timeout_s)
        except P2PInferError as exc:
            log.warning("weights stream from %s ended: %s", remote_peer(stream), exc)
        finally:
            await close_stream(stream)


class WeightFetcher:
    """Fetches what a local store lacks from the given sources, verifying before storing."""

    def __init__(self, host: IHost, store: ModelStore, *, config: WeightsConfig = WeightsConfig()) -> None:
        self.host, self.store, self.config = host, store, config
        self.fetched = 0
        self.rejected = 0

    async def ensure_manifest(self, model_id: str, sources: Sequence[str]) -> Manifest:
        if await trio.to_thread.run_sync(self.store.has_manifest, model_id):
            return await trio.to_thread.run_sync(self.store.get_manifest, model_id)

        def accept(data: bytes) -> Manifest:
            manifest = Manifest.from_cbor(data)  # validates every field and layer kind
            if manifest.model_id != model_id:
                raise WeightIntegrityError(f"manifest received for {model_id[:16]}... hashes to {manifest.model_id[:16]}...")
            self.store.put_manifest(manifest)
            return manifest

        manifest = await self._fetch("manifest", model_id, sources, accept)
        if manifest is None:
            raise UnknownModelError(f"model {model_id[:16]}... is neither local nor held by {len(sources)} source(s)")
        return manifest

    async def ensure_blobs(self, hashes: Sequence[str], sources: Sequence[str]) -> int:
        """Fetch every missing blob; returns how many were fetched. ModelError if one cannot be."""
        fetched = 0
        for blob_hash in hashes:
            if await trio.to_thread.run_sync(self.store.has_blob, blob_hash):
                continue
            stored = await self._fetch("blob", blob_hash, sources, lambda data, h=blob_hash: self.store.put_blob(h, data) or True)
            if not stored:
                raise ModelError(f"weights {blob_hash[:16]}... are not held (intact) by any of {len(sources)} source(s)")
            fetched += 1
        self.fetched += fetched
        return fetched

    async def _fetch(self, kind: str, content_hash: str, sources: Sequence[str], accept: Callable[[bytes], T]) -> T | None:
        """Try sources in order; `accept` verifies and stores (in a worker thread) or raises ModelError."""
        for source in sources:
            try:
                data = await fetch_content(self.host, source, kind, content_hash, config=self.config)
                if data is not None:
                    return await trio.to_thread.run_sync(accept, data)
            except (NetworkError, WireError) as exc:
                log.info("fetching %s %s from %s failed: %s", kind, content_hash[:16], source, exc)
            except ModelError as exc:  # includes WeightIntegrityError: the source lied or is corrupt
                self.rejected += 1
                log.warning("discarding %s %s from %s: %s", kind, content_hash[:16], source, exc)
        return None


async def fetch_content(host: IHost, peer_id: str, kind: str, content_hash: str, *,
                        config: WeightsConfig = WeightsConfig()) -> bytes | None:
    """One request on a fresh stream; None if the peer does not hold it. Not verified here."""
    stream = await open_stream(host, peer_id, WEIGHTS_PROTOCOL, timeout=config.io_timeout_s)
    try:
        await write_frame(stream, wire.encode(wire.WeightRequest(kind=kind, hash=content_hash)),
                          max_size=wire.MAX_CONTROL_FRAME, timeout=config.io_timeout_s)
        data = await read_frame(stream, max_size=config.max_blob_bytes + 1024, timeout=config.io_timeout_s)
        reply = wire.decode(data, expect=[wire.WeightBlob, wire.WeightMissing], max_size=config.max_blob_bytes + 1024)
    finally:
        await close_stream(stream)
    if reply.hash != content_hash:
        raise WireError(f"peer {peer_id} answered for {reply.hash[:16]}..., we asked for {content_hash[:16]}...")
    return reply.data if isinstance(reply, wire.WeightBlob) else None
