"""The durable reputation ledger: this node's experience with every peer, in one sqlite file.

The rules live in core/ (reputation, speed, receipts); this module only loads a peer's row,
applies a pure rule and writes the result, one transaction per event, so a crash at any
instant leaves either the whole event or none of it.

Durability: WAL journal, `synchronous=NORMAL` by default. In WAL mode a commit appends to the
WAL; a killed process (kill -9, crash) loses nothing that was committed, because the WAL is in
the OS page cache and is replayed on the next open, and the database is never corrupted. Only
an OS crash or power loss can roll back the last few commits (still never corrupting the file).
`synchronous="FULL"` fsyncs every commit and closes that window too, at the price of one fsync
per event (slow on SD cards); choose it with `Ledger(path, synchronous="FULL")`.

Thread-safety: one connection guarded by a lock; callers in trio should use
`trio.to_thread.run_sync` for writes (each is one short transaction).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from p2pinfer.core import reputation as rules
from p2pinfer.core import speed as speedmod
from p2pinfer.core.receipts import SignedReceipt, decode_verified
from p2pinfer.core.reputation import EventKind, PeerState, ReputationParams
from p2pinfer.core.snapshot import PeerSpec
from p2pinfer.core.speed import SpeedParams, SpeedState
from p2pinfer.errors import LedgerError

LEDGER_FILENAME = "ledger.sqlite3"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x70327049  # "p2pI"
MAX_PEER_ID_CHARS = 128
_SYNC_MODES = ("NORMAL", "FULL", "EXTRA")

_SCHEMA = """
CREATE TABLE peers (
    peer_id TEXT PRIMARY KEY,
    score REAL NOT NULL,
    good REAL NOT NULL, bad REAL NOT NULL, updated_at REAL,
    hops_ok INTEGER NOT NULL, failures INTEGER NOT NULL, timeouts INTEGER NOT NULL,
    refusals INTEGER NOT NULL, verification_failures INTEGER NOT NULL, slow_hops INTEGER NOT NULL,
    hops_since_admission INTEGER NOT NULL,
    excluded_until REAL, strikes INTEGER NOT NULL, last_excluded_at REAL,
    advertised_gflops REAL, measured_gflops REAL, speed TEXT NOT NULL,
    earned_flops INTEGER NOT NULL, spent_flops INTEGER NOT NULL,
    first_seen REAL NOT NULL, last_seen REAL NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL, peer_id TEXT NOT NULL, kind TEXT NOT NULL,
    score_after REAL, detail TEXT NOT NULL
);
CREATE INDEX events_by_peer ON events (peer_id, id);
CREATE TABLE receipts (
    digest BLOB PRIMARY KEY,
    direction TEXT NOT NULL CHECK (direction IN ('earned', 'spent')),
    circuit_id BLOB NOT NULL, hop_peer_id TEXT NOT NULL, requester_peer_id TEXT NOT NULL,
    model_id TEXT NOT NULL, start INTEGER NOT NULL, stop INTEGER NOT NULL,
    flops INTEGER NOT NULL, measured_us INTEGER NOT NULL, issued_at_ms INTEGER NOT NULL,
    blob BLOB NOT NULL, recorded_at REAL NOT NULL,
    UNIQUE (requester_peer_id, hop_peer_id, circuit_id, start, stop)
);
"""

_STATE_FIELDS = tuple(f.name for f in fields(PeerState))


def ledger_path(data_dir: Path | str) -> Path:
    """Where a node with data dir `data_dir` keeps its ledger."""
    return Path(data_dir) / LEDGER_FILENAME


@dataclass(frozen=True)
class PeerView:
    """One peer as the ledger sees it at `now` (decay and re-admission applied)."""

    peer_id: str
    reputation: float  # r in (0, 1]; see planner_reputation for the planner's value
    excluded: bool
    state: PeerState
    advertised_gflops: float | None
    measured_gflops: float | None
    earned_gflop: float  # we computed this much for them (receipts they signed)
    spent_gflop: float  # they computed this much for us (receipts we signed)
    first_seen: float
    last_seen: float

    @property
    def credit_gflop(self) -> float:
        """Their credit with us: what they did for us minus what we did for them."""
        return self.spent_gflop - self.earned_gflop

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "state"}
        out.update(asdict(self.state))
        out["credit_gflop"] = self.credit_gflop
        return out


@dataclass(frozen=True)
class _Row:
    state: PeerState
    speed: SpeedState
    advertised_gflops: float | None
    measured_gflops: float | None
    earned_flops: int
    spent_flops: int
    first_seen: float
    last_seen: float


def _check_peer_id(peer_id: str) -> None:
    if not isinstance(peer_id, str) or not 0 < len(peer_id) <= MAX_PEER_ID_CHARS:
        raise LedgerError(f"ledger: peer id must be a string of 1..{MAX_PEER_ID_CHARS} characters: {peer_id!r:.80}")


class Ledger:
    """A node's reputation ledger in one sqlite file (created if missing)."""

    def __init__(self, path: Path | str, *, params: ReputationParams = ReputationParams(),
                 speed_params: SpeedParams = SpeedParams(), synchronous: str = "NORMAL",
                 max_events: int = 200_000) -> None:
        if max_events < 1:
            raise LedgerError("ledger: max_events must be >= 1")
        if synchronous not in _SYNC_MODES:
            raise LedgerError(f"ledger: synchronous must be one of {_SYNC_MODES}, got {synchronous!r}")
        self.path = Path(path)
        self.params = params
        self.speed_params = speed_params
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"ledger {self.path}: cannot open: {exc}") from exc
        try:
            self._setup(synchronous)
            self.prune_events(keep=max_events)
        except sqlite3.Error as exc:
            self._conn.close()
            raise LedgerError(
                f"ledger {self.path}: unreadable or corrupt ({exc}); move it away to start a new ledger"
            ) from exc
        except LedgerError:
            self._conn.close()
            raise

    def _setup(self, synchronous: str) -> None:
        c = self._conn
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        tables = c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
            raise LedgerError(f"ledger {self.path}: not a p2pinfer ledger (another sqlite database)")
        if version > SCHEMA_VERSION:
            raise LedgerError(f"ledger {self.path}: schema v{version} is newer than this p2pinfer (v{SCHEMA_VERSION})")
        if c.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise LedgerError(f"ledger {self.path}: cannot switch to WAL journal mode")
        c.execute(f"PRAGMA synchronous={synchronous}")
        check = c.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise LedgerError(f"ledger {self.path}: corrupt ({check}); move it away to start a new ledger")
        if version == 0:
            c.execute("BEGIN IMMEDIATE")
            try:
                if c.execute("PRAGMA user_version").fetchone()[0] == 0:  # another process may have won
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            c.execute(statement)
                    c.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    # ---- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _txn(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `fn` in one IMMEDIATE transaction: all of it is committed or none of it."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(self._conn)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: write failed: {exc}") from exc

    def _read(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                cur = self._conn.execute(sql, args)
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: read failed: {exc}") from exc

    # ---- rows ----------------------------------------------------------------------------

    @staticmethod
    def _row_from(d: Mapping[str, Any]) -> _Row:
        state = PeerState(**{k: d[k] for k in _STATE_FIELDS})
        try:
            speed = SpeedState.from_json(json.loads(d["speed"]))
        except (ValueError, TypeError) as exc:
            raise LedgerError(f"ledger: corrupt speed state for {d['peer_id']}: {exc}") from exc
        return _Row(state, speed, d["advertised_gflops"], d["measured_gflops"], d["earned_flops"],
                    d["spent_flops"], d["first_seen"], d["last_seen"])

    def _load(self, conn: sqlite3.Connection, peer_id: str, now: float) -> _Row:
        cur = conn.execute("SELECT * FROM peers WHERE peer_id = ?", (peer_id,))
        row = cur.fetchone()
        if row is None:
            return _Row(PeerState(), SpeedState(), None, None, 0, 0, now, now)
        return self._row_from(dict(zip([d[0] for d in cur.description], row)))

    def _store(self, conn: sqlite3.Connection, peer_id: str, row: _Row, now: float) -> None:
        values: dict[str, Any] = {k: getattr(row.state, k) for k in _STATE_FIELDS}
        values.update(
            peer_id=peer_id, score=rules.reputation(row.state, now, self.params),
            advertised_gflops=row.advertised_gflops, measured_gflops=row.measured_gflops,
            speed=json.dumps(row.speed.to_json()), earned_flops=row.earned_flops,
            spent_flops=row.spent_flops, first_seen=row.first_seen, last_seen=max(row.last_seen, now),
        )
        cols = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        conn.execute(f"INSERT OR REPLACE INTO peers ({cols}) VALUES ({marks})", values)

    @staticmethod
    def _log(conn: sqlite3.Connection, now: float, peer_id: str, kind: str, score: float | None,
             **detail: Any) -> None:
        conn.execute("INSERT INTO events (at, peer_id, kind, score_after, detail) VALUES (?, ?, ?, ?, ?)",
                     (now, peer_id, kind, score, json.dumps(detail, sort_keys=True)))

    def _view(self, peer_id: str, row: _Row, now: float) -> PeerView:
        state, _ = rules.advance(row.state, now, self.params)
        return PeerView(
            peer_id=peer_id, reputation=rules.reputation(state, now, self.params),
            excluded=rules.is_excluded(state, now), state=state,
            advertised_gflops=row.advertised_gflops, measured_gflops=row.measured_gflops,
            earned_gflop=row.earned_flops / 1e9, spent_gflop=row.spent_flops / 1e9,
            first_seen=row.first_seen, last_seen=row.last_seen,
        )

    # ---- events (one transaction each) ----------------------------------------------------

    def _event(self, peer_id: str, kind: EventKind, now: float, *, overclaimed: bool = False,
               speed_update: Callable[[_Row], _Row] | None = None, **detail: Any) -> PeerView:
        _check_peer_id(peer_id)

        def work(conn: sqlite3.Connection) -> PeerView:
            row = self._load(conn, peer_id, now)
            if speed_update is not None:
                row = speed_update(row)
            over = overclaimed or (speed_update is not None and row.advertised_gflops is not None
                                   and speedmod.is_overclaimed(row.speed, row.advertised_gflops, self.speed_params))
            t = rules.apply_event(row.state, kind, now, self.params, overclaimed=over)
            row = replace(row, state=t.state)
            self._store(conn, peer_id, row, now)
            if t.readmitted:
                self._log(conn, now, peer_id, "readmitted", None)
            if kind is EventKind.HOP_OK:
                detail["overclaimed"] = over
            self._log(conn, now, peer_id, kind.value, t.reputation, **detail)
            if t.excluded:
                self._log(conn, now, peer_id, "excluded", t.reputation,
                          until=t.state.excluded_until, strikes=t.state.strikes)
            return self._view(peer_id, row, now)

        return self._txn(work)

    def record_hop_ok(self, peer_id: str, *, now: float, flops: int, measured_s: float,
                      advertised_gflops: float, flops_by_class: Mapping[str, int] | None = None,
                      advertised_by_class: Mapping[str, float] | None = None,
                      predicted_s: float | None = None) -> PeerView:
        """A hop completed (and passed verification if it was checked); timing feeds speed."""
        def update(row: _Row) -> _Row:
            try:
                speed = speedmod.observe(row.speed, flops=flops, measured_s=measured_s,
                                         advertised_gflops=advertised_gflops, flops_by_class=flops_by_class,
                                         advertised_by_class=advertised_by_class, predicted_s=predicted_s,
                                         params=self.speed_params)
            except ValueError as exc:
                raise LedgerError(f"ledger: bad hop timing for {peer_id}: {exc}") from exc
            return replace(row, speed=speed, advertised_gflops=advertised_gflops,
                           measured_gflops=speedmod.measured_gflops(speed, speedmod.ALL, self.speed_params))

        return self._event(peer_id, EventKind.HOP_OK, now, speed_update=update,
                           flops=flops, measured_s=measured_s)

    def record_failure(self, peer_id: str, kind: EventKind | str, *, now: float, detail: str = "") -> PeerView:
        """A hop failed, timed out, was refused, or (VERIFICATION_FAILURE) was proven wrong."""
        kind = EventKind(kind)
        if kind is EventKind.HOP_OK:
            raise LedgerError("ledger: use record_hop_ok for completed hops")
        return self._event(peer_id, kind, now, reason=detail)

    def record_verification_failure(self, peer_id: str, *, now: float, detail: str = "") -> PeerView:
        """A spot check proved this peer's output wrong: penalise and exclude it."""
        return self.record_failure(peer_id, EventKind.VERIFICATION_FAILURE, now=now, detail=detail)

    # ---- receipts and credits -------------------------------------------------------------

    def _add_receipt(self, signed: SignedReceipt, direction: str, counterpart: str, now: float) -> bool:
        r = signed.receipt

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO receipts (digest, direction, circuit_id, hop_peer_id, "
                "requester_peer_id, model_id, start, stop, flops, measured_us, issued_at_ms, blob, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (signed.digest, direction, r.circuit_id, r.hop_peer_id, r.requester_peer_id, r.model_id,
                 r.start, r.stop, r.flops, r.measured_us, r.issued_at_ms, signed.blob, now))
            if cur.rowcount == 0:
                return False  # already recorded: receipts never count twice
            row = self._load(conn, counterpart, now)
            field_ = "earned_flops" if direction == "earned" else "spent_flops"
            row = replace(row, **{field_: getattr(row, field_) + r.flops})
            self._store(conn, counterpart, row, now)
            self._log(conn, now, counterpart, f"receipt_{direction}", None, flops=r.flops,
                      circuit=r.circuit_id.hex(), span=[r.start, r.stop])
            return True

        return self._txn(work)

    def record_receipt_earned(self, blob: bytes, *, self_peer_id: str, now: float) -> SignedReceipt:
        """We are the hop: verify a receipt a requester gave us and credit it (idempotent).

        Raises RecordError if it does not verify or is made out to another hop.
        """
        signed = decode_verified(blob, hop_peer_id=self_peer_id)
        self._add_receipt(signed, "earned", signed.receipt.requester_peer_id, now)
        return signed

    def record_receipt_spent(self, blob: bytes, *, self_peer_id: str, now: float) -> SignedReceipt:
        """We are the requester: record a receipt we signed for a hop (idempotent)."""
        signed = decode_verified(blob)
        if signed.receipt.requester_peer_id != self_peer_id:
            raise LedgerError("ledger: a spent receipt must be signed by this node")
        self._add_receipt(signed, "spent", signed.receipt.hop_peer_id, now)
        return signed

    def credit_of(self, peer_id: str) -> float:
        """Peer's credit with us in GFLOP (spent - earned); 0 for a stranger."""
        rows = self._read("SELECT earned_flops, spent_flops FROM peers WHERE peer_id = ?", (peer_id,))
        return (rows[0]["spent_flops"] - rows[0]["earned_flops"]) / 1e9 if rows else 0.0

    # ---- snapshots for the planner and verification ---------------------------------------

    def peer(self, peer_id: str, now: float) -> PeerView | None:
        rows = self._read("SELECT * FROM peers WHERE peer_id = ?", (peer_id,))
        return self._view(peer_id, self._row_from(rows[0]), now) if rows else None

    def peers(self, now: float) -> list[PeerView]:
        return [self._view(d["peer_id"], self._row_from(d), now)
                for d in self._read("SELECT * FROM peers ORDER BY peer_id")]

    def reputation_of(self, peer_id: str, now: float) -> float:
        """PeerSpec.reputation for this peer: r, r0 for a stranger, tiny while excluded."""
        rows = self._read("SELECT * FROM peers WHERE peer_id = ?", (peer_id,))
        state = self._row_from(rows[0]).state if rows else PeerState()
        return rules.planner_reputation(state, now, self.params)

    def is_excluded(self, peer_id: str, now: float) -> bool:
        view = self.peer(peer_id, now)
        return view is not None and view.excluded

    def excluded(self, now: float) -> frozenset[str]:
        rows = self._read("SELECT peer_id FROM peers WHERE excluded_until > ?", (now,))
        return frozenset(r["peer_id"] for r in rows)

    def hops_since_admission(self, peer_id: str, now: float) -> int:
        """For core.verification.should_check (probation after first contact / re-admission)."""
        view = self.peer(peer_id, now)
        return view.state.hops_since_admission if view else 0

    def measured_gflops(self, peer_id: str) -> float | None:
        """Median measured scalar GFLOP/s (None until enough hops were measured)."""
        rows = self._read("SELECT measured_gflops FROM peers WHERE peer_id = ?", (peer_id,))
        return rows[0]["measured_gflops"] if rows else None

    def adjust_peer_spec(self, spec: PeerSpec, now: float) -> PeerSpec:
        """The advertised spec with measured speed (core/speed.py rule 3) and reputation applied."""
        rows = self._read("SELECT * FROM peers WHERE peer_id = ?", (spec.peer_id,))
        if not rows:
            return replace(spec, reputation=self.params.initial_reputation)
        row = self._row_from(rows[0])
        gflops, by_class = speedmod.effective_gflops(row.speed, spec.gflops, spec.gflops_by_class, self.speed_params)
        by_kind = speedmod.effective_by_kind(spec.gflops, gflops, spec.gflops_by_kind)
        return replace(spec, gflops=gflops, gflops_by_class=by_class, gflops_by_kind=by_kind,
                       reputation=rules.planner_reputation(row.state, now, self.params))

    def events(self, peer_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Most recent events first."""
        if peer_id is None:
            return self._read("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return self._read("SELECT * FROM events WHERE peer_id = ? ORDER BY id DESC LIMIT ?", (peer_id, limit))

    def totals(self) -> dict[str, Any]:
        cols = ("hops_ok", "failures", "timeouts", "refusals", "verification_failures", "earned_flops", "spent_flops")
        sums = ", ".join(f"coalesce(sum({c}), 0) AS {c}" for c in cols)
        row = self._read(f"SELECT count(*) AS peers, {sums} FROM peers")[0]
        row["events"] = self._read("SELECT count(*) AS n FROM events")[0]["n"]
        row["receipts"] = self._read("SELECT count(*) AS n FROM receipts")[0]["n"]
        row["earned_gflop"] = row.pop("earned_flops") / 1e9
        row["spent_gflop"] = row.pop("spent_flops") / 1e9
        return row

    def prune_events(self, *, keep: int) -> int:
        """Drop all but the newest `keep` log events (peer rows and receipts are never pruned)."""
        def work(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (keep,)).rowcount

        return self._txn(work)

    def integrity_check(self) -> str:
        return self._read("PRAGMA integrity_check")[0]["integrity_check"]
