"""The hop's three-stage pipeline and its emulated receive latency (virtual trio clock)."""

from __future__ import annotations

import trio

from p2pinfer.net.hop_pipeline import run_pipeline

LATENCY_S, COMPUTE_S = 0.005, 0.010


def _source(items: list[int], read_at: list[float]):
    pending = list(items)

    async def read() -> int | None:
        if not pending:
            return None
        read_at.append(trio.current_time())
        return pending.pop(0)

    return read


async def test_received_frames_wait_the_latency_but_overlap_it(autojump_clock) -> None:
    """Each item is worked LATENCY_S after it was read, never sooner; the reader is not held back,
    so a queued item's latency overlaps the previous compute instead of adding to it."""
    read_at: list[float] = []
    started: dict[int, float] = {}
    forwarded: list[int] = []

    async def work(item: int) -> int:
        started[item] = trio.current_time()
        await trio.sleep(COMPUTE_S)
        return item * 10

    async def forward(result: int) -> None:
        forwarded.append(result)

    t0 = trio.current_time()
    await run_pipeline(_source([1, 2, 3], read_at), work, forward, depth=4, stall_timeout_s=5.0, hold_s=LATENCY_S)

    assert forwarded == [10, 20, 30]  # order kept end to end
    assert read_at == [t0] * 3  # all read at once: the delay did not slow the reader
    assert started[1] - t0 == LATENCY_S  # the first frame waits its latency
    # later frames wait for the compute slot only: their latency ran while item 1 computed
    assert started[2] - t0 == LATENCY_S + COMPUTE_S
    assert started[3] - t0 == LATENCY_S + 2 * COMPUTE_S


async def test_without_delivery_delay_work_starts_at_once(autojump_clock) -> None:
    """Without a hold the pipeline adds no wait: the contrast that makes the test above mean something."""
    started: list[float] = []

    async def work(item: int) -> int:
        started.append(trio.current_time())
        return item

    async def forward(_result: int) -> None:
        return None

    t0 = trio.current_time()
    await run_pipeline(_source([1, 2], []), work, forward, depth=2, stall_timeout_s=5.0)
    assert started == [t0, t0]
