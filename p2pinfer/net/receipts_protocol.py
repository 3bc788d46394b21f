"""Receipt delivery, "/p2pinfer/receipt/1.0.0" (protocol/SPEC.md section 6.4).

After each completed hop the requester gives the hop a signed receipt (core/receipts.py); the
hop verifies it and records it in its ledger as credit earned from that requester. One frame
each way, both bounded in size and time:

    requester --ReceiptDelivery(receipt=blob)--> hop
    requester <--ReceiptAck(accepted, reason)--- hop

The hop acts on nothing it has not verified: `Ledger.record_receipt_earned` runs
`decode_verified(blob, hop_peer_id=<this node>)`, so a forged receipt (bad signature), one
made out to another hop, or a malformed blob is answered `accepted=False` with its reason,
counted in `ReceiptCounters` and logged, and credits nothing. A receipt already held is
accepted again without counting twice (the requester may retry).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from p2pinfer.core import wire
from p2pinfer.errors import LedgerError, NetworkError, RecordError, WireError
from p2pinfer.ledger import Ledger
from p2pinfer.net.circuit_io import close_stream, open_stream, remote_peer
from p2pinfer.net.framing import read_frame, write_frame

log = logging.getLogger(__name__)

RECEIPT_PROTOCOL = TProtocol("/p2pinfer/receipt/1.0.0")
MAX_RECEIPT_FRAME = 2048  # a ReceiptDelivery: <= 1024-byte blob plus the map around it


@dataclass
class ReceiptCounters:
    """What the hop did with the receipts it was given."""

    accepted: int = 0
    rejected: int = 0
    unreadable: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


async def send_receipt(host: IHost, peer_id: str, addrs: Sequence[str], signed_blob: bytes, *,
                       timeout: float) -> bool:
    """Give hop `peer_id` its signed receipt; True if the hop credited it, False if the hop
    rejected it (the reason is logged). Raises NetworkError when the hop cannot be reached or
    does not answer properly within `timeout` seconds (the whole exchange)."""
    if not isinstance(signed_blob, bytes) or not 0 < len(signed_blob) <= wire.MAX_RECEIPT_BLOB:
        raise WireError(f"receipt: a signed receipt blob of 1..{wire.MAX_RECEIPT_BLOB} bytes is required")
    data = wire.encode(wire.ReceiptDelivery(receipt=signed_blob))
    try:
        with trio.fail_after(timeout):
            stream = await open_stream(host, peer_id, RECEIPT_PROTOCOL, timeout=timeout, addrs=addrs)
            try:
                await write_frame(stream, data, max_size=MAX_RECEIPT_FRAME, timeout=timeout)
                reply = await read_frame(stream, max_size=MAX_RECEIPT_FRAME, timeout=timeout)
            finally:
                await close_stream(stream)
    except trio.TooSlowError as exc:
        raise NetworkError(f"receipt to {peer_id}: no answer within {timeout:g}s") from exc
    except WireError as exc:  # the stream ended or broke before an answer
        raise NetworkError(f"receipt to {peer_id}: no answer: {exc}") from exc
    try:
        ack = wire.decode(reply, expect=[wire.ReceiptAck], max_size=MAX_RECEIPT_FRAME)
    except WireError as exc:
        raise NetworkError(f"receipt to {peer_id}: bad answer: {exc}") from exc
    if not ack.accepted:
        log.warning("hop %s rejected our receipt: %s", peer_id, ack.reason)
    return bool(ack.accepted)


class ReceiptService:
    """Hop side: serve RECEIPT_PROTOCOL on `host`, crediting verified receipts made out to
    `self_peer_id` into `ledger` (written in a worker thread). `on_credit(requester)` is told
    after a receipt from that requester is recorded (e.g. to refresh a cached credit)."""

    def __init__(self, host: IHost, self_peer_id: str, ledger: Ledger, *, io_timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time,
                 on_credit: Callable[[str], None] | None = None) -> None:
        if not io_timeout_s > 0:
            raise ValueError("receipts: io_timeout_s must be positive")
        self.host, self.self_peer_id, self.ledger = host, self_peer_id, ledger
        self.io_timeout_s, self.clock = io_timeout_s, clock
        self.counters = ReceiptCounters()
        self._on_credit = on_credit or (lambda _requester: None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(RECEIPT_PROTOCOL, self._on_stream)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.host.remove_stream_handler(RECEIPT_PROTOCOL)

    async def _on_stream(self, stream: INetStream) -> None:
        sender = remote_peer(stream)
        try:
            data = await read_frame(stream, max_size=MAX_RECEIPT_FRAME, timeout=self.io_timeout_s)
            try:
                blob = wire.decode(data, expect=[wire.ReceiptDelivery], max_size=MAX_RECEIPT_FRAME).receipt
            except WireError as exc:
                self.counters.unreadable += 1
                log.warning("unreadable receipt message from %s: %s", sender, exc)
                return
            ack = await self.accept(blob, sender=sender)
            await write_frame(stream, wire.encode(ack), max_size=MAX_RECEIPT_FRAME, timeout=self.io_timeout_s)
        except WireError as exc:  # oversized or unframeable: the sender broke the protocol
            self.counters.unreadable += 1
            log.warning("unreadable receipt stream from %s: %s", sender, exc)
        except NetworkError as exc:  # the stream failed or timed out
            log.info("receipt stream from %s failed: %s", sender, exc)
        finally:
            await close_stream(stream)

    async def accept(self, blob: bytes, *, sender: str = "?") -> wire.ReceiptAck:
        """Verify and record one receipt blob; the answer for its sender."""
        now = self.clock()
        try:
            signed = await trio.to_thread.run_sync(
                lambda: self.ledger.record_receipt_earned(blob, self_peer_id=self.self_peer_id, now=now))
        except RecordError as exc:
            return self._reject(exc.reason, f"{exc}", sender)
        except LedgerError as exc:  # our own disk, not the sender's fault: say so, count it
            log.error("receipt from %s not recorded: %s", sender, exc)
            return self._reject("internal", str(exc), sender)
        self.counters.accepted += 1
        requester = signed.receipt.requester_peer_id
        log.debug("receipt from %s: %.3f GFLOP for [%d, %d)", requester, signed.receipt.gflop,
                  signed.receipt.start, signed.receipt.stop)
        self._on_credit(requester)
        return wire.ReceiptAck(accepted=True, reason="")

    def _reject(self, reason: str, message: str, sender: str) -> wire.ReceiptAck:
        self.counters.rejected += 1
        self.counters.reasons[reason] += 1
        log.warning("rejected receipt from %s (%s): %s", sender, reason, message)
        return wire.ReceiptAck(accepted=False, reason=reason[: wire.MAX_TEXT])
