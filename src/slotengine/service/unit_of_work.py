"""One database transaction holding a slot's row lock: the only way a slot's bookings change.

Every change to a slot's bookings runs here, so changes to one slot are serialized by
PostgreSQL, the Redis mirror is written in the same order, and a failure drops the mirror
(it is rebuilt from the database on next use) instead of leaving it ahead of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import asyncpg
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from slotengine.domain.errors import DomainError, SlotNotFound
from slotengine.domain.fill_policy import DEFAULT_FILL_POLICY, DEFAULT_MAX_PASS_OVERS, FillPolicy
from slotengine.domain.states import BookingState, Event
from slotengine.service.after_commit import Committed, after_commit
from slotengine.service.announcements import Change, SlotTerms
from slotengine.service.engine import Engine
from slotengine.service.mirror import MirrorOp, apply_to_mirror, drop_mirror, mirror_ops, rebuild_mirror
from slotengine.service.state_sql import PENDING

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row: a booking's transition, by whom, why, under which fence."""

    booking_id: UUID
    from_state: BookingState | None
    to_state: BookingState
    event: Event
    actor: str
    reason: str | None = None
    fence: int | None = None
    expires_at: datetime | None = None  # of a hold this change granted (announced, not audited)
    units: int = 1  # units the booking takes (announced, and followed by the mirror)


