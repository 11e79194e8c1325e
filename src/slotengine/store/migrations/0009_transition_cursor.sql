-- Audit rows keyed by slot and slot version, so that a subscription can resume from a cursor
-- (a slot version) by reading back every change after it (service/replay.py).
-- Every transaction that changes a slot's bookings bumps the slot's version once and writes its
-- audit rows at that new version; a version with no row is a hole the trail cannot replay.
ALTER TABLE transitions ADD COLUMN slot_id uuid, ADD COLUMN slot_version bigint;
-- Rows written before this migration carry no version: they are put at 0, below every version a
-- change can commit at, so a cursor from before now finds holes and answers CursorExpired.
UPDATE transitions t SET slot_id = b.slot_id, slot_version = 0 FROM bookings b WHERE b.id = t.booking_id;
-- NOT NULL: a writer that forgets them fails at once rather than leaving holes in the trail.
ALTER TABLE transitions ALTER COLUMN slot_id SET NOT NULL, ALTER COLUMN slot_version SET NOT NULL;
CREATE INDEX transitions_slot_version ON transitions (slot_id, slot_version);
