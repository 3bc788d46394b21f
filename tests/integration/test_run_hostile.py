"""Issue 5 point 7 through the requester and the `run` CLI: bad input, unknown models, no
reachable peers and refusing peers give one clear error (exit code 2 on the CLI), never a hang;
and the hook object lets a requester re-plan around a refusing peer.

The CLI cases run `p2pinfer.cli.main` in this process (argument/input errors need no network,
and a dead bootstrap port fails at its first dial); a real OS process is in tests/system."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import trio

from p2pinfer.cli import main
from p2pinfer.client import Attempt, Requester, RequesterHooks, Retry
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import CircuitError, HopRefusedError, InputError, NetworkError, PlanError, UnknownModelError
from p2pinfer.models import zoo
from p2pinfer.models.store import ModelStore
from p2pinfer.net.hop_protocol import HopConfig
from p2pinfer.swarm import SwarmOptions

from tests.integration.run_swarm import TEST_REQUESTER, node_config, swarm_and_requester, swarm_in_thread

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    zoo.get_manifest("mlp", store=store)
    return store


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    started = time.monotonic()
    code = main(["run", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert time.monotonic() - started < 30
    return code, err[-1] if err else ""


def test_cli_rejects_bad_models_and_inputs_with_one_line(tmp_path: Path, store: ModelStore,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(store.root)]
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 5), np.float32))
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x00not an npy file at all")
    cases = [
        (["no-such-model", "--input", "x"], "unknown model 'no-such-model'"),
        (["mlp", "--input", str(wrong)], "has shape [3, 5], expected [64] or [B, 64]"),
        (["mlp", "--input", str(tmp_path / "missing.npy")], "is not a readable file"),
        (["mlp", "--input", str(garbage)], "cannot read 'garbage.npy' as .npy"),
        (["mlp", "--input-file", str(tmp_path / "missing.txt")], "is not a readable file"),
        (["mlp", "--input-file", str(wrong), "--local"], "--input-file streams through a swarm"),
    ]
    for args, message in cases:
        code, last = _run(capsys, *args, *data)
        assert code == 2, (args, last)
        assert last.startswith("p2pinfer: error: ") and message in last, (args, last)


def test_cli_with_a_dead_bootstrap_port_fails_fast(store: ModelStore, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"/ip4/127.0.0.1/tcp/{_free_port()}/p2p/{Identity.generate().peer_id}"
    np.save(store.root / "x.npy", X)
    code, last = _run(capsys, "mlp", "--input", str(store.root / "x.npy"), "--bootstrap", dead,
                      "--data-dir", str(store.root))
    assert code == 2 and "no bootstrap peer answered" in last and dead in last


def _free_port() -> int:
    """A port nobody listens on (bound once by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_requester_rejects_unknown_models_and_bad_inputs_before_the_network(store: ModelStore) -> None:
    requester = Requester(["/ip4/127.0.0.1/tcp/1/p2p/" + Identity.generate().peer_id], store=store)
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        await requester.infer("nope", "x")  # not even started: no network was needed
    with pytest.raises(InputError, match=r"must have shape \[B, 64\]"):
        await requester.infer("mlp", {"x": np.zeros((1, 63), np.float32)})
    with pytest.raises(InputError, match="takes tensors"):
        await requester.infer("mlp", {"y": X})
    with pytest.raises(PlanError, match="unknown objective 'fastest'"):
        await requester.infer("mlp", X, objective="fastest")


LIAR = "liar"  # advertises 1 GiB and the fastest compute, but its hop accepts 1 KiB of weights


def _liar_swarm() -> tuple[list, SwarmOptions]:
    configs = [node_config(LIAR, gflops=1000.0), node_config("honest-a", gflops=20.0), node_config("honest-b", gflops=10.0)]
    hop = HopConfig(io_timeout_s=10.0, setup_timeout_s=30.0)
    return configs, SwarmOptions(emulate=False, hop=hop, hop_by_name={LIAR: HopConfig(io_timeout_s=10.0, mem_bytes=1024)})


async def test_a_refusing_peer_is_a_clear_error_by_default(store: ModelStore) -> None:
    configs, options = _liar_swarm()
    async with swarm_and_requester(configs, store, options=options) as (swarm, requester):
        liar = next(m.peer_id for m in swarm.members if m.name == LIAR)
        with trio.fail_after(30):
            with pytest.raises(HopRefusedError) as refused:
                await requester.infer("mlp", X)
    assert refused.value.peer_id == liar and refused.value.reason == "out-of-memory"
    assert "1024" in str(refused.value)


class ExcludeRefusers(RequesterHooks):
    """What fault handling will do: re-plan without a peer that refused; remember outcomes."""

    def __init__(self) -> None:
        self.failures: list[tuple[Attempt, Exception]] = []
        self.successes: list[Attempt] = []

    async def on_failure(self, attempt: Attempt, error: CircuitError | NetworkError) -> Retry | None:
        self.failures.append((attempt, error))
        return Retry(exclude=frozenset({error.peer_id})) if isinstance(error, HopRefusedError) else None

    async def on_success(self, attempt: Attempt, result: object) -> None:
        self.successes.append(attempt)


async def test_hooks_replan_without_the_refusing_peer(store: ModelStore) -> None:
    configs, options = _liar_swarm()
    hooks = ExcludeRefusers()
    async with swarm_and_requester(configs, store, options=options, hooks=hooks) as (swarm, requester):
        liar = next(m.peer_id for m in swarm.members if m.name == LIAR)
        with trio.fail_after(30):
            result = await requester.infer("mlp", X)
    assert result.attempts == 2 and liar not in {h.peer_id for h in result.plan.hops}
    (first, error), = hooks.failures
    assert liar in {h.peer_id for h in first.plan.hops} and isinstance(error, HopRefusedError)
    assert [a.number for a in hooks.successes] == [2] and hooks.successes[0].excluded == frozenset({liar})
    assert len(result.output) == 1


async def test_no_peers_left_after_exclusions_is_a_network_error(store: ModelStore) -> None:
    configs, options = _liar_swarm()

    class ExcludeEveryone(RequesterHooks):
        async def on_failure(self, attempt: Attempt, error: CircuitError | NetworkError) -> Retry | None:
            return Retry(exclude=frozenset(p.peer_id for p in attempt.snapshot.peers))

    async with swarm_and_requester(configs, store, options=options, hooks=ExcludeEveryone(),
                                   config=TEST_REQUESTER) as (_swarm, requester):
        with trio.fail_after(30), pytest.raises(NetworkError, match="no usable peers"):
            await requester.infer("mlp", X)


def test_cli_reports_a_refusing_peer_in_one_line(store: ModelStore, capsys: pytest.CaptureFixture[str]) -> None:
    configs, options = _liar_swarm()
    np.save(store.root / "x.npy", X)
    with swarm_in_thread(configs, store, options=options) as swarm:
        liar = next(m.peer_id for m in swarm.members if m.name == LIAR)
        code, last = _run(capsys, "mlp", "--input", str(store.root / "x.npy"), "--bootstrap", swarm.bootstrap_addrs[0],
                          "--data-dir", str(store.root), "--max-attempts", "1")  # no failover: the refusal is the answer
    assert code == 2 and last.startswith("p2pinfer: error: ")
    assert liar in last and "out-of-memory" in last, last