@dataclass
class SlotTransaction:
    engine: Engine
    conn: BaseDBAsyncClient
    slot_id: UUID
    capacity: int
    hold_seconds: int
    closed: bool
    starts_at: datetime
    ends_at: datetime
    now: datetime  # PostgreSQL's now(): the one clock that decides
    version: int  # the slot's version: as locked, then once this transaction's changes are counted
    waiting: int  # the queue's length, kept on the slot's row and kept current by every change
    fill_policy: FillPolicy = DEFAULT_FILL_POLICY  # who is offered freed units (domain/fill_policy.py)
    max_pass_overs: int = DEFAULT_MAX_PASS_OVERS
    # Rebuild the mirror from PostgreSQL at commit instead of applying the changes to it.
    mirror_stale: bool = False
    changes: list[Change] = field(default_factory=list)
    version_written: bool = False  # the version bump (and queue length) went out with a change
    # Holds granted in this transaction, each to be expired when due: (booking, fence, expiry).
    holds_granted: list[tuple[UUID, int, datetime]] = field(default_factory=list)
    queue_joined: bool = False
    # Seconds from expiresAt to this transaction's clock, for each hold it found lapsed.
    expiry_lateness: list[float] = field(default_factory=list)
    # Snapshot taken by settle() and kept current by this transaction's own changes.
    taken: list[int] = field(default_factory=list)
    # Arrival sequence of the bookings that join or leave the queue here, or whose place is asked.
    queue_seqs: dict[str, int] = field(default_factory=dict)
    # Bookings whose place in the queue the caller wants as of commit; `places` has them then.
    place_requests: list[str] = field(default_factory=list)
    places: dict[str, int] = field(default_factory=dict)
    # Waiting booking groups that head this slot's queue while a unit is free: each is looked at
    # after the commit by a transaction locking all its slots (service/groups.py offer_group).
    groups_to_offer: set[UUID] = field(default_factory=set)
    # The rows of slot_transaction's `read`, when they were current as the lock was granted.
    lock_read: list[dict[str, Any]] | None = None
    # The slot's own terms as an admin changed them here (announced, with a version of their own).
    terms: SlotTerms | None = None

    @classmethod
    def of_locked_row(
        cls, engine: Engine, conn: BaseDBAsyncClient, slot_id: UUID, row: dict[str, Any]
    ) -> SlotTransaction:
        """The transaction of a slot whose row (its columns and `db_now`) was just locked."""
        return cls(
            engine=engine,
            conn=conn,
            slot_id=slot_id,
            capacity=row["capacity"],
            hold_seconds=row["hold_seconds"],
            closed=row["closed"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            now=row["db_now"],
            version=int(row["version"]),
            waiting=int(row["waiting"]),
            fill_policy=FillPolicy(row.get("fill_policy", DEFAULT_FILL_POLICY)),
            max_pass_overs=int(row.get("max_pass_overs", DEFAULT_MAX_PASS_OVERS)),
        )

    @property
    def slot_key(self) -> str:
        return str(self.slot_id)

    @property
    def change_version(self) -> int:
        """The slot version this transaction's changes commit at (their audit rows carry it):
        one above the version as locked, whether or not the bump is written yet."""
        return self.version if self.version_written else self.version + 1

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in await _driver(self.conn).fetch(sql, *args)]

    async def fetch_one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def record(
        self,
        booking_id: UUID,
        from_state: BookingState | None,
        to_state: BookingState,
        event: Event,
        actor: str,
        *,
        reason: str | None = None,
        fence: int | None = None,
        position: int | None = None,
        expires_at: datetime | None = None,
        units: int = 1,
    ) -> None:
        """Write one audit row, in this transaction, for a change already made."""
        await self.record_many(
            [AuditEntry(booking_id, from_state, to_state, event, actor, reason, fence, expires_at, units)]
        )
        if position is not None:
            self.changes[-1] = dataclasses.replace(self.changes[-1], position=position)

    async def record_many(self, entries: Sequence[AuditEntry]) -> None:
        """Write the audit rows of changes already made, in this transaction, in this order (the
        one place the service writes them; the admission function writes its own batch's)."""
        if not entries:
            return
        await _driver(self.conn).execute(
            "INSERT INTO transitions"
            " (booking_id, from_state, to_state, event, actor, reason, fence, slot_id, slot_version)"
            " SELECT t.booking_id, t.from_state, t.to_state, t.event, t.actor, t.reason, t.fence, $8, $9"
            " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
            "  $7::bigint[]) WITH ORDINALITY"
            "  AS t (booking_id, from_state, to_state, event, actor, reason, fence, n)"
            " ORDER BY t.n",
            [e.booking_id for e in entries],
            [e.from_state for e in entries],
            [e.to_state for e in entries],
            [e.event.value for e in entries],
            [e.actor for e in entries],
            [e.reason for e in entries],
            [e.fence for e in entries],
            self.slot_id,
            self.change_version,
        )
        for e in entries:
            change = Change(
                str(e.booking_id), e.from_state, e.to_state, e.event, expires_at=e.expires_at, units=e.units
            )
            self.changes.append(change)

    def unit_released(self, unit: int | None, extra_units: Sequence[int] = ()) -> None:
        """Keep the snapshot true after a booking in this transaction gave up its unit(s)."""
        if unit is not None:
            self.taken.remove(unit)
            for extra in extra_units:
                self.taken.remove(extra)

    @property
    def announces(self) -> bool:
        """Whether this transaction changed anything listeners are told about."""
        return bool(self.changes) or self.terms is not None

    def committed(self) -> Committed:
        """What is left to do once this transaction committed (see after_commit)."""
        return Committed(
            self.slot_id,
            self.starts_at,
            self.version,
            self.changes,
            self.holds_granted,
            self.queue_joined,
            self.expiry_lateness,
            self.groups_to_offer,
            self.now,
            self.terms,
        )

    async def finish(self) -> None:
        """Bump the slot's version and write its queue length, then bring the mirror along."""
        locked_version = self.version
        if self.announces and not self.version_written:
            bumped = await self.fetch_one(
                "UPDATE slots SET version = version + 1, waiting = $2 WHERE id = $1 RETURNING version",
                self.slot_id,
                self.waiting,
            )
            assert bumped is not None
            self.version = int(bumped["version"])
        elif self.version_written:
            locked_version = self.version - 1
        if self.mirror_stale:
            await self._rebuild_mirror()
            return
        if not self.changes and not self.place_requests:
            return
        ops = mirror_ops(self.changes, self.queue_seqs)
        ops += [MirrorOp("rank", booking_id) for booking_id in self.place_requests]
        answer = await apply_to_mirror(self.engine, self.slot_id, locked_version, self.version, ops)
        # AHEAD is no rebuild that read these changes here: they are not committed, and under the
        # slot's lock PostgreSQL is at locked_version. A mirror beyond it holds changes nobody
        # committed (a process that died between its delta and its commit): rebuild it too.
        if not answer.applied:
            log.log(
                logging.INFO if answer.missing else logging.WARNING,
                "Redis mirror of slot %s was %s: rebuilding it",
                self.slot_key,
                "missing" if answer.missing else f"not at version {locked_version} ({answer.status})",
            )
            await self._rebuild_mirror()
            return
        places = iter(answer.places)
        for i, change in enumerate(self.changes):
            if change.from_state is BookingState.PENDING:
                place = next(places)
                if change.position is None:
                    self.changes[i] = dataclasses.replace(change, position=place)
        for booking_id in self.place_requests:
            self.places[booking_id] = next(places)

    async def _places_from_database(self) -> None:
        """Places in the queue counted in PostgreSQL: only when the mirror could not tell them."""
        for i, change in enumerate(self.changes):
            if change.from_state is BookingState.PENDING and change.position is None:
                ahead = await self._waiting_before(self.queue_seqs[change.booking_id])
                self.changes[i] = dataclasses.replace(change, position=ahead + 1)
        for booking_id in self.place_requests:
            self.places[booking_id] = await self._waiting_before(self.queue_seqs[booking_id]) + 1

    async def _rebuild_mirror(self) -> None:
        """Places from PostgreSQL (counting the queue: only here), then the whole mirror anew."""
        await self._places_from_database()
        waiting = await rebuild_mirror(
            self.engine, self.conn, self.slot_id, self.capacity, self.closed, self.ends_at, self.version
        )
        self.mirror_stale = False
        if waiting != self.waiting:
            # Bookings written behind the engine's back (a bulk load, a hand repair): trust the rows.
            log.warning(
                "slot %s: queue length was %d, found %d waiting", self.slot_key, self.waiting, waiting
            )
            await self.conn.execute_query(
                "UPDATE slots SET waiting = $2 WHERE id = $1", [self.slot_id, waiting]
            )
            self.waiting = waiting

    async def _waiting_before(self, queue_seq: int) -> int:
        row = await self.fetch_one(
            f"SELECT count(*) AS n FROM bookings WHERE slot_id = $1 AND state = {PENDING} AND queue_seq < $2",
            self.slot_id,
            queue_seq,
        )
        assert row is not None
        return int(row["n"])


