// The GraphQL documents the board sends: queries and mutations over HTTP, subscriptions live.

const SLOT = "id resource startsAt endsAt capacity holdSeconds available held confirmed queueLength closed";
const BOOKING = "id slotId state expiresAt queuePosition";

export const BOARD = `query Board($resource: String, $after: DateTime, $first: Int!) {
  slots(resource: $resource, startsAfter: $after, first: $first) { ${SLOT} }
  myBookings(first: 50) { ${BOOKING} history { fromState } } }`;

export const SLOT_BY_ID = `query Slot($id: ID!) { slot(id: $id) { ${SLOT} } }`;

export const BOOKING_BY_ID = `query Booking($id: ID!) { booking(id: $id) { ${BOOKING} } }`;

export const RESERVE = `mutation Reserve($slotId: ID!, $key: String!) {
  reserveSlot(slotId: $slotId, idempotencyKey: $key) {
    __typename ... on Booking { ${BOOKING} } ... on Error { message } } }`;

export const CONFIRM = `mutation Confirm($bookingId: ID!) {
  confirmBooking(bookingId: $bookingId) {
    __typename ... on Booking { ${BOOKING} } ... on Error { message } } }`;

export const CANCEL = `mutation Cancel($bookingId: ID!) {
  cancelBooking(bookingId: $bookingId, reason: "cancelled on the slot board") {
    __typename ... on Booking { ${BOOKING} } ... on Error { message } } }`;

export const SLOT_STATUS = `subscription SlotStatus($slotId: ID!) { slotStatus(slotId: $slotId) { ${SLOT} } }`;

export const BOOKING_UPDATES = `subscription BookingUpdates($bookingId: ID!) {
  bookingUpdates(bookingId: $bookingId) { ${BOOKING} } }`;

export const QUEUE_POSITION = `subscription QueuePosition($bookingId: ID!) {
  queuePosition(bookingId: $bookingId) { state position ahead estimatedWaitSeconds expiresAt } }`;

// The operator's view of one slot (admins): who holds or confirmed, then the head of the queue.
const OPERATOR_BOOKING = "id holder state expiresAt queuePosition";
export const OPERATOR_VIEW = `query OperatorView($slotId: ID!) {
  holding: slotBookings(slotId: $slotId, states: [RESERVED, CONFIRMED], first: 50) {
    items { ${OPERATOR_BOOKING} } hasNextPage }
  waiting: slotBookings(slotId: $slotId, states: [PENDING], first: 20) {
    items { ${OPERATOR_BOOKING} } hasNextPage } }`;
