-- slotHistory pages a slot's audit trail newest first (by id, after a cursor): this index reads
-- one page's rows, whatever the slot's trail holds (without it, every row of the slot was sorted).
CREATE INDEX transitions_slot_history ON transitions (slot_id, id);
