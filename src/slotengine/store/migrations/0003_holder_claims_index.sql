-- The per-holder cap on holds and waits counts a holder's claims in one index probe, however
-- long that holder's history is.
CREATE INDEX bookings_holder_claims ON bookings (holder) WHERE state IN ('PENDING', 'RESERVED');
