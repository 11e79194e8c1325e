-- Hold extension limits, and what resizing a slot must keep true.
-- A hold may be extended max_extensions times, and last max_hold_seconds in all from when it
-- was granted (NULL: 3 x hold_seconds, following hold_seconds when it changes).
ALTER TABLE slots ADD COLUMN max_extensions integer NOT NULL DEFAULT 1
    CHECK (max_extensions BETWEEN 0 AND 100);
ALTER TABLE slots ADD COLUMN max_hold_seconds integer
    CHECK (max_hold_seconds IS NULL OR max_hold_seconds BETWEEN 1 AND 259200);
-- Extensions used by the booking's hold (a booking is granted at most one hold).
ALTER TABLE bookings ADD COLUMN extensions integer NOT NULL DEFAULT 0 CHECK (extensions >= 0);

-- Invariant 1, from the slot's side: 0001's trigger keeps a booking's unit within its slot's
-- capacity when the unit is written; this one refuses a capacity below a unit in use, so a slot
-- cannot shrink under its occupying bookings (updateSlot moves them down first).
CREATE FUNCTION slots_capacity_covers_units() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM bookings WHERE slot_id = NEW.id AND unit > NEW.capacity) THEN
        RAISE EXCEPTION 'slot % has a unit in use above the capacity %', NEW.id, NEW.capacity
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER slots_capacity_covers_units BEFORE UPDATE OF capacity ON slots
    FOR EACH ROW WHEN (NEW.capacity < OLD.capacity) EXECUTE FUNCTION slots_capacity_covers_units();
