-- Indexes that keep reads bounded.
-- The per-holder cap on holds and waits counts a holder's claims in one index probe, however
-- long that holder's history is.
CREATE INDEX bookings_holder_claims ON bookings (holder) WHERE state IN ('PENDING', 'RESERVED');
-- Slot listings page by (starts_at, id), with or without a resource: each page is an index range
-- scan that stops at its LIMIT, never a sort of every slot.
CREATE INDEX slots_starts_at_id ON slots (starts_at, id);
CREATE INDEX slots_resource_starts_at_id ON slots (resource, starts_at, id);
DROP INDEX slots_resource_starts_at;
