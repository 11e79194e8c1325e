"""State knowledge lives in the domain: SQL and the board's script that name states agree with it."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from slotengine.domain.states import (
    FINAL_STATES,
    LIVE_STATES,
    OCCUPYING_STATES,
    BookingState,
    Event,
    Role,
    transition,
)
from slotengine.service import state_sql

HELD = transition(None, Event.HOLD, Role.HOLDER)
QUEUED = transition(None, Event.QUEUE, Role.HOLDER)


def _migrations() -> str:
    folder = resources.files("slotengine.store") / "migrations"
    return "\n".join(
        f.read_text() for f in sorted(folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".sql")
    )


def _states(text: str) -> set[BookingState]:
    return {BookingState(name) for name in re.findall(r"'([A-Z]+)'", text)}


def _index_predicate(name: str) -> str:
    match = re.search(
        rf"CREATE (?:UNIQUE )?INDEX {name} ON bookings \([^)]*\)\s+WHERE ([^;]+);", _migrations()
    )
    assert match is not None, f"no partial index {name}"
    return match.group(1)


def test_the_one_live_booking_index_covers_exactly_the_live_states() -> None:
    predicate = _index_predicate("bookings_one_live_per_holder")
    assert predicate.startswith("state IN") and _states(predicate) == LIVE_STATES


def test_the_queue_index_covers_the_queued_state() -> None:
    assert _index_predicate("bookings_queue") == f"state = '{QUEUED.value}'"


def test_the_hold_indexes_cover_the_held_state() -> None:
    for name in ("bookings_holds", "bookings_slot_holds"):
        assert _index_predicate(name) == f"state = '{HELD.value}'"


def test_the_state_check_allows_every_state_and_units_belong_to_occupying_states() -> None:
    sql = _migrations()
    allowed = re.search(r"CHECK \(state IN \(([^)]*)\)\)", sql)
    assert allowed is not None and _states(allowed.group(1)) == set(BookingState)
    occupying = re.search(r"CHECK \(\(state IN \(([^)]*)\)\) = \(unit IS NOT NULL\)\)", sql)
    assert occupying is not None and _states(occupying.group(1)) == OCCUPYING_STATES
    assert f"CHECK (state <> '{HELD.value}' OR (expires_at IS NOT NULL AND fence IS NOT NULL))" in sql


def test_sql_fragments_are_the_domain_sets() -> None:
    assert _states(state_sql.LIVE_SQL) == LIVE_STATES
    assert _states(state_sql.OCCUPYING_SQL) == OCCUPYING_STATES
    assert _states(state_sql.FINAL_SQL) == FINAL_STATES
    assert _states(state_sql.SETTLED_SQL) == OCCUPYING_STATES - {HELD}
    assert _states(state_sql.MIRRORED_SQL) == LIVE_STATES | OCCUPYING_STATES


def test_the_boards_state_sets_are_the_domains() -> None:
    script = (Path(str(resources.files("slotengine.api"))) / "static" / "board" / "states.js").read_text()
    live = re.search(r"export const LIVE_STATES = new Set\(\[([^\]]*)\]\)", script)
    final = re.search(r"export const FINAL_STATES = new Set\(\[([^\]]*)\]\)", script)
    rank = re.search(r"export const STATE_RANK = Object.freeze\(\{([^}]*)\}", script)
    assert live and final and rank
    quoted = lambda text: {BookingState(name) for name in re.findall(r'"([A-Z]+)"', text)}  # noqa: E731
    assert quoted(live.group(1)) == LIVE_STATES
    assert quoted(final.group(1)) == FINAL_STATES
    assert {BookingState(name) for name in re.findall(r"([A-Z]+):", rank.group(1))} == set(BookingState)


def test_the_admission_function_names_only_the_index_predicates() -> None:
    function = _latest_definition("admit_reservations")
    # The states and events it writes are passed by the caller (service/admission_function.py);
    # the only literals are the two lookups' state sets, which must be the domain's.
    live = re.search(r"AND b\.state IN \(([^)]*)\) LIMIT 1", function)
    claiming = re.search(r"AND c\.state IN \(([^)]*)\)", function)
    assert live and claiming
    assert _states(live.group(1)) == LIVE_STATES
    assert _states(claiming.group(1)) == state_sql.CLAIMING_STATES
    rest = function.replace(live.group(0), "").replace(claiming.group(0), "")
    assert _states(rest) == set()
    assert not re.findall(r"'(" + "|".join(e.value for e in Event) + r")'", function)


def _latest_definition(name: str) -> str:
    """The text of the function `name` as the last migration defining it has it."""
    folder = Path(str(resources.files("slotengine.store"))) / "migrations"
    found = re.compile(rf"CREATE (?:OR REPLACE )?FUNCTION {name}\(.*?\n\$\$;", re.DOTALL)
    definitions = [m.group(0) for f in sorted(folder.glob("*.sql")) for m in found.finditer(f.read_text())]
    assert definitions, f"no migration defines {name}()"
    return definitions[-1]
