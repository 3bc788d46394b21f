"""The requester's network adapter: set up a circuit, stream inputs in, collect results.

Reads top to bottom as the requester's half of the data path:
`CircuitClient.open_circuit` seals one assignment per hop and sends them all concurrently on
"/p2pinfer/circuit/1.0.0" (the first refusal or failure cancels the rest and raises it);
`Circuit.send` writes sealed input frames to the first hop on "/p2pinfer/hop/1.0.0"; the last hop
writes result frames back on "/p2pinfer/result/1.0.0", which this client serves and routes by
circuit id to the right `Circuit`, whose machine authenticates them with the last link key (held
by nobody but us and the last hop). `run_plan` is the one-call version for a planner `Plan`.
Every await has a deadline; the state rules live in core/circuit.py.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import trio
from libp2p.abc import IHost, INetStream

from p2pinfer.core import wire
from p2pinfer.core.circuit import CircuitMachine, Closed, HopSpec, Result, State
from p2pinfer.core.commitments import ChainCheck
from p2pinfer.core.codec import Activation
from p2pinfer.core.plan import Plan
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import CircuitError, HopFailedError, NetworkError, P2PInferError, WireError
from p2pinfer.models.executor import span_hashes
from p2pinfer.models.manifest import Manifest
from p2pinfer.net.circuit_io import OversizedFrame, close_stream, next_frame, open_stream, remote_peer
from p2pinfer.net.framing import read_frame, write_frame
from p2pinfer.net.hop_protocol import AUDIT_PROTOCOL, CIRCUIT_PROTOCOL, HOP_PROTOCOL, RESULT_PROTOCOL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientConfig:
    io_timeout_s: float = 30.0
    setup_timeout_s: float = 120.0
    result_timeout_s: float = 120.0
    ttl_s: float = 600.0
    close_timeout_s: float = 5.0
    max_frame: int = wire.MAX_ACTIVATION_FRAME

    def __post_init__(self) -> None:
        if min(self.io_timeout_s, self.setup_timeout_s, self.result_timeout_s, self.ttl_s, self.close_timeout_s) <= 0:
            raise ValueError("client: timeouts must be positive")


class Circuit:
    """A set-up circuit. Use as `async with`; `infer` for one input, `send`/`receive` to stream."""

    def __init__(self, client: "CircuitClient", machine: CircuitMachine) -> None:
        self.client, self.machine = client, machine
        self._results_in, self._results_out = trio.open_memory_channel[Union[Result, P2PInferError]](math.inf)
        self._lock = trio.Lock()
        self._stream: INetStream | None = None
        self.closed = trio.Event()  # set when our CloseNotice came back through every hop
        self._commit_arrived = trio.Event()
        self._audit: dict[int, tuple[trio.Lock, list[INetStream]]] = {}  # link -> its audit stream

    @property
    def circuit_id(self) -> bytes:
        return self.machine.circuit_id

    async def send(self, act: Activation) -> int:
        """Seal and write one input to the first hop; returns its seq."""
        async with self._lock:
            seq, data = self.machine.input_frame(act)
            if self.client.send_delay is not None:
                await trio.sleep(self.client.send_delay(len(data)))
            await self._write_first_hop(data)
        return seq

    async def _write_first_hop(self, data: bytes) -> None:
        """Write one frame to the first hop, opening the stream on first use (caller holds _lock)."""
        timeout = self.client.config.io_timeout_s
        if self._stream is None:
            first = self.machine.hops[0]
            self._stream = await open_stream(self.client.host, first.peer_id, HOP_PROTOCOL, timeout=timeout, addrs=first.addrs)
        await write_frame(self._stream, data, max_size=self.client.config.max_frame, timeout=timeout)

    async def _release(self) -> None:
        """Forget the circuit, end its audits and close our stream to the first hop."""
        self.client._circuits.pop(self.circuit_id, None)
        await self._close_audits()
        if self._stream is not None:
            await close_stream(self._stream)
            self._stream = None

    async def receive(self, *, timeout: float | None = None) -> Result:
        """The next result (in arrival order); raises the circuit's error if it failed."""
        timeout = self.client.config.result_timeout_s if timeout is None else timeout
        try:
            with trio.fail_after(timeout):
                item = await self._results_out.receive()
        except trio.TooSlowError:
            error = NetworkError(f"no result within {timeout}s on circuit {self.circuit_id.hex()[:8]} "
                                 f"(hops: {', '.join(h.peer_id for h in self.machine.hops)})")
            self.machine.fail(error)
            raise error from None
        if isinstance(item, P2PInferError):
            raise item
        return item

    async def infer(self, act: Activation, *, timeout: float | None = None) -> Result:
        """Send one input and wait for its result (one at a time; use send/receive to stream)."""
        seq = await self.send(act)
        while True:
            result = await self.receive(timeout=timeout)
            if result.seq == seq:
                return result

    async def chain(self, result: Result, *, timeout: float) -> ChainCheck:
        """The commitment chain of `result`'s seq, waiting (bounded) for missing commitments."""
        with trio.move_on_after(timeout):
            while not self.machine.commits_complete(result.seq):
                await self._commit_arrived.wait()
        return self.machine.chain(result.seq, result.digest)

    async def retained(self, link: int, seq: int, *, timeout: float) -> bytes | None:
        """Audit: the retained output of the hop reading `link` for `seq` (authenticated, not
        yet checked against its commitment); None if it no longer holds it. NetworkError /
        WireError when the hop does not answer properly within `timeout`. One audit stream per
        hop, reused (opened again once if it broke)."""
        req = self.machine.audit_request(link, seq)
        lock, holder = self._audit.setdefault(link, (trio.Lock(), []))
        try:
            with trio.fail_after(timeout):
                await lock.acquire()
        except trio.TooSlowError:
            raise NetworkError(f"hop {self.machine.hops[link].peer_id}: audit stream busy for {timeout}s") from None
        try:
            data = await self._audit_exchange(link, wire.encode(req), holder, min(timeout, self.client.config.io_timeout_s))
        finally:
            lock.release()
        return self.machine.open_audit(req, data, max_size=self.client.config.max_frame)

    async def _audit_exchange(self, link: int, request: bytes, holder: list[INetStream], io: float) -> bytes:
        """One request/reply, shielded from cancellation (bounded by `io` per step instead): a
        frame cut in half by a cancelled attempt would break the whole muxed connection."""
        hop = self.machine.hops[link]
        with trio.CancelScope(shield=True):
            for attempt in (1, 2):
                if not holder:
                    holder.append(await open_stream(self.client.host, hop.peer_id, AUDIT_PROTOCOL, timeout=io, addrs=hop.addrs))
                try:
                    await write_frame(holder[0], request, max_size=wire.MAX_CONTROL_FRAME, timeout=io)
                    return await read_frame(holder[0], max_size=self.client.config.max_frame, timeout=io)
                except (NetworkError, WireError):  # a reset stream reads as WireError: reopen once
                    await close_stream(holder.pop())
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    async def _close_audits(self) -> None:
        for _lock, holder in self._audit.values():
            if holder:
                await close_stream(holder.pop())
        self._audit.clear()

    def _on_commit(self, sender: str, msg: wire.HopCommit) -> None:
        self.machine.on_commit(sender, msg)
        self._commit_arrived.set()
        self._commit_arrived = trio.Event()

    def _deliver(self, item: Union[Result, P2PInferError]) -> None:
        self._results_in.send_nowait(item)

    async def aclose(self) -> None:
        """Send the CloseNotice down the chain (hops free the circuit at once instead of at its
        deadline) and wait, bounded, for it to come back; then forget the circuit."""
        try:
            async with self._lock:
                data = self.machine.close_frame()
                if data is not None:
                    await self._write_first_hop(data)
                    with trio.move_on_after(self.client.config.close_timeout_s):
                        await self.closed.wait()
        except NetworkError as exc:
            log.info("circuit %s: close notice not delivered: %s", self.circuit_id.hex()[:8], exc)
        finally:
            await self._release()

    async def abort(self) -> None:
        """After a failure: send a CloseNotice best-effort (hops upstream of a dead one free the
        circuit now rather than at its deadline) without waiting for it to come back."""
        try:
            with trio.move_on_after(self.client.config.close_timeout_s):
                async with self._lock:
                    data = self.machine.abort_frame()
                    if data is not None:
                        await self._write_first_hop(data)
        except NetworkError as exc:
            log.info("circuit %s: abort notice not delivered: %s", self.circuit_id.hex()[:8], exc)
        finally:
            await self._release()

    async def __aenter__(self) -> "Circuit":
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await self.aclose()


