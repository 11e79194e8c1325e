-- Slots, bookings, their audit trail and idempotency records.
-- The database, not Redis, is what makes over-booking impossible: every occupying booking owns
-- one unit number of its slot, unique per slot and never above the slot's capacity.

CREATE TABLE slots (
    id            uuid PRIMARY KEY,
    resource      text        NOT NULL CHECK (length(resource) BETWEEN 1 AND 200),
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    capacity      integer     NOT NULL CHECK (capacity >= 1),
    hold_seconds  integer     NOT NULL CHECK (hold_seconds BETWEEN 1 AND 86400),
    closed        boolean     NOT NULL DEFAULT false,
    -- Issued to each hold; only ever grows, so a stale holder or task can be told apart.
    fence         bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX slots_resource_starts_at ON slots (resource, starts_at);

CREATE SEQUENCE booking_queue_seq;

CREATE TABLE bookings (
    id               uuid PRIMARY KEY,
    slot_id          uuid        NOT NULL REFERENCES slots (id),
    holder           text        NOT NULL,
    state            text        NOT NULL
        CHECK (state IN ('PENDING', 'RESERVED', 'CONFIRMED', 'COMPLETED', 'CANCELLED', 'EXPIRED')),
    unit             integer     CHECK (unit >= 1),
    fence            bigint,
    queue_seq        bigint      NOT NULL DEFAULT nextval('booking_queue_seq'),
    expires_at       timestamptz,
    idempotency_key  text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- A booking holds a unit exactly while it occupies the slot.
    CHECK ((state IN ('RESERVED', 'CONFIRMED', 'COMPLETED')) = (unit IS NOT NULL)),
    CHECK (state <> 'RESERVED' OR (expires_at IS NOT NULL AND fence IS NOT NULL))
);
-- Invariant 1: a unit of a slot belongs to at most one occupying booking.
CREATE UNIQUE INDEX bookings_one_booking_per_unit ON bookings (slot_id, unit) WHERE unit IS NOT NULL;
-- Invariant 8: one live booking per holder and slot.
CREATE UNIQUE INDEX bookings_one_live_per_holder ON bookings (slot_id, holder)
    WHERE state IN ('PENDING', 'RESERVED', 'CONFIRMED');
CREATE INDEX bookings_queue ON bookings (slot_id, queue_seq) WHERE state = 'PENDING';
CREATE INDEX bookings_holds ON bookings (expires_at) WHERE state = 'RESERVED';
CREATE INDEX bookings_holder ON bookings (holder, created_at);

-- Invariant 1, the other half: no unit number above the slot's capacity.
CREATE FUNCTION bookings_unit_within_capacity() RETURNS trigger AS $$
BEGIN
    IF NEW.unit IS NOT NULL AND NEW.unit > (SELECT capacity FROM slots WHERE id = NEW.slot_id) THEN
        RAISE EXCEPTION 'unit % exceeds the capacity of slot %', NEW.unit, NEW.slot_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER bookings_unit_within_capacity BEFORE INSERT OR UPDATE OF unit ON bookings
    FOR EACH ROW EXECUTE FUNCTION bookings_unit_within_capacity();

CREATE TABLE transitions (
    id          bigserial PRIMARY KEY,
    booking_id  uuid        NOT NULL REFERENCES bookings (id),
    from_state  text,
    to_state    text        NOT NULL,
    event       text        NOT NULL,
    actor       text        NOT NULL,
    reason      text,
    fence       bigint,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX transitions_booking ON transitions (booking_id, id);

CREATE TABLE idempotency_keys (
    holder      text        NOT NULL,
    key         text        NOT NULL,
    slot_id     uuid        NOT NULL,
    booking_id  uuid        NOT NULL REFERENCES bookings (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (holder, key)
);