@contextlib.asynccontextmanager
async def slot_transaction(
    engine: Engine, slot_id: UUID, *, skip_locked: bool = False, read: LockRead | None = None
) -> AsyncIterator[SlotTransaction]:
    """Lock the slot's row for one transaction; commit, then set timers and announce changes.

    A DomainError raised inside commits what was done before it, then reaches the caller.

    With `skip_locked`, a slot another transaction holds raises SlotBusy instead of waiting.
    With `read`, its rows come back in `tx.lock_read` when they are current (see LockRead).
    """
    tx: SlotTransaction | None = None
    refusal: DomainError | None = None
    try:
        async with in_transaction() as conn:
            rows = await _lock(conn, slot_id, skip_locked, read)
            if not rows and skip_locked:
                raise SlotBusy(str(slot_id))
            if not rows:
                raise SlotNotFound(str(slot_id))
            row = rows[0]
            tx = SlotTransaction.of_locked_row(engine, conn, slot_id, row)
            if read is not None and row["seen_version"] == row["version"]:
                tx.lock_read = rows
            try:
                yield tx
            except DomainError as refused:
                # A refusal keeps what the transaction did before it (holds it found lapsed are
                # expired for good): commit, announce, then refuse.
                refusal = refused
            await tx.finish()
    except BaseException:
        if tx is not None:
            # The mirror may now be ahead of what was rolled back; drop it, it is rebuildable.
            await asyncio.shield(drop_mirror(engine, tx.slot_key))
        raise
    assert tx is not None
    await after_commit(engine, tx.committed())
    if refusal is not None:
        raise refusal


@dataclass(frozen=True, slots=True)
class LockRead:
    """A read sent with the lock statement, saving a round trip: a SELECT that yields one row at
    least, with the slot's id as $1 and `args` from $2 on.

    Its rows are read in the statement's snapshot, taken before the lock was granted: they are
    handed over only when the slot's version did not move in between (every transaction that
    changes a slot's bookings bumps it), else `tx.lock_read` stays None and the caller reads again.
    """

    sql: str
    args: tuple[Any, ...]


_SLOT_COLUMNS = (
    "s.capacity, s.hold_seconds, s.closed, s.starts_at, s.ends_at, s.version, s.waiting,"
    " s.fill_policy, s.max_pass_overs"
)


async def _lock(
    conn: BaseDBAsyncClient, slot_id: UUID, skip_locked: bool, read: LockRead | None
) -> list[dict[str, Any]]:
    """The locked slot's row (one per row of `read`, with that row's columns), or none."""
    if read is None:
        sql = f"SELECT {_SLOT_COLUMNS}, now() AS db_now FROM slots s WHERE s.id = $1 FOR UPDATE" + (
            " SKIP LOCKED" if skip_locked else ""
        )
        return [dict(row) for row in await _driver(conn).fetch(sql, slot_id)]
    sql = (
        f"SELECT {_SLOT_COLUMNS}, now() AS db_now,"
        # The version in the statement's snapshot; s.version is the latest, as locked.
        " (SELECT version FROM slots WHERE id = $1) AS seen_version, r.*"
        f" FROM slots s LEFT JOIN ({read.sql}) AS r ON true WHERE s.id = $1 FOR UPDATE OF s"
        + (" SKIP LOCKED" if skip_locked else "")
    )
    return [dict(row) for row in await _driver(conn).fetch(sql, slot_id, *read.args)]


def _driver(conn: BaseDBAsyncClient) -> asyncpg.Connection:
    """The transaction's asyncpg connection, used directly: Tortoise's per-statement wrapping (a
    lock, a log call, exception translation) took about 5 % of the API's CPU on the hot path.
    Driver errors keep their SQLSTATE, which is all retries.py looks at."""
    return cast(asyncpg.Connection, conn._connection)


class SlotBusy(Exception):
    """Another transaction holds the slot's lock (raised only with skip_locked)."""
