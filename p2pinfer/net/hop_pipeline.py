"""A hop's inbound stream as three overlapped stages, and its outgoing streams.

Why: the cost model prices a pipelined stage at max(transfer in, compute, transfer out)
(docs/cost-model.md). A loop that reads a frame, computes, awaits the send of the output and only
then reads the next frame costs their sum; on slow links (TCP send buffers hold far less than one
activation) that halves a stream's throughput. So per inbound stream (`run_pipeline`):

- the reader pulls frames (idle deadline) and queues what the pure machine makes of them,
- the compute stage takes them in order and computes (worker thread, limiter, admission gate,
  deadline: the hop's `work`); a CloseNotice passes through untouched,
- the forwarder takes the results in order and sends them (`Forwarder`): a commitment before its
  output, an ErrorFrame for a failed input, the CloseNotice only after every earlier output.

Each stage is one task reading a FIFO, so order is kept end to end. The channels between them hold
`depth` items, so at most 2 * depth + 3 frames of a stream are alive at once, and a slow next hop
backs up to the reader and, through flow control, to the sender. A hand-over that waits longer
than `stall_timeout_s` means the pipeline is stuck: the stream is dropped (`PipelineStalled`)
rather than held. `StreamScopes` cancels the pipelines of a circuit when the hop forgets it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, TypeVar, Union

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from p2pinfer.core import hop as hopm
from p2pinfer.core import wire
from p2pinfer.errors import NetworkError, P2PInferError, WireError
from p2pinfer.net.circuit_io import close_stream, open_stream
from p2pinfer.net.framing import write_frame

log = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")


class PipelineStalled(NetworkError):
    """A stage of a hop stream's pipeline did not take the next item within the stall deadline."""


async def _put(channel: trio.MemorySendChannel, item: object, timeout: float) -> None:
    try:
        with trio.fail_after(timeout):
            await channel.send(item)
    except trio.TooSlowError:
        raise PipelineStalled(f"the next stage took no item for {timeout}s") from None


async def run_pipeline(read: Callable[[], Awaitable[T | None]], work: Callable[[T], Awaitable[U]],
                       forward: Callable[[U], Awaitable[None]], *, depth: int, stall_timeout_s: float,
                       hold_s: float = 0.0) -> None:
    """read() until it returns None, work(item) on each in order, forward(result) on each in order,
    the three overlapped. Items already read when the reader ends are still worked and forwarded.
    `hold_s`: an item is worked no sooner than that long after it was read (an emulated link's
    latency at the receiving end); the reader is not held back, so items in flight overlap it."""
    jobs_in, jobs_out = trio.open_memory_channel[tuple[T, float]](depth)
    outs_in, outs_out = trio.open_memory_channel[U](depth)

    async def reader() -> None:
        async with jobs_in:
            while (item := await read()) is not None:
                await _put(jobs_in, (item, trio.current_time() + hold_s), stall_timeout_s)

    async def computer() -> None:
        async with jobs_out, outs_in:
            async for item, due in jobs_out:
                if hold_s > 0:
                    await trio.sleep_until(due)
                await _put(outs_in, await work(item), stall_timeout_s)

    async def forwarder() -> None:
        async with outs_out:
            async for result in outs_out:
                await forward(result)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(computer)
        nursery.start_soon(forwarder)


class StreamScopes:
    """Which inbound pipelines carry which circuits, so that forgetting a circuit (close notice,
    expiry, shutdown) stops its pipelines instead of leaving them to their idle deadline."""

    def __init__(self) -> None:
        self._by_circuit: dict[bytes, set[trio.CancelScope]] = {}

    def bind(self, circuit_id: bytes, scope: trio.CancelScope) -> None:
        self._by_circuit.setdefault(circuit_id, set()).add(scope)

    def cancel(self, circuit_id: bytes) -> None:
        for scope in self._by_circuit.pop(circuit_id, ()):
            scope.cancel()

    def discard(self, scope: trio.CancelScope) -> None:
        for cid in [cid for cid, scopes in self._by_circuit.items() if scope in scopes]:
            self._by_circuit[cid].discard(scope)
            if not self._by_circuit[cid]:
                del self._by_circuit[cid]


@dataclass(frozen=True)
class Done:
    """A computed input: its sealed output and the commitment to send before it."""

    compute: hopm.Compute
    computed: hopm.Computed


@dataclass(frozen=True)
class Failed:
    """An input that could not be computed: reported to the requester, in stream order."""

    compute: hopm.Compute
    reason: str
    message: str


Stage = Union[Done, Failed, hopm.Close, None]


