-- Every committed change to a slot's bookings bumps its version, carried by the change's
-- announcement, so a listener can tell a missed or reordered announcement and re-read.
ALTER TABLE slots ADD COLUMN version bigint NOT NULL DEFAULT 0;
