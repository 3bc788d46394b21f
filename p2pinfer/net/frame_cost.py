"""Measure what handling one input costs this node as a hop: the frame term of the cost model.

A hop reads its input frame (TCP, Noise, yamux, our framing), opens it (CBOR, XChaCha20-Poly1305,
replay check), hands it to compute, seals the output and its commitment and writes both. That
CPU comes out of the same quota as the compute, and on a 0.2-core board it is not small: the
testbed's VGG-16 even split ran its 0.2-core hops 9-13% over the compute prediction, with two
activations of 0.4-1.6 MB in and out per input. So a node measures it at start, like compute:
one real py-libp2p connection on loopback between two hosts of its own (the stack every node
uses, net/host.make_host), a client thread sending frames the way the previous hop does, and
the hop side doing on its own thread exactly the per-frame work of HopService except the
compute (`HopMachine.on_frame`, `finish`, two frame writes); its thread CPU time per input, at
a small and a large activation, gives a fixed and a per-MiB cost. Per CPU-second results are
cached (data dir, `FRAME_COST_FILE`); the wall cost at this node divides by the cores its one
frame-handling thread may use (cgroup quota), read again at every start.

Measured here (one full core): 2.3 ms per input and 5.7 ms per MiB read or sent, ~1 s in all;
the testbed's hops spent ~2-2.5 ms of main-thread CPU per input in streams of small frames.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trio

log = logging.getLogger(__name__)

FRAME_COST_VERSION = 1
FRAME_COST_FILE = "frame_cost.json"  # in the node's data dir
SMALL_BYTES, LARGE_BYTES = 4 << 10, 1 << 20  # activations of the two measured sizes
MIB = float(1 << 20)
_PROTO = "/p2pinfer/frame-cost/1.0.0"
_REPORT = "/p2pinfer/frame-cost-report/1.0.0"
_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FrameCost:
    """A hop's frame handling per input: `fixed_ms` plus `ms_per_mib` per MiB of activation read
    or sent, in ms of this node's wall time (CPU ms / usable cores)."""

    fixed_ms: float
    ms_per_mib: float
    from_cache: bool = False


def fit(small_cpu_ms: float, large_cpu_ms: float, *, small_bytes: int = SMALL_BYTES,
        large_bytes: int = LARGE_BYTES) -> tuple[float, float]:
    """(fixed CPU ms, CPU ms per MiB) from the CPU per input at two sizes. In the measurement a
    hop reads and sends an activation of the same size, so each input moves twice its bytes."""
    per_mib = max(large_cpu_ms - small_cpu_ms, 0.0) / (2 * (large_bytes - small_bytes) / MIB)
    fixed = max(small_cpu_ms - per_mib * 2 * small_bytes / MIB, 0.0)
    return fixed, per_mib


def scaled(fixed_cpu_ms: float, per_mib_cpu_ms: float, cores: float, *, from_cache: bool = False) -> FrameCost:
    """CPU costs -> wall costs at this node. Both stay > 0 (a signed record carries them only so)."""
    floor = 1e-3
    return FrameCost(max(fixed_cpu_ms, floor) / cores, max(per_mib_cpu_ms, floor) / cores, from_cache)


def _frame_limit(nbytes: int) -> int:
    """A frame size limit comfortably above a sealed activation of `nbytes` and its commitment."""
    return 4 * nbytes + (64 << 10)


def one_hop_pair(*, ttl_ms: int = 600_000) -> tuple[Any, Any]:
    """(CircuitMachine, HopMachine) of a one-hop circuit set up with the pure machines alone
    (assignment sealed, accepted and acknowledged), fresh identities: frames from the first
    open on the second. Also used by benchmarks/bench_hop.py."""
    from p2pinfer.core import hop as hopm
    from p2pinfer.core import wire
    from p2pinfer.core.circuit import CircuitMachine, HopSpec
    from p2pinfer.crypto.identity import Identity

    requester, hop = Identity.generate(), Identity.generate()
    now = int(time.time() * 1000)
    circuit = CircuitMachine(requester, model_id="00" * 32, hops=[HopSpec(hop.peer_id, (), 0, 1)],
                             requester_addrs=(), now_ms=now, ttl_ms=ttl_ms)
    machine = hopm.HopMachine(hop)
    (_, data), = circuit.assign_requests()
    prep = machine.on_assign(data, now_ms=now)
    circuit.on_reply(hop.peer_id, wire.encode(machine.span_ready(prep.assignment.circuit_id).message))
    return circuit, machine


def _hop_side(nbytes: int, reps: int, events: dict[str, threading.Event], addr: dict[str, Any],
              out: list[float]) -> None:
    """Thread body: a host serving the measurement protocol; appends the thread CPU ms per input,
    sets events["measured"] when all are in, and runs until events["done"]."""
    trio.run(_serve_hop, nbytes, reps, events, addr, out)


