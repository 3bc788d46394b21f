"""The hop's compute path on a real libp2p hop: when its compute slot is busy, waiting frames are
served in order of their requester's credit in the hop's ledger (contributors first), a
zero-credit requester is still served; and an accepted span's layers are built at accept time
(prepare_fn), not on the first frame."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
import pytest
import torch
import trio

from p2pinfer.core.circuit import HopSpec
from p2pinfer.core.receipts import Receipt, sign_receipt
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import HopRefusedError, ModelError
from p2pinfer.ledger import Ledger, ledger_path
from p2pinfer.models import zoo
from p2pinfer.models.executor import SpanExecutor, span_hashes
from p2pinfer.models.manifest import Manifest
from p2pinfer.models.store import ModelStore
from p2pinfer.net.circuit_client import CircuitClient, ClientConfig
from p2pinfer.net.hop_protocol import HopConfig, HopService

from tests.integration.circuit_swarm import FAST, _host
from tests.conftest import async_wait_until

CONTRIBUTED_GFLOP = 100


@dataclass
class Requester:
    identity: Identity
    client: CircuitClient


@dataclass
class Bench:
    hop: HopService
    addrs: tuple[str, ...]
    manifest: Manifest
    ledger: Ledger

    def spec(self) -> list[HopSpec]:
        m = self.manifest
        return [HopSpec(self.hop.identity.peer_id, self.addrs, 0, m.num_layers, tuple(span_hashes(m, 0, m.num_layers)))]


@contextlib.asynccontextmanager
async def bench(tmp: Path, executor_fn: Any, *, prepare_fn: Any = None,
                n_requesters: int = 2) -> AsyncIterator[tuple[Bench, list[Requester]]]:
    """One hop (one compute slot, a real ledger) and `n_requesters` requesters on loopback."""
    store = ModelStore(tmp / "store")
    manifest = zoo.get_manifest("mlp", store=store)
    async with contextlib.AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        ident = Identity.generate()
        host = await stack.enter_async_context(_host(ident))
        ledger = stack.enter_context(Ledger(ledger_path(tmp / "hop")))
        hop = HopService(host, ident, executor_fn, store, config=HopConfig(compute_threads=1, **FAST),
                         prepare_fn=prepare_fn, credit_of=ledger.credit_of)
        await nursery.start(hop.run)
        requesters = []
        for _ in range(n_requesters):
            rid = Identity.generate()
            rhost = await stack.enter_async_context(_host(rid))
            client = CircuitClient(rhost, rid, config=ClientConfig(result_timeout_s=30.0, **FAST))
            await nursery.start(client.run)
            requesters.append(Requester(rid, client))
        addrs = tuple(f"{a}/p2p/{ident.peer_id}" for a in host.get_addrs())
        yield Bench(hop, addrs, manifest, ledger), requesters


def credit(ledger: Ledger, hop: Identity, contributor: str, gflop: int) -> None:
    """The hop signed a receipt for work `contributor` did for it: the contributor's credit."""
    r = Receipt.make(circuit_id=os.urandom(16), hop_peer_id=contributor, requester_peer_id=hop.peer_id,
                     model_id="m" * 64, start=0, stop=1, flops=gflop * 10**9, measured_s=1.0, issued_at=1.7e9)
    ledger.record_receipt_spent(sign_receipt(r, hop).blob, self_peer_id=hop.peer_id, now=1.7e9)


class Recorder:
    """A span executor that records which input it computed and can hold its first call."""

    def __init__(self, store: ModelStore) -> None:
        self.inner = SpanExecutor(store)
        self.order: list[float] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, manifest: Manifest, start: int, stop: int, x: dict[str, torch.Tensor]) -> Any:
        self.order.append(round(float(x["x"][0, 0]), 3))
        if len(self.order) == 1:
            self.entered.set()
            assert self.release.wait(20), "the test never released the hop"
        return self.inner.run(manifest, start, stop, x)