class OutLinks:
    """This hop's outgoing streams: one per (circuit, peer, hop-or-result protocol), opened on
    first use, written by one task at a time, reopened once if stale. `send_delay(nbytes)` ->
    seconds to hold each outgoing frame (the embedded swarm's emulated uplink; None = none)."""

    def __init__(self, host: IHost, *, hop_protocol: TProtocol, result_protocol: TProtocol, max_frame: int,
                 io_timeout_s: float, send_delay: Callable[[int], float] | None = None) -> None:
        self.host, self.max_frame, self.io_timeout_s, self.send_delay = host, max_frame, io_timeout_s, send_delay
        self._protocols = {False: hop_protocol, True: result_protocol}
        self._out: dict[bytes, dict[tuple[str, bool], tuple[trio.Lock, list[INetStream]]]] = {}

    def circuits(self) -> list[bytes]:
        return list(self._out)

    async def send(self, send: hopm.Send, *, emulate: bool = True) -> None:
        """Write on this circuit's stream to that peer; NetworkError when it cannot be reached,
        WireError for an output over the frame limit."""
        lock, holder = self._out.setdefault(send.circuit_id, {}).setdefault((send.peer_id, send.final), (trio.Lock(), []))
        if self.send_delay is not None and emulate:  # commitments (~150 bytes) are not delayed
            await trio.sleep(self.send_delay(len(send.data)))
        async with lock:
            for attempt in (1, 2):  # a stale stream (peer restarted it, connection dropped) is reopened once
                if not holder:
                    holder.append(await open_stream(self.host, send.peer_id, self._protocols[send.final],
                                                    timeout=self.io_timeout_s, addrs=send.addrs))
                try:
                    await write_frame(holder[0], send.data, max_size=self.max_frame, timeout=self.io_timeout_s)
                    return
                except NetworkError:
                    await close_stream(holder.pop())
                    if attempt == 2:
                        raise

    async def send_best_effort(self, send: hopm.Send) -> None:
        """One control frame to the requester on a fresh result stream; failures are logged."""
        try:
            stream = await open_stream(self.host, send.peer_id, self._protocols[True], timeout=self.io_timeout_s, addrs=send.addrs)
            try:
                await write_frame(stream, send.data, max_size=wire.MAX_CONTROL_FRAME, timeout=self.io_timeout_s)
            finally:
                await close_stream(stream)
        except P2PInferError as exc:
            log.warning("could not report an error to requester %s: %s", send.peer_id, exc)

    async def forget(self, circuit_id: bytes) -> None:
        """Close the circuit's streams (shielded and bounded: also called from cancelled tasks)."""
        with trio.CancelScope(shield=True):
            for _lock, holder in self._out.pop(circuit_id, {}).values():
                if holder:
                    await close_stream(holder[0])


class Forwarder:
    """The forwarding stage: sends a stream's results in order. `forget(circuit_id)` frees a
    circuit once its CloseNotice has been passed on (the hop's own bookkeeping)."""

    def __init__(self, machine: hopm.HopMachine, links: OutLinks, forget: Callable[[bytes], Awaitable[None]]) -> None:
        self.machine, self.links, self._forget = machine, links, forget

    async def __call__(self, item: Stage) -> None:
        if isinstance(item, Done):
            await self._forward(item.compute, item.computed)
        elif isinstance(item, Failed):
            await self.report(item.compute, item.reason, item.message)
        elif isinstance(item, hopm.Close):
            await self._close(item.send)

    async def _forward(self, c: hopm.Compute, done: hopm.Computed) -> None:
        try:
            await self.links.send(done.commit, emulate=False)  # before the output: the last hop's commit precedes its result
        except NetworkError as exc:
            log.warning("circuit %s seq %d: commitment not delivered: %s", c.circuit_id.hex()[:8], c.seq, exc)
        try:
            await self.links.send(done.send)
            self.machine.counters.frames_forwarded += 1
        except (NetworkError, WireError) as exc:  # WireError: output over the frame limit
            reason = "next-hop-unreachable" if isinstance(exc, NetworkError) else "internal"
            await self.report(c, reason, f"cannot forward to {done.send.peer_id}: {exc}")

    async def report(self, c: hopm.Compute, reason: str, message: str) -> None:
        """Log a failed input and tell the requester directly (best effort, bounded)."""
        log.warning("circuit %s seq %d: %s: %s", c.circuit_id.hex()[:8], c.seq, reason, message)
        action = self.machine.compute_failed(c.circuit_id, c.seq, reason, message)
        if isinstance(action, hopm.Send):
            await self.links.send_best_effort(action)

    async def _close(self, send: hopm.Send) -> None:
        """Pass the requester's CloseNotice on (after every earlier frame), then free the circuit."""
        try:
            await self.links.send(send)
        except NetworkError as exc:
            log.info("circuit %s: close notice not forwarded to %s: %s", send.circuit_id.hex()[:8], send.peer_id, exc)
        self.machine.forget(send.circuit_id)
        await self._forget(send.circuit_id)
