"""/p2pinfer/handoff/1.0.0: a surviving hop hands its retained outputs to a new suffix circuit.

Hop side (`HandoffHandler`, served by every HopService): read one sealed HandoffRequest (size
checked before parsing, deadline), open and verify it (crypto/handoff_sealing.py), check it
against the circuit we serve (core/handoff.check: same requester, our link, live, deadline),
seal every retained output it names as link 0 of the suffix circuit and write them to the
suffix's first hop on the hop protocol, then answer one HandoffReply (sent / missing seqs, or a
refusal with its reason). A refused request is counted and logged; the hop keeps serving.

Requester side (`request_handoff`): seal and send the handoff, read the reply, all bounded by
one deadline; the reply must come from the holder and name its circuit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol

from p2pinfer.core import handoff as ho
from p2pinfer.core import wire
from p2pinfer.crypto.handoff_sealing import open_handoff, seal_handoff
from p2pinfer.crypto.identity import Identity
from p2pinfer.errors import NetworkError, P2PInferError, RecordError, WireError
from p2pinfer.net.circuit_io import close_stream, open_stream, remote_peer
from p2pinfer.net.framing import read_frame, write_frame

log = logging.getLogger(__name__)

HANDOFF_PROTOCOL = TProtocol("/p2pinfer/handoff/1.0.0")
HOP_PROTOCOL = TProtocol("/p2pinfer/hop/1.0.0")  # = hop_protocol.HOP_PROTOCOL (importing it would be circular)


@dataclass
class HandoffCounters:
    served: int = 0  # handoffs acted on (some seqs may have been missing)
    refused: int = 0  # unreadable, forged, not ours, wrong requester/link/circuit, expired
    frames_sent: int = 0
    missing: int = 0  # seqs asked for that retention no longer held
    reasons: dict[str, int] = field(default_factory=dict)


class HandoffHandler:
    """The hop's handler; `machine` is its HopMachine (assignments and retention)."""

    def __init__(self, host: IHost, identity: Identity, machine: Any, *, io_timeout_s: float, max_frame: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.host, self.identity, self.machine = host, identity, machine
        self.io_timeout_s, self.max_frame, self.clock = io_timeout_s, max_frame, clock
        self.counters = HandoffCounters()

    async def __call__(self, stream: INetStream) -> None:
        sender = remote_peer(stream)
        try:
            data = await read_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=self.io_timeout_s)
            answer = await self._serve(data, sender)
            await write_frame(stream, wire.encode(answer), max_size=wire.MAX_CONTROL_FRAME, timeout=self.io_timeout_s)
        except P2PInferError as exc:
            log.info("handoff stream from %s ended: %s", sender, exc)
        finally:
            await close_stream(stream)

    async def _serve(self, data: bytes, sender: str) -> ho.HandoffReply:
        me = self.identity.peer_id
        try:
            h = open_handoff(self.identity, wire.decode(data, expect=[ho.HandoffRequest]).sealed)
        except WireError as exc:
            return self._refuse(None, ("malformed", str(exc)), sender)
        except RecordError as exc:
            return self._refuse(None, (exc.reason, str(exc)), sender)
        refusal = ho.check(h, self.machine.assignment(h.circuit_id), me=me, now_ms=int(self.clock() * 1000),
                           max_ttl_ms=self.machine.max_ttl_ms)
        if refusal is not None:
            return self._refuse(h, refusal, sender)
        held = ho.held(h, self.machine.retention)  # on the trio thread: retention is not thread-safe
        planned = await trio.to_thread.run_sync(lambda: ho.frames(h, held, max_size=self.max_frame))
        sent = await self._write(h, planned)
        self.counters.missing += len(planned.missing)
        if len(sent) < len(planned.frames):
            return self._refuse(h, ("next-hop-unreachable", f"could not write to {h.next_hop.peer_id}"), sender, sent,
                                planned.missing)
        self.counters.served += 1
        log.info("circuit %s: handed %d output(s) to %s (%d no longer held)", h.circuit_id.hex()[:8], len(sent),
                 h.next_hop.peer_id, len(planned.missing))
        return ho.reply(h, me, sent=sent, missing=planned.missing)

    async def _write(self, h: ho.Handoff, planned: ho.HandoffFrames) -> list[int]:
        """Write the sealed frames in order on one hop stream to the suffix's first hop."""
        sent: list[int] = []
        if not planned.frames:
            return sent
        try:
            stream = await open_stream(self.host, h.next_hop.peer_id, HOP_PROTOCOL, timeout=self.io_timeout_s,
                                       addrs=h.next_hop.addrs)
        except NetworkError as exc:
            log.warning("handoff: cannot reach %s: %s", h.next_hop.peer_id, exc)
            return sent
        try:
            for seq, _new_seq, frame in planned.frames:
                await write_frame(stream, frame, max_size=self.max_frame, timeout=self.io_timeout_s)
                sent.append(seq)
                self.counters.frames_sent += 1
        except (NetworkError, WireError) as exc:
            log.warning("handoff: writing to %s failed after %d frame(s): %s", h.next_hop.peer_id, len(sent), exc)
        finally:
            await close_stream(stream)
        return sent

    def _refuse(self, h: ho.Handoff | None, refusal: tuple[str, str], sender: str, sent: Any = (),
                missing: Any = ()) -> ho.HandoffReply:
        self.counters.refused += 1
        self.counters.reasons[refusal[0]] = self.counters.reasons.get(refusal[0], 0) + 1
        log.warning("handoff from %s refused: %s: %s", sender, *refusal)
        return ho.reply(h, self.identity.peer_id, sent=sent, missing=missing, refusal=refusal)


async def request_handoff(host: IHost, identity: Identity, handoff: ho.Handoff, addrs: tuple[str, ...], *,
                          timeout: float) -> ho.HandoffReply:
    """Send `handoff` (signed and sealed here) to its holder and return its reply, within
    `timeout` in all (the holder writes the frames before it answers). NetworkError if the
    holder is unreachable or silent, WireError if its reply is malformed or not its own."""
    request = wire.encode(ho.HandoffRequest(sealed=seal_handoff(identity, handoff)))
    try:
        with trio.fail_after(timeout):
            stream = await open_stream(host, handoff.hop, HANDOFF_PROTOCOL, timeout=timeout, addrs=addrs)
            try:
                await write_frame(stream, request, max_size=wire.MAX_CONTROL_FRAME, timeout=timeout)
                data = await read_frame(stream, max_size=wire.MAX_CONTROL_FRAME, timeout=timeout)
            finally:
                await close_stream(stream)
    except trio.TooSlowError:
        raise NetworkError(f"handoff to {handoff.hop}: no reply within {timeout}s") from None
    reply = wire.decode(data, expect=[ho.HandoffReply])
    if reply.hop != handoff.hop or (reply.circuit_id and reply.circuit_id != handoff.circuit_id):
        raise WireError(f"handoff reply from {handoff.hop} names another hop or circuit")
    return reply
