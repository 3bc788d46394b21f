"""The hop's network adapter: moves bytes between libp2p streams and the pure HopMachine.

Protocols (each frame is varint-length-prefixed; the length is checked before the body is read):
- "/p2pinfer/circuit/1.0.0": one AssignRequest in, one AssignmentAccepted/Refused out.
- "/p2pinfer/hop/1.0.0": a stream of ActivationFrames in (from the previous hop or the requester).
- "/p2pinfer/result/1.0.0": served by the requester (net/circuit_client.py); the last hop writes
  ResultFrames there, and any hop writes ErrorFrames there.
- "/p2pinfer/audit/1.0.0": AuditRequests in (from the requester), one AuditReply out for each:
  a retained output, sealed to the requester (core/audit.py).
- "/p2pinfer/handoff/1.0.0": a requester-signed handoff in (net/reroute_protocol.py): retained
  outputs re-sent into a suffix circuit when a later hop failed (resumption).
- "/p2pinfer/receipt/1.0.0": receipts for completed hops (net/receipts_protocol.py), served by
  HopNodeService when the node has a ledger.

The data path of one frame, top to bottom (`_on_hop_stream`: `_read` -> `_work` -> Forwarder, three
overlapped stages per stream, net/hop_pipeline.py): read with a size limit; decode, authenticate and
replay-check in the machine; compute the span in a worker thread behind a CapacityLimiter (so the
trio loop stays responsive and several circuits share the cores), entered through an AdmissionGate
that serves waiting frames by their requester's credit in the node's ledger when every slot is
busy (net/admission_gate.py); seal the output in that thread; write it DIRECTLY to the next peer
(or, for the last hop, to the requester) while the next frame is read and computed. Every await
has a deadline; a bad frame is dropped, counted and logged, and the hop carries on serving every
other circuit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from p2pinfer.core import hop as hopm
from p2pinfer.core import wire
from p2pinfer.core.codec import Activation
from p2pinfer.core.retention import RetentionBuffer
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import InputError, ModelError, NetworkError, P2PInferError, WireError
from p2pinfer.ledger import Ledger
from p2pinfer.models.executor import span_hashes
from p2pinfer.models.layers import param_bytes
from p2pinfer.models.manifest import Manifest
from p2pinfer.models.store import ModelStore
from p2pinfer.net.admission_gate import AdmissionDropped, AdmissionGate
from p2pinfer.net.circuit_io import OversizedFrame, close_stream, next_frame, remote_peer
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.net.hop_pipeline import Done, Failed, Forwarder, OutLinks, Stage, StreamScopes, run_pipeline
from p2pinfer.net.receipts_protocol import ReceiptService
from p2pinfer.net.reroute_protocol import HANDOFF_PROTOCOL, HandoffHandler
from p2pinfer.net.weights_protocol import WeightFetcher, WeightsConfig, WeightService

log = logging.getLogger(__name__)

CIRCUIT_PROTOCOL = TProtocol("/p2pinfer/circuit/1.0.0")
HOP_PROTOCOL = TProtocol("/p2pinfer/hop/1.0.0")
RESULT_PROTOCOL = TProtocol("/p2pinfer/result/1.0.0")
AUDIT_PROTOCOL = TProtocol("/p2pinfer/audit/1.0.0")

ExecutorFn = Callable[[Manifest, int, int, Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]
PrepareFn = Callable[[Manifest, int, int], None]


@dataclass(frozen=True)
class HopConfig:
    """Limits and deadlines of a hop. `mem_bytes` None means: do not check span memory."""

    max_frame: int = wire.MAX_ACTIVATION_FRAME
    io_timeout_s: float = 30.0
    idle_timeout_s: float = 300.0
    setup_timeout_s: float = 120.0
    compute_timeout_s: float = 120.0
    max_circuits: int = 64
    max_circuit_ttl_s: float = 3600.0
    compute_threads: int = 1
    mem_bytes: int | None = None
    weights: WeightsConfig = WeightsConfig()
    retain_outputs: int = 64  # per circuit: last outputs kept for audits / resumption (core/retention.py)
    retain_bytes: int = 16 * 1024 * 1024  # per circuit
    pipeline_depth: int = 1  # per stream: frames queued between read, compute and forward (net/hop_pipeline.py)

    def __post_init__(self) -> None:
        if min(self.io_timeout_s, self.idle_timeout_s, self.setup_timeout_s, self.compute_timeout_s, self.max_circuit_ttl_s) <= 0:
            raise ValueError("hop: timeouts must be positive")
        if self.retain_outputs < 0 or self.retain_bytes < 0:
            raise ValueError("hop: retain_outputs and retain_bytes must be >= 0")
        if self.max_frame < 1024 or self.max_circuits < 1 or self.compute_threads < 1 or self.pipeline_depth < 1:
            raise ValueError("hop: max_frame >= 1024, max_circuits, compute_threads and pipeline_depth >= 1 required")


def to_torch(act: Activation) -> dict[str, torch.Tensor]:
    """Frame arrays are read-only views on the frame bytes: copy into writable tensors."""
    items = act.items() if isinstance(act, Mapping) else [("x", act)]
    return {name: torch.from_numpy(np.array(arr)) for name, arr in items}


def to_numpy(out: Mapping[str, torch.Tensor] | torch.Tensor) -> dict[str, np.ndarray]:
    items = out.items() if isinstance(out, Mapping) else [("x", out)]
    return {name: t.detach().cpu().numpy() for name, t in items}


class HopService:
    """Serves circuit assignments and activation frames on `host` as `identity`.

    `executor_fn(manifest, start, stop, tensors) -> tensors` runs a span (SpanExecutor.run);
    `store` holds manifests and weight blobs (missing ones are fetched from the requester, then
    from the peers `weight_sources(hash)` names); `on_weights(hashes)` is told which blobs a
    newly accepted span made us hold (the node advertises them). `send_delay(nbytes)` -> seconds
    to hold each outgoing frame (emulates a slow uplink in the embedded swarm; None = none);
    `receive_delay_s` holds each received frame before compute (the emulated link's latency on
    the receiving side, so that a transfer pays both ends' latency as the cost model prices it).
    `prepare_fn(manifest, start, stop)` (SpanExecutor.prepare) builds an accepted span's layers in
    a worker thread behind the compute limiter before the hop answers "accepted", so the first
    frame does not pay the layer build. `credit_of(requester) -> GFLOP` (the node ledger's
    `credit_of`) orders frames that must wait for a compute slot (net/admission_gate.py).
    `clock` returns Unix seconds.
    """

    def __init__(self, host: IHost, identity: Identity, executor_fn: ExecutorFn, store: ModelStore, *,
                 config: HopConfig = HopConfig(), weight_sources: Callable[[str], list[str]] | None = None,
                 on_weights: Callable[[Sequence[str]], None] | None = None,
                 send_delay: Callable[[int], float] | None = None,
                 receive_delay_s: float = 0.0,
                 prepare_fn: PrepareFn | None = None,
                 credit_of: Callable[[str], float] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if str(host.get_id()) != identity.peer_id:
            raise ValueError("the host's libp2p key must be the node identity's key")
        self.host, self.identity, self.executor_fn, self.store = host, identity, executor_fn, store
        self.config, self.clock, self.receive_delay_s = config, clock, receive_delay_s
        self.machine = hopm.HopMachine(identity, max_circuits=config.max_circuits, max_ttl_ms=int(config.max_circuit_ttl_s * 1000),
                                       retention=RetentionBuffer(config.retain_outputs, config.retain_bytes))
        self.fetcher = WeightFetcher(host, store, config=config.weights)
        self._weight_sources = weight_sources or (lambda _hash: [])
        self._on_weights = on_weights or (lambda _hashes: None)
        self._prepare_fn = prepare_fn
        self._limiter = trio.CapacityLimiter(config.compute_threads)
        self.gate = AdmissionGate(config.compute_threads, credit_of=credit_of)
        self._manifests: dict[bytes, Manifest] = {}
        self.links = OutLinks(host, hop_protocol=HOP_PROTOCOL, result_protocol=RESULT_PROTOCOL, max_frame=config.max_frame,
                              io_timeout_s=config.io_timeout_s, send_delay=send_delay)
        self._forwarder = Forwarder(self.machine, self.links, self._forget)
        self._pipelines = StreamScopes()
        self.handoffs = HandoffHandler(host, identity, self.machine, io_timeout_s=config.io_timeout_s,  # resumption
                                       max_frame=config.max_frame, clock=clock)

    @property
    def counters(self) -> hopm.HopCounters:
        return self.machine.counters

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(CIRCUIT_PROTOCOL, self._on_circuit_stream)
        self.host.set_stream_handler(HOP_PROTOCOL, self._on_hop_stream)
        self.host.set_stream_handler(AUDIT_PROTOCOL, self._on_audit_stream)
        self.host.set_stream_handler(HANDOFF_PROTOCOL, self.handoffs)
        try:
            task_status.started()
            while True:
                await trio.sleep(1.0)
                for cid in self.machine.expire(self._now_ms()):
                    await self._forget(cid)
        finally:
            self.host.remove_stream_handler(CIRCUIT_PROTOCOL)
            self.host.remove_stream_handler(HOP_PROTOCOL)
            self.host.remove_stream_handler(AUDIT_PROTOCOL)
            self.host.remove_stream_handler(HANDOFF_PROTOCOL)
            with trio.CancelScope(shield=True):
                for cid in set(self.links.circuits()) | set(self._manifests):
                    await self._forget(cid)

    # ---- setup ----
    async def _on_circuit_stream(self, stream: INetStream) -> None:
        try:
            data = await read_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=self.config.io_timeout_s)
            action = self.machine.on_assign(data, now_ms=self._now_ms())
            if isinstance(action, hopm.PrepareSpan):
                action = await self._prepare(action.assignment, remote_peer(stream))
            if action.message.__class__ is wire.AssignmentRefused:
                log.info("refused assignment from %s: %s: %s", remote_peer(stream), action.message.reason, action.message.message)
            await write_frame(stream, wire.encode(action.message), max_size=wire.MAX_CONTROL_FRAME, timeout=self.config.io_timeout_s)
        except P2PInferError as exc:
            log.warning("circuit stream from %s failed: %s", remote_peer(stream), exc)
        finally:
            await close_stream(stream)

    async def _prepare(self, a: wire.Assignment, sender: str) -> hopm.Reply:
        """Admit the span (model known, kinds known, fits memory) and fetch missing weights."""
        cid = a.circuit_id
        sources = list(dict.fromkeys([a.requester, sender]))
        try:
            with trio.fail_after(self.config.setup_timeout_s):
                manifest = await self.fetcher.ensure_manifest(a.model_id, sources)
        except trio.TooSlowError:
            return self.machine.span_refused(cid, "unknown-model", f"no manifest within {self.config.setup_timeout_s}s")
        except ModelError as exc:  # UnknownModelError, or a manifest we cannot accept
            reason = "unknown-layer-kind" if "unknown layer kind" in str(exc) else "unknown-model"
            return self.machine.span_refused(cid, reason, str(exc))
        refusal = self._admit(a, manifest)
        if refusal:
            return self.machine.span_refused(cid, *refusal)
        hashes = list(a.weight_hashes)
        extra = [p for h in hashes for p in self._weight_sources(h)]
        try:
            with trio.fail_after(self.config.setup_timeout_s):
                await self.fetcher.ensure_blobs(hashes, list(dict.fromkeys(sources + extra)))
        except trio.TooSlowError:
            return self.machine.span_refused(cid, "missing-weights", f"weights not fetched within {self.config.setup_timeout_s}s")
        except ModelError as exc:  # not held anywhere, or failed verification (WeightIntegrityError)
            return self.machine.span_refused(cid, "missing-weights", str(exc))
        refusal = await self._build_span(manifest, a)
        if refusal:
            return self.machine.span_refused(cid, *refusal)
        self._manifests[cid] = manifest
        self._on_weights(hashes)
        return self.machine.span_ready(cid)

    async def _build_span(self, manifest: Manifest, a: wire.Assignment) -> tuple[str, str] | None:
        """Build the span's layers now (worker thread, behind the limiter), not on the first frame."""
        if self._prepare_fn is None:
            return None
        try:
            with trio.fail_after(self.config.setup_timeout_s):
                await trio.to_thread.run_sync(self._prepare_fn, manifest, a.start, a.stop,
                                              limiter=self._limiter, abandon_on_cancel=True)
        except trio.TooSlowError:
            return "busy", f"span not built within {self.config.setup_timeout_s}s"
        except P2PInferError as exc:  # ModelError: a layer that cannot be built from its weights
            return "internal", f"span [{a.start}, {a.stop}) could not be built: {exc}"
        return None

    def _admit(self, a: wire.Assignment, manifest: Manifest) -> tuple[str, str] | None:
        if a.stop > manifest.num_layers:
            return "malformed", f"span [{a.start}, {a.stop}) exceeds the model's {manifest.num_layers} layers"
        if tuple(span_hashes(manifest, a.start, a.stop)) != a.weight_hashes:
            return "malformed", "assignment weight hashes do not match the manifest's span"
        need = sum(param_bytes(l.kind, l.config) for l in manifest.layers[a.start:a.stop])
        if self.config.mem_bytes is not None and need > self.config.mem_bytes:
            return "out-of-memory", f"span needs {need} weight bytes, this hop offers {self.config.mem_bytes}"
        return None

    async def _on_audit_stream(self, stream: INetStream) -> None:
        """Audit requests, each answered in turn (core/hop.py rule 7); the requester keeps one
        stream per circuit and hop. Bounded reads and writes; a refused request ends the stream."""
        sender = remote_peer(stream)
        try:
            while True:
                data = await next_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=self.config.idle_timeout_s)
                if data is None:
                    return
                reply = self.machine.on_audit(data, now_ms=self._now_ms())
                if isinstance(reply, hopm.Drop):
                    log.warning("audit request from %s refused: %s", sender, reply.detail)
                    return
                await write_frame(stream, reply, max_size=self.config.max_frame, timeout=self.config.io_timeout_s)
        except P2PInferError as exc:
            log.info("audit stream from %s ended: %s", sender, exc)
        finally:
            await close_stream(stream)

    # ---- data ----
    async def _on_hop_stream(self, stream: INetStream) -> None:
        """Read, compute and forward this stream's frames, overlapped (net/hop_pipeline.py)."""
        sender = remote_peer(stream)
        scope = trio.CancelScope()
        try:
            with scope:
                await run_pipeline(lambda: self._read(stream, sender, scope), self._work, self._forwarder,
                                   depth=self.config.pipeline_depth, stall_timeout_s=self.config.idle_timeout_s,
                                   hold_s=self.receive_delay_s)
        except Exception:  # task boundary: one broken stream must never take the hop down
            log.exception("hop stream from %s crashed", sender)
        finally:
            self._pipelines.discard(scope)
            await close_stream(stream)

    async def _read(self, stream: INetStream, sender: str, scope: trio.CancelScope) -> hopm.Compute | hopm.Close | None:
        """The stream's next frame the machine accepts; None when it ended, went idle or is unusable."""
        while True:
            try:
                data = await next_frame(stream, max_size=self.config.max_frame, timeout=self.config.idle_timeout_s)
            except WireError as exc:  # oversized or unframeable: this stream is unusable
                self._count_unreadable(exc)
                log.warning("dropping hop stream from %s: %s", sender, exc)
                return None
            if data is None:
                return None  # upstream closed the stream or went idle
            action = self.machine.on_frame(data, now_ms=self._now_ms(), max_size=self.config.max_frame)
            if isinstance(action, hopm.Drop):
                log.warning("dropped frame from %s (%s): %s", sender, action.reason, action.detail)
                continue
            self._pipelines.bind(action.send.circuit_id if isinstance(action, hopm.Close) else action.circuit_id, scope)
            return action

    def _count_unreadable(self, exc: WireError) -> None:
        if isinstance(exc, OversizedFrame):
            self.machine.note_oversized()
        else:
            self.machine.counters.frames_in += 1
            self.machine.counters.malformed += 1

    async def _work(self, item: hopm.Compute | hopm.Close) -> Stage:
        """Compute the span in a worker thread (deadline, limiter, admission gate); Close passes."""
        if isinstance(item, hopm.Close):
            return item
        c = item
        a, manifest = self.machine.assignment(c.circuit_id), self._manifests.get(c.circuit_id)
        if a is None or manifest is None:
            return None
        try:
            with trio.fail_after(self.config.compute_timeout_s):  # a hung span must not wedge the stream
                async with self.gate.slot(a.requester):  # by credit when overloaded
                    done = await trio.to_thread.run_sync(self._compute_sync, c, a, manifest, limiter=self._limiter,
                                                         abandon_on_cancel=True)
        except AdmissionDropped as exc:
            return Failed(c, "compute-failed", f"busy: {exc}")
        except trio.TooSlowError:
            return Failed(c, "compute-failed", f"span [{a.start}, {a.stop}) took over {self.config.compute_timeout_s}s")
        except P2PInferError as exc:
            return Failed(c, "bad-input" if isinstance(exc, InputError) else "compute-failed", str(exc))
        self.machine.counters.frames_computed += 1
        self.machine.retain(c.circuit_id, c.seq, done.out_bytes)
        return Done(c, done)

    def _compute_sync(self, c: hopm.Compute, a: wire.Assignment, manifest: Manifest) -> hopm.Computed:
        """Worker thread: run the span, seal its output and commitment (HopMachine.finish is pure)."""
        t0 = time.perf_counter()
        out = self.executor_fn(manifest, a.start, a.stop, to_torch(c.act))
        elapsed_us = int((time.perf_counter() - t0) * 1e6)
        return self.machine.finish(c, to_numpy(out), elapsed_us)

    async def _forget(self, cid: bytes) -> None:
        """Drop the circuit's span, close its outgoing streams and stop the pipelines serving it."""
        self._manifests.pop(cid, None)
        self._pipelines.cancel(cid)
        await self.links.forget(cid)


