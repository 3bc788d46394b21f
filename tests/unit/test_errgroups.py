"""errgroups: which error a failed group of tasks stands for."""

from __future__ import annotations

import trio

from p2pinfer.errgroups import first_of_kind, sole_error
from p2pinfer.errors import HopFailedError, NetworkError, P2PInferError


async def _group_of(*errors: BaseException) -> BaseExceptionGroup:
    """What a trio nursery raises when its tasks fail with `errors` (the rest cancelled)."""
    async def fail(exc: BaseException) -> None:
        raise exc

    try:
        async with trio.open_nursery() as nursery:
            for exc in errors:
                nursery.start_soon(fail, exc)
            await trio.sleep_forever()
    except BaseExceptionGroup as group:
        return group
    raise AssertionError("the nursery did not fail")


async def test_several_errors_of_one_kind_stand_for_the_first() -> None:
    """A dead hop seen by a chain's watcher and its sender at once is one chain failure."""
    lost, reset = NetworkError("lost the connection"), NetworkError("stream is reset")
    group = await _group_of(lost, reset)
    assert sole_error(group) is None  # two real errors: `unwrapped` leaves the group alone
    assert first_of_kind(group, P2PInferError) in (lost, reset)
    mixed = await _group_of(HopFailedError(("peer",), "failure", "hop failed"), ValueError("a bug"))
    assert first_of_kind(mixed, P2PInferError) is None  # a bug among them is not a chain failure
    assert first_of_kind(await _group_of(ValueError("x")), P2PInferError) is None