class CircuitClient:
    """Requester side. Start `run` in a nursery (it serves the result protocol) before use."""

    def __init__(self, host: IHost, identity: Identity, *, config: ClientConfig = ClientConfig(),
                 send_delay: Callable[[int], float] | None = None, clock: Callable[[], float] = time.time) -> None:
        """`send_delay(nbytes)` -> seconds to hold each input frame (emulated uplink; None = none)."""
        if str(host.get_id()) != identity.peer_id:
            raise ValueError("the host's libp2p key must be the requester identity's key")
        self.host, self.identity, self.config, self.clock = host, identity, config, clock
        self.send_delay = send_delay
        self._circuits: dict[bytes, Circuit] = {}
        self.rejected_frames = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(RESULT_PROTOCOL, self._on_result_stream)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.host.remove_stream_handler(RESULT_PROTOCOL)

    def _addrs(self) -> tuple[str, ...]:
        suffix = f"/p2p/{self.identity.peer_id}"
        return tuple(str(a) if str(a).endswith(suffix) else f"{a}{suffix}" for a in self.host.get_addrs())

    async def open_circuit(self, *, model_id: str, hops: Sequence[HopSpec]) -> Circuit:
        """Assign every hop concurrently; returns when all accepted, raises on the first failure
        (HopRefusedError with the hop and reason, NetworkError on timeouts/unreachable hops)."""
        machine = CircuitMachine(self.identity, model_id=model_id, hops=hops, requester_addrs=self._addrs(),
                                 now_ms=int(self.clock() * 1000), ttl_ms=int(self.config.ttl_s * 1000))
        circuit = Circuit(self, machine)
        self._circuits[machine.circuit_id] = circuit
        try:
            with trio.move_on_after(self.config.setup_timeout_s):
                async with trio.open_nursery() as nursery:
                    for hop, request in machine.assign_requests():
                        nursery.start_soon(self._assign, machine, hop, request, nursery.cancel_scope)
            if machine.state is State.SETUP:
                silent = machine.pending_hops()
                machine.fail(HopFailedError(silent, "timeout", f"circuit setup took over {self.config.setup_timeout_s}s "
                                            f"(no reply from {', '.join(silent)})"))
            if machine.state is not State.READY:
                raise machine.error or CircuitError("circuit setup failed")
        except BaseException:
            self._circuits.pop(machine.circuit_id, None)
            raise
        return circuit

    async def _assign(self, machine: CircuitMachine, hop: HopSpec, request: bytes, scope: trio.CancelScope) -> None:
        timeout = self.config.io_timeout_s
        try:
            stream = await open_stream(self.host, hop.peer_id, CIRCUIT_PROTOCOL, timeout=timeout, addrs=hop.addrs)
            try:
                await write_frame(stream, request, max_size=wire.MAX_CONTROL_FRAME, timeout=timeout)
                reply = await read_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=self.config.setup_timeout_s)
            finally:
                await close_stream(stream)
            state = machine.on_reply(hop.peer_id, reply)
        except (NetworkError, WireError) as exc:
            state = machine.fail(HopFailedError(hop.peer_id, "failure", f"hop {hop.peer_id}: assignment failed: {exc}"))
        if state is State.FAILED:
            scope.cancel()

    async def _on_result_stream(self, stream: INetStream) -> None:
        sender = remote_peer(stream)
        try:
            while True:
                try:
                    data = await next_frame(stream, max_size=self.config.max_frame, timeout=self.config.ttl_s)
                    if data is None:
                        return  # the hop closed its stream
                    self._route(sender, wire.decode(data, expect=[wire.ResultFrame, wire.ErrorFrame, wire.HopCommit],
                                                    max_size=self.config.max_frame))
                except OversizedFrame as exc:
                    self.rejected_frames += 1
                    log.warning("closing result stream from %s: %s", sender, exc)
                    return
                except WireError as exc:
                    self.rejected_frames += 1
                    log.warning("rejected a result frame from %s: %s", sender, exc)
        finally:
            await close_stream(stream)

    def _route(self, sender: str, msg: Union[wire.ResultFrame, wire.ErrorFrame, wire.HopCommit]) -> None:
        circuit = self._circuits.get(msg.circuit_id)
        if circuit is None:
            raise WireError(f"frame for unknown circuit {msg.circuit_id.hex()[:8]}")
        if isinstance(msg, wire.HopCommit):
            circuit._on_commit(sender, msg)
        elif isinstance(msg, wire.ErrorFrame):
            circuit.machine.on_error_frame(sender, msg)
            circuit._deliver(circuit.machine.error)  # type: ignore[arg-type]
        else:
            outcome = circuit.machine.on_result_frame(sender, msg, max_size=self.config.max_frame)
            if isinstance(outcome, Closed):
                circuit.closed.set()
            else:
                circuit._deliver(outcome)


