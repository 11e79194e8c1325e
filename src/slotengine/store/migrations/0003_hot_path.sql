-- The hot path keeps the queue's length on the slot's row, written under the slot's lock by
-- every transaction that changes it, so admission never counts the queue (cost flat in its length).
ALTER TABLE slots ADD COLUMN waiting integer NOT NULL DEFAULT 0 CHECK (waiting >= 0);
UPDATE slots s SET waiting = (SELECT count(*) FROM bookings b WHERE b.slot_id = s.id AND b.state = 'PENDING');
-- A slot's lapsed holds, found without walking its queue (the partial index names the hold state
-- of domain/states.py; tests/unit/test_state_sql.py checks it).
CREATE INDEX bookings_slot_holds ON bookings (slot_id, expires_at) WHERE state = 'RESERVED';