class HopNodeService:
    """Plugs the hop into a `p2pinfer.node.Node` (its NodeService extension point): serves the
    circuit and hop protocols and, unless told otherwise, the weights protocol from `store`;
    looks up other weight holders in the node's verified records; advertises fetched weights.
    With a `ledger` (the node's own, durable) it also serves receipt delivery
    (net/receipts_protocol.py) and orders waiting frames by the requester's credit in it.

        node.add_service(HopNodeService(SpanExecutor(store).run, store, config=HopConfig(mem_bytes=...)))
    """

    MAX_ADVERTISED = 512  # capability records carry at most 512 weight hashes

    def __init__(self, executor_fn: ExecutorFn, store: ModelStore, *, config: HopConfig = HopConfig(),
                 serve_weights: bool = True, send_delay: Callable[[int], float] | None = None,
                 receive_delay_s: float = 0.0, prepare_fn: PrepareFn | None = None, ledger: Ledger | None = None) -> None:
        self.executor_fn, self.store, self.config, self.serve_weights = executor_fn, store, config, serve_weights
        self.send_delay, self.receive_delay_s, self.prepare_fn, self.ledger = send_delay, receive_delay_s, prepare_fn, ledger
        self.receipts: ReceiptService | None = None
        self.hop: HopService | None = None
        self._held: list[str] = []

    def hop_activity(self) -> tuple[int, int]:
        """(assignments and frames received so far, circuits live now); (0, 0) before the service
        runs. Tells the node's load monitor (p2pinfer/load_monitor.py) which windows held hop
        work: circuit setup (building layers, hashing weights) as well as frames."""
        if self.hop is None:
            return 0, 0
        c = self.hop.machine.counters
        return c.assignments_accepted + c.assignments_refused + c.frames_in, self.hop.machine.live_circuits

    async def run(self, node: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        def holders(blob_hash: str) -> list[str]:
            return [r.peer_id for r in node.peers() if blob_hash in r.weights]

        def advertise(hashes: Sequence[str]) -> None:
            new = [h for h in hashes if h not in self._held]
            if new:
                self._held = (self._held + new)[-self.MAX_ADVERTISED:]
                node.update_held(weights=self._held)

        self.hop = HopService(node.host, node.identity, self.executor_fn, self.store, config=self.config,
                              weight_sources=holders, on_weights=advertise, send_delay=self.send_delay,
                              receive_delay_s=self.receive_delay_s, prepare_fn=self.prepare_fn,
                              credit_of=self.ledger.credit_of if self.ledger is not None else None)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.hop.run)
            if self.ledger is not None:
                self.receipts = ReceiptService(node.host, node.identity.peer_id, self.ledger,
                                               io_timeout_s=min(self.config.io_timeout_s, 10.0))
                await nursery.start(self.receipts.run)
            if self.serve_weights:
                await nursery.start(WeightService(node.host, self.store, config=self.config.weights).run)
            task_status.started()
