"""The libp2p DHT validator for the "p2pinfer" namespace: a thin adapter over core.validator.

py-libp2p's `NamespacedValidator(strict_validation=True)` routes every key "/p2pinfer/..." here on
every PUT it receives, on every value a GET returns, and on our own puts. All rules live in the
pure `p2pinfer.core.validator`; this adapter only supplies the clock, logs each rejection with its
reason (issue 2 point 7), and counts rejections per reason so tests and operators can see them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

from libp2p.records.validator import NamespacedValidator, Validator

from p2pinfer.core.validator import select_best, validate_entry
from p2pinfer.errors import RecordError

logger = logging.getLogger(__name__)

NAMESPACE = "p2pinfer"


class P2PInferValidator(Validator):
    """Validate and select p2pinfer records for the DHT; logs and counts every rejection."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.rejections: Counter[str] = Counter()

    def validate(self, key: str, value: bytes) -> None:
        try:
            validate_entry(key, value, now=self._clock())
        except RecordError as exc:
            self.rejections[exc.reason] += 1
            logger.warning("DHT rejected value for %s: %s (%s)", key, exc.reason, exc)
            raise

    def select(self, key: str, values: list[bytes]) -> int:
        now = self._clock()

        def on_reject(index: int, exc: RecordError) -> None:
            self.rejections[exc.reason] += 1
            logger.warning("DHT select skipped value %d for %s: %s (%s)", index, key, exc.reason, exc)

        try:
            best = select_best(key, values, now=now, on_reject=on_reject)
        except RecordError as exc:
            self.rejections[exc.reason] += 1
            logger.warning("DHT select found no valid value for %s: %s (%s)", key, exc.reason, exc)
            raise
        self._log_stale(key, values, best, now)
        return best

    def _log_stale(self, key: str, values: list[bytes], best: int, now: float) -> None:
        """Name the losers of a select: a seq not newer than the kept one is "stale-seq"."""
        if len(values) < 2:
            return
        kept = validate_entry(key, values[best], now=now)
        for index, value in enumerate(values):
            if index == best or value == values[best]:
                continue
            try:
                loser = validate_entry(key, value, now=now)
            except RecordError:
                continue  # already reported by on_reject
            self.rejections["stale-seq"] += 1
            logger.info("DHT kept seq %d over stale seq %d for %s (stale-seq)", kept.seq, loser.seq, key)


def namespaced_validator(validator: P2PInferValidator) -> NamespacedValidator:
    """A strict NamespacedValidator: keys outside registered namespaces are rejected."""
    return NamespacedValidator({NAMESPACE: validator}, strict_validation=True)
