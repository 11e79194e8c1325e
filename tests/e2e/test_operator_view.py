"""The operator's view over HTTP: slotBookings (who holds, who waits where, who confirmed) and
slotHistory (the slot's audit trail), cursor-paginated, for admins; refusals coded as for reads."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from slotengine.service.engine import Engine
from slotengine.service.mirror import drop_mirror
from slotengine.store.database import connection
from tests.e2e.conftest import ADMIN, GraphQL, token
from tests.e2e.test_malformed_ids import MALFORMED
from tests.round_trips import counting_round_trips

BOOKINGS = """query($s: ID!, $states: [BookingState!], $first: Int!, $after: String) {
  slotBookings(slotId: $s, states: $states, first: $first, after: $after) {
    items { id holder state expiresAt queuePosition } endCursor hasNextPage } }"""
HISTORY = """query($s: ID!, $first: Int!, $after: String) {
  slotHistory(slotId: $s, first: $first, after: $after) {
    items { bookingId holder fromState toState event actor reason at } endCursor hasNextPage } }"""


def _names(prefix: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i}" for i in range(count)]


async def bookings(
    gql: GraphQL,
    slot_id: str,
    *,
    states: list[str] | None = None,
    first: int = 50,
    after: str | None = None,
) -> dict[str, Any]:
    variables = {"s": slot_id, "states": states, "first": first, "after": after}
    data = await gql.run(BOOKINGS, variables, as_=ADMIN)
    page: dict[str, Any] = data["slotBookings"]
    return page


async def every_booking(
    gql: GraphQL, slot_id: str, *, states: list[str] | None, first: int
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = await bookings(gql, slot_id, states=states, first=first, after=after)
        items += page["items"]
        if not page["hasNextPage"]:
            return items
        after = page["endCursor"]


async def history(
    gql: GraphQL, slot_id: str, as_: str, *, first: int = 50, after: str | None = None
) -> dict[str, Any]:
    data = await gql.run(HISTORY, {"s": slot_id, "first": first, "after": after}, as_=as_)
    page: dict[str, Any] = data["slotHistory"]
    return page


async def refusal(gql: GraphQL, query: str, variables: dict[str, Any], as_: str | None) -> tuple[str, str]:
    """The code and message of a read's refusal; the read answers no data."""
    # Sent as escaped JSON: httpx's encoder refuses lone surrogates, which a client may still send.
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {as_}"} if as_ else {})}
    payload = json.dumps({"query": query, "variables": variables}).encode()
    response = await gql.http.post("/graphql", content=payload, headers=headers)
    body = response.json()
    assert response.status_code == 200, response.text
    assert body["data"] is None, body
    (error,) = body["errors"]
    return error["extensions"]["code"], error["message"]


async def test_an_admin_sees_who_confirmed_who_holds_until_when_and_who_waits_in_which_place(
    gql: GraphQL,
) -> None:
    ann, bob, cat, dan, eve = _names("ops-view", 5)
    slot_id = await gql.create_slot(capacity=2)
    first = await gql.reserve(token(ann), slot_id, "k")
    await gql.confirm(token(ann), first["id"])
    held = await gql.reserve(token(bob), slot_id, "k")
    waiting = [await gql.reserve(token(name), slot_id, "k") for name in (cat, dan, eve)]
    assert [w["queuePosition"] for w in waiting] == [1, 2, 3]
    await gql.cancel(token(dan), waiting[1]["id"])

    everything = await bookings(gql, slot_id)
    queue = await bookings(gql, slot_id, states=["PENDING"])
    occupying = await bookings(gql, slot_id, states=["RESERVED", "CONFIRMED"])

    assert [(b["holder"], b["state"], b["queuePosition"]) for b in everything["items"]] == [
        (ann, "CONFIRMED", None),
        (bob, "RESERVED", None),
        (cat, "PENDING", 1),
        (dan, "CANCELLED", None),
        (eve, "PENDING", 2),
    ]
    assert everything["items"][1]["expiresAt"] == held["expiresAt"]
    assert everything["hasNextPage"] is False
    assert [(b["holder"], b["queuePosition"]) for b in queue["items"]] == [(cat, 1), (eve, 2)]
    assert [b["holder"] for b in occupying["items"]] == [ann, bob]
    for waiter in queue["items"]:  # the same places the waiters themselves are told
        own = await gql.booking(token(waiter["holder"]), waiter["id"])
        assert own is not None and own["queuePosition"] == waiter["queuePosition"]


