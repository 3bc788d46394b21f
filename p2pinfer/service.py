"""`async with` for long-lived trio services.

A service exposes `async def run(self, *, task_status=trio.TASK_STATUS_IGNORED)` (started with
`nursery.start`); this mixin adds `async with service:`, which starts `run` in a private nursery,
returns once it reported started, and cancels it on exit. Errors from the body come out as
themselves, not wrapped in an ExceptionGroup. `_before_stop` is a hook for a bounded, orderly
wind-down (it runs only on a normal exit).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import trio

from p2pinfer.errgroups import unwrapped


class ServiceContext:
    _service_stack: AsyncExitStack | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:  # pragma: no cover
        raise NotImplementedError

    async def _before_stop(self) -> None:
        """Called on a normal `async with` exit, before the service is cancelled."""

    async def __aenter__(self) -> Any:
        stack = AsyncExitStack()
        nursery = await stack.enter_async_context(trio.open_nursery())
        try:
            await nursery.start(self.run)
        except BaseException:
            nursery.cancel_scope.cancel()
            await stack.aclose()
            raise
        stack.callback(nursery.cancel_scope.cancel)
        self._service_stack = stack
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._service_stack is not None, "__aexit__ without __aenter__"
        if exc[0] is None:
            await self._before_stop()
        with unwrapped():  # the body's own error, not an ExceptionGroup around it
            return await self._service_stack.__aexit__(*exc)