async def _serve_hop(nbytes: int, reps: int, events: dict[str, threading.Event], addr: dict[str, Any],
                     out: list[float]) -> None:
    ready, measured, done = events["ready"], events["measured"], events["done"]
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    from p2pinfer.core import hop as hopm
    from p2pinfer.net.framing import read_frame, write_frame
    from p2pinfer.net.host import make_host

    machine, identity, client_id = addr["machine"], addr["hop_identity"], addr["client_id"]
    host = make_host(identity.libp2p_key_pair())
    limit = _frame_limit(nbytes)

    async def handler(stream: Any) -> None:
        report = await host.new_stream(ID.from_base58(client_id), [_REPORT])
        now = int(time.time() * 1000) + 1
        cpu = []
        for _ in range(reps):
            start = time.thread_time()
            data = await read_frame(stream, max_size=limit, timeout=_TIMEOUT_S)
            action = machine.on_frame(data, now_ms=now, max_size=limit)
            if not isinstance(action, hopm.Compute):
                raise RuntimeError(f"frame-cost measurement: hop refused its own frame: {action}")
            await trio.to_thread.run_sync(lambda: None)  # the hand-off to the compute thread
            computed = machine.finish(action, action.act, 1)
            await write_frame(stream, computed.send.data, max_size=limit, timeout=_TIMEOUT_S)
            await write_frame(report, computed.commit.data, max_size=limit, timeout=_TIMEOUT_S)
            cpu.append((time.thread_time() - start) * 1000)
        out.extend(cpu)
        measured.set()

    host.set_stream_handler(_PROTO, handler)
    async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        addr["addrs"] = host.get_addrs()
        ready.set()
        with trio.fail_after(_TIMEOUT_S * 4):
            await trio.to_thread.run_sync(done.wait)


async def _client(nbytes: int, reps: int, addr: dict[str, Any], frames: list[bytes]) -> None:
    """The previous hop: sends each frame and waits for the output before the next (one input
    in flight, so the hop side's thread CPU is its own work)."""
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo
    from multiaddr import Multiaddr

    from p2pinfer.net.framing import read_frame, write_frame
    from p2pinfer.net.host import make_host

    host = make_host(addr["client_identity"].libp2p_key_pair())
    limit = _frame_limit(nbytes)

    async def drain(stream: Any) -> None:
        for _ in range(reps):
            await read_frame(stream, max_size=limit, timeout=_TIMEOUT_S)

    host.set_stream_handler(_REPORT, drain)
    async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        hop_id = ID.from_base58(addr["hop_identity"].peer_id)
        with trio.fail_after(_TIMEOUT_S):
            await host.connect(PeerInfo(hop_id, addr["addrs"]))
            stream = await host.new_stream(hop_id, [_PROTO])
        for frame in frames:
            await write_frame(stream, frame, max_size=limit, timeout=_TIMEOUT_S)
            await read_frame(stream, max_size=limit, timeout=_TIMEOUT_S)


def _one_size(nbytes: int, reps: int) -> float:
    """Median hop-side thread CPU ms per input at activations of `nbytes` (after 3 warm-up inputs)."""
    circuit, machine = one_hop_pair()
    client, hop = circuit.requester, machine.identity
    act = {"x": np.random.default_rng(0).standard_normal(nbytes // 4).astype(np.float32)}
    warm = 3
    frames = [circuit.input_frame(act)[1] for _ in range(warm + reps)]
    addr: dict[str, Any] = {"machine": machine, "hop_identity": hop, "client_id": client.peer_id,
                            "client_identity": client}
    events = {name: threading.Event() for name in ("ready", "measured", "done")}
    out: list[float] = []
    side = threading.Thread(target=_hop_side, args=(nbytes, warm + reps, events, addr, out), daemon=True)
    side.start()
    try:
        if not events["ready"].wait(_TIMEOUT_S):
            raise RuntimeError("frame-cost measurement: the hop host did not start")
        trio.run(_client, nbytes, warm + reps, addr, frames)
        events["measured"].wait(_TIMEOUT_S)  # its last writes may land after our last read
    finally:
        events["done"].set()
        side.join(_TIMEOUT_S)
    if len(out) < warm + reps:
        raise RuntimeError("frame-cost measurement: the hop side did not finish")
    return statistics.median(out[warm:])


def per_cpu_costs(*, reps: int = 12) -> tuple[float, float]:
    """(fixed CPU ms per input, CPU ms per MiB read or sent), measured now (~1 s of CPU)."""
    return fit(_one_size(SMALL_BYTES, reps), _one_size(LARGE_BYTES, reps))


def cache_key() -> dict[str, Any]:
    from p2pinfer.models.calibrate import _cpu_model
    from p2pinfer.net.transport_tuning import installed_libp2p_version

    return {"version": FRAME_COST_VERSION, "libp2p": installed_libp2p_version(), "cpu": _cpu_model(),
            "machine": platform.machine(), "cpus": os.cpu_count()}


def measure_frame_cost(*, cache_path: Path | None, force: bool = False) -> FrameCost:
    """This node's frame cost: the cached per-CPU costs if they match this machine, else measured
    now; scaled by the cores one thread may use here (QuotaUnknown if the quota is unreadable)."""
    from p2pinfer.models.cpu_quota import usable_cores

    cores = usable_cores(1)  # one thread (the node's event loop) handles the frames
    key = cache_key()
    if cache_path is not None and not force:
        try:
            cached = json.loads(cache_path.read_text())
            if cached.get("key") == key:
                return scaled(float(cached["fixed_cpu_ms"]), float(cached["per_mib_cpu_ms"]), cores, from_cache=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # missing or corrupt: measure again
    started = time.monotonic()
    fixed, per_mib = per_cpu_costs()
    log.info("frame cost: %.2f ms + %.2f ms/MiB of CPU per input (measured in %.1f s)", fixed, per_mib,
             time.monotonic() - started)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps({"key": key, "fixed_cpu_ms": fixed, "per_mib_cpu_ms": per_mib}))
    return scaled(fixed, per_mib, cores)
