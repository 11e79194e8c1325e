// The booking states the board knows, by name: the same sets as src/slotengine/domain/states.py
// (LIVE_STATES, FINAL_STATES), kept in this one module so they can be checked against it.

/** States of a booking that still holds or waits for a unit: the board shows and follows it. */
export const LIVE_STATES = new Set(["PENDING", "RESERVED", "CONFIRMED"]);

/** States a booking never leaves. */
export const FINAL_STATES = new Set(["CANCELLED", "EXPIRED", "COMPLETED"]);

/** Bookings only move forward (PENDING -> RESERVED -> CONFIRMED -> a final state): an update of
 * a lower rank than what the board already shows arrived late and is ignored. */
export const STATE_RANK = Object.freeze({
  PENDING: 0,
  RESERVED: 1,
  CONFIRMED: 2,
  CANCELLED: 3,
  EXPIRED: 3,
  COMPLETED: 3,
});
