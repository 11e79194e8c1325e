-- The operator's view reads a slot's bookings in arrival order (slotBookings pages by queue_seq,
-- whatever their state) and its audit trail through them (slotHistory joins transitions on the
-- slot's bookings): one index range scan per page instead of a walk over every booking.
CREATE INDEX bookings_slot_arrival ON bookings (slot_id, queue_seq);
