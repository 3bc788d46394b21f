"""One error tree for the whole package.

Every error a user or a peer can cause is a subclass of `P2PInferError`, so the CLI can turn
any of them into a one-line message and exit code 2, and library users can catch narrowly.
Modules may subclass these further, but never raise bare `Exception` for a user-facing problem.
"""


class P2PInferError(Exception):
    """Base of every error p2pinfer raises on purpose."""


class ConfigError(P2PInferError):
    """A node config or a command-line value is unreadable, unknown or of the wrong type."""


class RecordError(P2PInferError):
    """A capability record (or other signed object) failed decoding or verification.

    `reason` is a short machine-friendly tag (e.g. "bad-signature", "expired"), the message
    says it in words.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelError(P2PInferError):
    """Problems with models: unknown model, corrupt weights, bad manifest."""


class UnknownModelError(ModelError):
    """The model name or id is not in the zoo or the local store."""


class WeightIntegrityError(ModelError):
    """Weights did not match the content hash named in the signed manifest."""


class InputError(P2PInferError):
    """A user input (text, image, array) has the wrong shape, dtype or cannot be read."""


class PlanError(P2PInferError):
    """The planner cannot produce a plan."""


class InfeasiblePlanError(PlanError):
    """No assignment of spans to peers satisfies the constraints; the message names the cause."""


class WireError(P2PInferError):
    """A frame or message from the network is malformed, oversized or fails authentication."""


class NetworkError(P2PInferError):
    """A peer is unreachable, a deadline passed, or no peers were found."""


class CircuitError(P2PInferError):
    """A circuit could not be set up or completed."""


class HopRefusedError(CircuitError):
    """A hop refused its assignment; `reason` says why (busy, out-of-memory, ...)."""

    def __init__(self, peer_id: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.peer_id = peer_id
        self.reason = reason


class HopFailedError(NetworkError):
    """Named hops failed, were unreachable, or missed their deadline (`kind`: failure|timeout)."""

    def __init__(self, peer_ids: tuple[str, ...] | str, kind: str, message: str) -> None:
        super().__init__(message)
        self.peer_ids = (peer_ids,) if isinstance(peer_ids, str) else tuple(peer_ids)
        self.peer_id = self.peer_ids[0] if self.peer_ids else ""
        self.kind = kind


class VerificationError(CircuitError):
    """A spot check proved a hop's output wrong; its circuit is abandoned (result recomputed)."""

    def __init__(self, peer_id: str, message: str) -> None:
        super().__init__(message)
        self.peer_id = peer_id


class ChainsFailedError(CircuitError):
    """Every chain of a replicated stream failed; `peer_ids`: the hops it found dead (connection
    lost) or that were named at fault, which the single-chain fallback plans without."""

    def __init__(self, peer_ids: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.peer_ids = tuple(peer_ids)


class NoRouteError(CircuitError):
    """No route remains: the retries ran out or every usable peer is excluded."""


class LedgerError(P2PInferError):
    """The reputation ledger could not be read or written."""