async def test_pages_list_each_waiter_once_at_its_place_of_the_moment_while_the_queue_moves(
    gql: GraphQL,
) -> None:
    names = _names("ops-move", 24)
    slot_id = await gql.create_slot(capacity=1)
    holder = await gql.reserve(token(f"ops-move-holder-{uuid.uuid4().hex[:6]}"), slot_id, "k")
    joined = [await gql.reserve(token(name), slot_id, "k") for name in names]
    ids = {b["id"]: b["holder"] for b in joined}
    seen: list[str] = []
    left_unseen: set[str] = set()
    newcomers: list[str] = []
    after: str | None = None
    round_ = 0
    while True:
        page = await bookings(gql, slot_id, states=["PENDING"], first=5, after=after)
        for item in page["items"]:  # each place is the one the booking reads right now
            now = await gql.booking(ADMIN, item["id"])
            assert now is not None and now["state"] == "PENDING"
            assert now["queuePosition"] == item["queuePosition"]
        places = [item["queuePosition"] for item in page["items"]]
        assert places and places == list(range(places[0], places[0] + len(places)))
        assert round_ > 0 or places[0] == 1
        seen += [item["id"] for item in page["items"]]
        if not page["hasNextPage"]:
            break
        after = page["endCursor"]
        round_ += 1
        # The queue moves between pages: someone seen leaves, someone not yet seen leaves, a
        # newcomer joins at the back, and once the head is offered the unit.
        await gql.cancel(token(ids[seen[-1]]), seen[-1])
        unseen = [b["id"] for b in joined if b["id"] not in seen and b["id"] not in left_unseen]
        if unseen:
            left_unseen.add(unseen[-1])
            await gql.cancel(token(ids[unseen[-1]]), unseen[-1])
        newcomer = await gql.reserve(token(f"ops-move-new-{round_}-{uuid.uuid4().hex[:6]}"), slot_id, "k")
        newcomers.append(newcomer["id"])
        ids[newcomer["id"]] = newcomer["holder"]
        if round_ == 2:
            await gql.cancel(token(holder["holder"]), holder["id"])

    assert len(seen) == len(set(seen))  # never twice
    stayed = [b["id"] for b in joined[1:] if b["id"] not in left_unseen]  # joined[0] was promoted
    assert set(stayed) <= set(seen)  # never skipped
    assert not left_unseen & set(seen) and newcomers == [b for b in seen if b in newcomers]
    assert joined[0]["id"] in seen  # listed while it still waited, on the first page


async def test_only_admins_read_a_slots_bookings_and_bad_ids_and_cursors_are_validation_errors(
    gql: GraphQL,
) -> None:
    slot_id = await gql.create_slot()
    holder = token(f"ops-auth-{uuid.uuid4().hex[:6]}")
    await gql.reserve(holder, slot_id, "k")
    ask = {"s": slot_id, "states": None, "first": 5, "after": None}

    anonymous = await refusal(gql, BOOKINGS, ask, None)
    as_holder = await refusal(gql, BOOKINGS, ask, holder)
    malformed = await refusal(gql, BOOKINGS, {**ask, "s": "not-a-slot"}, ADMIN)
    unknown = await refusal(gql, BOOKINGS, {**ask, "s": str(uuid.uuid4())}, ADMIN)
    no_states = await refusal(gql, BOOKINGS, {**ask, "states": []}, ADMIN)
    forged = await refusal(gql, BOOKINGS, {**ask, "after": "bm90LWEtY3Vyc29y"}, ADMIN)
    trail = await history(gql, slot_id, ADMIN, first=1)
    crossed = await refusal(gql, BOOKINGS, {**ask, "after": trail["endCursor"]}, ADMIN)
    history_anonymous = await refusal(gql, HISTORY, {"s": slot_id, "first": 5, "after": None}, None)

    assert anonymous[0] == as_holder[0] == history_anonymous[0] == "NotAuthorized"
    assert malformed[0] == "ValidationError" and malformed[1].startswith("slotId: ")
    assert unknown[0] == "SlotNotFound"
    assert no_states[0] == "ValidationError" and no_states[1].startswith("states: ")
    assert forged[0] == crossed[0] == "ValidationError" and forged[1].startswith("after: ")


@pytest.mark.parametrize("query", [BOOKINGS, HISTORY], ids=["slotBookings", "slotHistory"])
async def test_a_malformed_slot_id_is_a_validation_error_naming_slot_id_for_anyone(
    gql: GraphQL, query: str
) -> None:
    for raw in MALFORMED:
        for who in (token("ops-ids"), ADMIN):
            code, message = await refusal(gql, query, {"s": raw, "first": 5, "after": None}, who)
            assert code == "ValidationError" and message.startswith("slotId: "), (raw, message)
            assert len(message) < 200, "the error does not echo a huge id back"


