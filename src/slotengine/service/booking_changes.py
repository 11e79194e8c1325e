"""Confirm, cancel and complete, combined per slot: the changes of one slot's bookings that arrive
together in this process share one slot transaction (one lock, one settlement, one UPDATE and one
audit INSERT per batch, one promotion of the queue, one mirror update, one announcement).

Each request is still decided alone, in arrival order, by the transition table, and gets its own
answer or refusal; a refusal commits what the others did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from slotengine.domain.errors import DomainError, HoldExpired
from slotengine.domain.states import OCCUPYING_STATES, BookingState, Event, Role, transition
from slotengine.service.bookings import BOOKING_COLUMNS, check_moves_alone
from slotengine.service.engine import Engine
from slotengine.service.retries import retry_conflicts
from slotengine.service.settlement import promote, settle
from slotengine.service.unit_of_work import AuditEntry, SlotTransaction, slot_transaction


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """One holder's or admin's move of one booking (the caller checked who may ask)."""

    booking_id: UUID
    event: Event  # CONFIRM, CANCEL or COMPLETE
    role: Role
    actor: str
    reason: str | None = None


ChangeOutcome = dict[str, Any] | DomainError


@dataclass(frozen=True, slots=True)
class _Planned:
    index: int
    request: ChangeRequest
    row: dict[str, Any]
    to_state: BookingState


@retry_conflicts
async def change_batch(
    engine: Engine, slot_id: UUID, requests: Sequence[ChangeRequest]
) -> list[ChangeOutcome]:
    """Each request's booking row after its change, or why it may not happen, in request order."""
    outcomes: list[ChangeOutcome | None] = [None] * len(requests)
    async with slot_transaction(engine, slot_id) as tx:
        await settle(tx)  # a hold past expiresAt is EXPIRED now, and stays so after we answer
        ids = list({r.booking_id for r in requests})
        rows = {r["id"]: r for r in await tx.fetch(_ROWS_SQL, ids)}
        # A booking asked for twice in one batch changes once per round, in arrival order.
        for number, chunk in enumerate(_rounds(requests)):
            if number:  # read again: a promotion in the round before may have moved them
                again = list({requests[i].booking_id for i in chunk})
                rows.update({r["id"]: r for r in await tx.fetch(_ROWS_SQL, again)})
            planned: list[_Planned] = []
            for index in chunk:
                request = requests[index]
                try:
                    to_state = _decide(request, rows[request.booking_id])
                except DomainError as refusal:
                    outcomes[index] = refusal
                    continue
                planned.append(_Planned(index, request, rows[request.booking_id], to_state))
            if not planned:
                continue
            written = {r["id"]: r for r in await tx.fetch(_UPDATE_SQL, *_update_args(planned))}
            done = [p for p in planned if p.row["id"] in written]
            for p in planned:
                if p.row["id"] not in written:  # only a confirm's guard can refuse here
                    assert p.request.event is Event.CONFIRM
                    outcomes[p.index] = HoldExpired(str(p.row["id"]), p.row["expires_at"])
            # Those leaving the queue first (concurrent requests: the batch may choose their
            # order), so that each unit freed after them goes to the head the trail shows.
            done.sort(key=lambda p: BookingState(p.row["state"]) is not BookingState.PENDING)
            entries: list[AuditEntry] = []
            for p in done:
                moved = _follow(tx, p)
                rows[p.row["id"]] = outcomes[p.index] = written[p.row["id"]]
                entries.append(_audit(p))
                if moved and tx.waiting:
                    # A freed unit goes to the head of the queue at once, as a lone cancel's; and
                    # a head that left may have been what kept free units from those behind it
                    # (a party under STRICT_FIFO, or one passed over its bound under FIRST_FIT).
                    await tx.record_many(entries)
                    entries = []
                    await promote(tx)
            await tx.record_many(entries)
    answered = [outcome for outcome in outcomes if outcome is not None]
    assert len(answered) == len(requests)
    return answered


def _audit(p: _Planned) -> AuditEntry:
    return AuditEntry(
        p.row["id"],
        BookingState(p.row["state"]),
        p.to_state,
        p.request.event,
        p.request.actor,
        p.request.reason,
        p.row["fence"],
        units=int(p.row["units"]),
    )


def _rounds(requests: Sequence[ChangeRequest]) -> list[list[int]]:
    """Request indexes in rounds in which each booking appears at most once, arrival order kept."""
    rounds: list[list[int]] = []
    last_round: dict[UUID, int] = {}
    for index, request in enumerate(requests):
        at = last_round.get(request.booking_id, -1) + 1
        if at == len(rounds):
            rounds.append([])
        rounds[at].append(index)
        last_round[request.booking_id] = at
    return rounds


def _decide(request: ChangeRequest, row: dict[str, Any]) -> BookingState:
    """The booking's next state by the transition table, or raise why it has none."""
    state = BookingState(row["state"])
    if request.event is Event.CONFIRM and state is BookingState.EXPIRED and row["expires_at"] is not None:
        raise HoldExpired(str(row["id"]), row["expires_at"])  # the holder needs to know why
    check_moves_alone(row, state, request.event)  # a held or waiting group member moves with its group
    return transition(state, request.event, request.role)


def _follow(tx: SlotTransaction, planned: _Planned) -> bool:
    """Keep the transaction's snapshot true after one change; True when it freed a unit or left
    the queue (either may let the queue move: see promote)."""
    booking_id, row = planned.row["id"], planned.row
    if BookingState(row["state"]) is BookingState.PENDING:
        # Its place when it left comes from the mirror at commit (see SlotTransaction.finish).
        tx.queue_seqs[str(booking_id)] = int(row["queue_seq"])
        tx.waiting -= 1
        return True
    if planned.to_state not in OCCUPYING_STATES and row["unit"] is not None:
        tx.unit_released(row["unit"], row["extra_units"])
        return True
    return False


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in BOOKING_COLUMNS.split(","))


_ROWS_SQL = f"SELECT {BOOKING_COLUMNS} FROM bookings WHERE id = ANY($1::uuid[])"

# One guarded UPDATE for a round: each booking must still be in the state it was decided from; a
# confirm also needs its hold live by PostgreSQL's clock with the fence it was read with.
_UPDATE_SQL = (
    "UPDATE bookings b SET state = u.to_state,"
    " unit = CASE WHEN u.keeps_unit THEN b.unit END, updated_at = now()"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::bool[], $6::bigint[])"
    "  AS u (id, from_state, to_state, keeps_unit, live_hold, fence)"
    " WHERE b.id = u.id AND b.state = u.from_state"
    "  AND (NOT u.live_hold OR (b.fence = u.fence AND b.expires_at > now()))"
    f" RETURNING {_prefixed('b')}"
)


def _update_args(planned: list[_Planned]) -> list[Any]:
    return [
        [p.row["id"] for p in planned],
        [p.row["state"] for p in planned],
        [p.to_state.value for p in planned],
        [p.to_state in OCCUPYING_STATES for p in planned],
        [p.request.event is Event.CONFIRM for p in planned],
        [p.row["fence"] for p in planned],
    ]