@dataclass(frozen=True)
class HopTiming:
    """One hop of a run: the planner's predictions next to what the hop measured (median over
    inputs of the compute time it reported in the frame trace)."""

    peer_id: str
    start: int
    stop: int
    predicted_compute_ms: float
    predicted_transfer_in_ms: float
    measured_compute_ms: float


@dataclass(frozen=True)
class CircuitRun:
    outputs: tuple[Activation, ...]  # in input order
    hops: tuple[HopTiming, ...]
    latency_ms: tuple[float, ...]  # per input: sent -> result received, at the requester
    setup_ms: float  # assignments sent -> every hop accepted (includes weight fetches)
    wall_s: float  # setup + all inputs + teardown


def hop_specs(plan: Plan, manifest: Manifest, peer_addrs: Mapping[str, Sequence[str]]) -> list[HopSpec]:
    """The circuit hops for a planner Plan: addrs from `peer_addrs`, weight hashes from the manifest."""
    return [HopSpec(h.peer_id, tuple(peer_addrs.get(h.peer_id, ())), h.start, h.stop,
                    tuple(span_hashes(manifest, h.start, h.stop))) for h in plan.hops]


async def run_plan(client: CircuitClient, *, plan: Plan, manifest: Manifest, inputs: Sequence[Activation],
                   peer_addrs: Mapping[str, Sequence[str]], timeout_s: float | None = None, max_in_flight: int = 8,
                   on_result: Callable[[int, Result], None] | None = None) -> CircuitRun:
    """Set up a circuit for `plan`, stream `inputs` through it pipelined (at most `max_in_flight`
    unanswered), collect the outputs in input order, tear the circuit down. Raises
    HopRefusedError / CircuitError / NetworkError naming the hop at fault; never waits unbounded."""
    if not inputs or max_in_flight < 1:
        raise CircuitError("run_plan needs at least one input and max_in_flight >= 1")
    t0 = time.perf_counter()
    circuit = await client.open_circuit(model_id=manifest.model_id, hops=hop_specs(plan, manifest, peer_addrs))
    setup_ms = (time.perf_counter() - t0) * 1000
    window = trio.Semaphore(max_in_flight)
    sent_at: dict[int, float] = {}
    results: dict[int, tuple[Result, float]] = {}
    async with circuit:
        async def sender() -> None:
            for act in inputs:
                await window.acquire()
                sent_at[circuit.machine.next_seq] = time.perf_counter()
                await circuit.send(act)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            while len(results) < len(inputs):
                r = await circuit.receive(timeout=timeout_s)
                results[r.seq] = (r, time.perf_counter())
                window.release()
                if on_result is not None:
                    on_result(len(results), r)
    order = sorted(results)
    traces = [results[s][0].trace for s in order]

    def median_ms(i: int) -> float:
        values = sorted(t[i] for t in traces if len(t) > i)
        return values[len(values) // 2] / 1000 if values else float("nan")

    hops = tuple(HopTiming(h.peer_id, h.start, h.stop, h.compute_s * 1000, h.transfer_in_s * 1000, median_ms(i))
                 for i, h in enumerate(plan.hops))
    return CircuitRun(tuple(results[s][0].act for s in order), hops,
                      tuple((results[s][1] - sent_at[s]) * 1000 for s in order), setup_ms, time.perf_counter() - t0)