async def test_the_history_is_newest_first_in_pages_and_a_holder_reads_only_their_own_rows(
    gql: GraphQL,
) -> None:
    alice, bob, stranger = _names("ops-trail", 3)
    carol_name = f"ops-carol-{uuid.uuid4().hex[:6]}"
    carol = token(carol_name, admin=True)
    slot_id = await gql.create_slot()
    held = await gql.reserve(token(alice), slot_id, "k")
    queued = await gql.reserve(token(bob), slot_id, "k")
    cancelled = await gql.cancel(carol, held["id"], "room flooded")
    assert cancelled["state"] == "CANCELLED"
    await gql.confirm(token(bob), queued["id"])

    rows: list[dict[str, Any]] = []
    after: str | None = None
    pages = 0
    while True:
        page = await history(gql, slot_id, ADMIN, first=2, after=after)
        rows += page["items"]
        pages += 1
        if not page["hasNextPage"]:
            break
        after = page["endCursor"]
    own = await history(gql, slot_id, token(alice))
    none = await history(gql, slot_id, token(stranger))

    assert pages == 3
    assert [(r["holder"], r["fromState"], r["toState"], r["event"]) for r in rows] == [
        (bob, "RESERVED", "CONFIRMED", "confirm"),
        (bob, "PENDING", "RESERVED", "promote"),
        (alice, "RESERVED", "CANCELLED", "cancel"),
        (bob, None, "PENDING", "queue"),
        (alice, None, "RESERVED", "hold"),
    ]
    assert rows[2]["actor"] == carol_name and rows[2]["reason"] == "room flooded"
    assert [r["at"] for r in rows] == sorted((r["at"] for r in rows), reverse=True)
    assert {r["bookingId"] for r in rows} == {held["id"], queued["id"]}
    assert [(r["event"], r["actor"]) for r in own["items"]] == [("cancel", "admin"), ("hold", alice)]
    assert none == {"items": [], "endCursor": None, "hasNextPage": False}


async def test_a_queue_of_ten_thousand_pages_with_every_place_right_from_the_mirror_or_without_it(
    gql: GraphQL, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot_id = await gql.create_slot(capacity=1)
    await gql.reserve(token(f"ops-big-holder-{uuid.uuid4().hex[:6]}"), slot_id, "k")
    run = uuid.uuid4().hex[:6]
    # Ten thousand waiters in one statement (through reserveSlot this would take minutes), as the
    # engine writes them: arrival sequence from the same sequence, the queue's length and a new
    # version on the slot (so its Redis mirror, which lacks them, is at another version).
    await connection().execute_query(
        "INSERT INTO bookings (id, slot_id, holder, state, idempotency_key)"
        " SELECT gen_random_uuid(), $1, $2 || g, 'PENDING', 'k' FROM generate_series(1, 10000) g ORDER BY g",
        [uuid.UUID(slot_id), f"ops-big-{run}-"],
    )
    await connection().execute_query(
        "UPDATE slots SET waiting = waiting + 10000, version = version + 1 WHERE id = $1",
        [uuid.UUID(slot_id)],
    )
    rows = await connection().execute_query_dict(
        "SELECT id FROM bookings WHERE slot_id = $1 AND state = 'PENDING' ORDER BY queue_seq",
        [uuid.UUID(slot_id)],
    )
    expected = [str(r["id"]) for r in rows]
    assert len(expected) == 10_000

    async def walk() -> tuple[list[dict[str, Any]], list[str]]:
        items: list[dict[str, Any]] = []
        cursors: list[str] = []
        after: str | None = None
        while True:
            page = await bookings(gql, slot_id, states=["PENDING"], first=200, after=after)
            items += page["items"]
            if not page["hasNextPage"]:
                return items, cursors
            after = page["endCursor"]
            cursors.append(after)

    # The mirror is behind this version: every place is counted in PostgreSQL.
    items, cursors = await walk()
    assert [i["id"] for i in items] == expected
    assert [i["queuePosition"] for i in items] == list(range(1, 10_001))

    # Someone 5,000th in line leaves (that transaction rebuilds the mirror): every place behind
    # is one nearer, now read from the mirror's ranks.
    await gql.cancel(ADMIN, expected[4_999])
    del expected[4_999]
    items, _ = await walk()
    assert [i["id"] for i in items] == expected
    assert [i["queuePosition"] for i in items] == list(range(1, 10_000))

    with counting_round_trips(monkeypatch) as trips:
        mirrored = await bookings(gql, slot_id, states=["PENDING"], first=200, after=cursors[34])
        from_mirror = (trips.postgres, trips.redis)
        await drop_mirror(engine, slot_id)
        trips.reset()
        counted = await bookings(gql, slot_id, states=["PENDING"], first=200, after=cursors[34])
        without_mirror = (trips.postgres, trips.redis)

    for deep in (mirrored, counted):  # from the 7,001st arrival on, 7,000th in line
        assert [i["id"] for i in deep["items"]] == expected[6_999:7_199]
        assert [i["queuePosition"] for i in deep["items"]] == list(range(7_000, 7_200))
    # The page in one statement; Redis: the read allowance and one rank.
    assert from_mirror == (1, 2), trips.statements
    # Without the mirror: the page again, counted in its own snapshot.
    assert without_mirror == (2, 2), trips.statements
