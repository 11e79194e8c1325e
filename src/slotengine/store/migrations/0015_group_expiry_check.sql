-- A held group always knows when it lapses: its one expiry timer is set from expires_at, and
-- rearm_timers cannot re-arm a RESERVED group without one. Added here rather than in 0010, which
-- databases already migrated past would never run again.
ALTER TABLE booking_groups
    ADD CONSTRAINT booking_groups_held_has_expiry CHECK (state <> 'RESERVED' OR expires_at IS NOT NULL);
