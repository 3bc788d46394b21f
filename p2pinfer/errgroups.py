"""Unwrap trio's exception groups back into the one error a caller can act on.

trio (strict exception groups) wraps whatever escapes a nursery in an ExceptionGroup, even a
single error. Library users and the CLI want the `HopRefusedError` / `NetworkError` itself, so
the requester and the embedded swarm re-raise a group's sole real error (cancellations aside).
A group of several real errors is left as it is.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import trio


def leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def sole_error(group: BaseExceptionGroup) -> BaseException | None:
    """The one non-cancellation error inside `group`, or None if there are several / none."""
    real = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
    return real[0] if len(real) == 1 else None


def first_of_kind(group: BaseExceptionGroup, kind: type[BaseException]) -> BaseException | None:
    """The first error inside `group` if every non-cancellation error in it is a `kind` (several
    tasks of one job failing together, e.g. a dead peer seen by its watcher and its sender at
    once), else None."""
    real = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
    return real[0] if real and all(isinstance(e, kind) for e in real) else None


@contextmanager
def unwrapped() -> Iterator[None]:
    """Re-raise a group holding exactly one real error as that error."""
    try:
        yield
    except BaseExceptionGroup as group:
        sole = sole_error(group)
        if sole is None:
            raise
        raise sole from None
