-- Every change an admin makes to a slot's own terms (closeSlot, reopenSlot, updateSlot), at the
-- slot version it committed at, with the terms before it. Beside the audit trail of bookings
-- (transitions), it makes every version of a slot replayable: a subscription resuming from a
-- cursor across a resize or a close sees the terms change where it happened, and no version is a
-- hole (which would answer CursorExpired).
CREATE TABLE slot_terms_trail (
    slot_id       uuid        NOT NULL REFERENCES slots (id),
    slot_version  bigint      NOT NULL,
    terms         jsonb       NOT NULL,
    previous      jsonb       NOT NULL,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (slot_id, slot_version)
);
