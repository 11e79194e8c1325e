"""The operator's listings' cursors: they resume where a page ended, and only the listing that wrote them."""

from __future__ import annotations

import base64

import pytest

from slotengine.domain.errors import ValidationError
from slotengine.service import sequence_cursor


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize("sequence", [0, 1, 41, 2**63 - 1])
def test_a_cursor_names_the_row_it_was_made_after(sequence: int) -> None:
    assert (
        sequence_cursor.decode("slotBookings", sequence_cursor.encode("slotBookings", sequence)) == sequence
    )


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not-a-cursor",
        "\x00",
        _raw("slotHistory|5"),  # another listing's
        _raw("slotBookings|-1"),
        _raw("slotBookings|" + str(2**63)),  # past bigint
        _raw("slotBookings|05"),  # not how the engine writes 5
        _raw("slotBookings| 5"),
        _raw("slotBookings|5|6"),
        _raw("slotBookings|x"),
    ],
)
def test_a_cursor_the_listing_did_not_give_out_is_a_validation_error_on_after(cursor: str) -> None:
    with pytest.raises(ValidationError) as refusal:
        sequence_cursor.decode("slotBookings", cursor)
    assert refusal.value.field == "after"