async def test_waiting_frames_are_served_by_credit_and_free_riders_still_served(tmp_path: Path) -> None:
    recorder = Recorder(ModelStore(tmp_path / "store"))
    async with bench(tmp_path, recorder) as (b, (free_rider, contributor)):
        credit(b.ledger, b.hop.identity, contributor.identity.peer_id, CONTRIBUTED_GFLOP)
        assert b.ledger.credit_of(contributor.identity.peer_id) == CONTRIBUTED_GFLOP
        model_id = b.manifest.model_id
        with trio.fail_after(30):
            blocker = await free_rider.client.open_circuit(model_id=model_id, hops=b.spec())
            waiting = [(req, value, await req.client.open_circuit(model_id=model_id, hops=b.spec()))
                       for req, value in [(free_rider, 1.0), (free_rider, 1.5), (contributor, 2.0), (contributor, 2.5)]]
            results: dict[float, np.ndarray] = {}

            async def infer(circuit: Any, value: float) -> None:
                results[value] = (await circuit.infer({"x": np.full((1, 64), value, np.float32)}, timeout=25)).act["x"]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(infer, blocker, 0.0)  # an idle hop serves a stranger at once
                await trio.to_thread.run_sync(recorder.entered.wait, 20)
                assert b.hop.gate.counters.immediate == 1
                for _req, value, circuit in waiting:  # free rider's frames arrive first
                    nursery.start_soon(infer, circuit, value)
                    queued = len([w for w in waiting if w[1] <= value])
                    await async_wait_until(lambda: b.hop.gate.waiting >= queued, timeout=20, interval=0.01,
                                           what=f"{queued} frame(s) queued at the busy hop")
                recorder.release.set()
        assert recorder.order == [0.0, 2.0, 2.5, 1.0, 1.5]  # contributor first, then the free rider (FIFO)
        assert sorted(results) == [0.0, 1.0, 1.5, 2.0, 2.5]  # everyone was served
        assert b.hop.gate.counters.queued == 4 and b.hop.gate.counters.dropped == 0
        with torch.inference_mode():
            want = recorder.inner.run(b.manifest, 0, b.manifest.num_layers, {"x": torch.full((1, 64), 1.0)})["x"].numpy()
        np.testing.assert_allclose(results[1.0], want, atol=1e-5, rtol=0)


async def test_span_is_built_at_accept_time_in_a_worker_thread(tmp_path: Path) -> None:
    executor = SpanExecutor(ModelStore(tmp_path / "store"))
    calls: list[tuple[str, int, int, bool]] = []

    def prepare(manifest: Manifest, start: int, stop: int) -> None:
        calls.append((manifest.model_id, start, stop, threading.current_thread() is threading.main_thread()))
        executor.prepare(manifest, start, stop)

    async with bench(tmp_path, executor.run, prepare_fn=prepare, n_requesters=1) as (b, (req,)):
        m = b.manifest
        with trio.fail_after(30):
            circuit = await req.client.open_circuit(model_id=m.model_id, hops=b.spec())
            assert calls == [(m.model_id, 0, m.num_layers, False)]  # before any frame, off the trio thread
            assert b.hop.counters.frames_computed == 0
            assert all((m.model_id, i) in executor._cache for i in range(m.num_layers))  # layers built
            out = await circuit.infer({"x": np.zeros((1, 64), np.float32)}, timeout=20)
        assert out.act["x"].shape[0] == 1 and len(calls) == 1


async def test_a_span_that_cannot_be_built_is_refused(tmp_path: Path) -> None:
    def broken(manifest: Manifest, start: int, stop: int) -> None:
        raise ModelError("layer 0 (linear): weights do not fit the layer")

    executor = SpanExecutor(ModelStore(tmp_path / "store"))
    async with bench(tmp_path, executor.run, prepare_fn=broken, n_requesters=1) as (b, (req,)):
        with trio.fail_after(30), pytest.raises(HopRefusedError, match="could not be built"):
            await req.client.open_circuit(model_id=b.manifest.model_id, hops=b.spec())
