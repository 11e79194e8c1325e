-- All-or-nothing holds across slots (reserveSlots): a group of bookings, one per slot, that are
-- held, confirmed, cancelled and expired together. Each member is an ordinary booking (its own
-- unit, fence and audit trail); the group row says which bookings belong together, under which
-- idempotency key, and until when the whole group is held.
CREATE TABLE booking_groups (
    id               uuid PRIMARY KEY,
    holder           text        NOT NULL,
    idempotency_key  text        NOT NULL,
    -- The group's slots in lock order (ascending id): the order every group transaction locks them.
    slot_ids         uuid[]      NOT NULL CHECK (cardinality(slot_ids) >= 1),
    state            text        NOT NULL
        CHECK (state IN ('PENDING', 'RESERVED', 'CONFIRMED', 'COMPLETED', 'CANCELLED', 'EXPIRED')),
    -- One expiry for every hold of the group (the earliest its slots allow).
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (holder, idempotency_key)
);
CREATE INDEX booking_groups_holds ON booking_groups (expires_at) WHERE state = 'RESERVED';

ALTER TABLE bookings ADD COLUMN group_id uuid REFERENCES booking_groups (id);
CREATE INDEX bookings_group ON bookings (group_id) WHERE group_id IS NOT NULL;
