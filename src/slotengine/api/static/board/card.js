// One slot on the board: its counts, queue and the person's booking of it, kept live by
// slotStatus, bookingUpdates and queuePosition, with the reserve / confirm / cancel buttons.

import {
  BOOKING_BY_ID,
  BOOKING_UPDATES,
  CANCEL,
  CONFIRM,
  QUEUE_POSITION,
  RESERVE,
  SLOT_STATUS,
} from "./documents.js";
import { h } from "./element.js";
import { clockTime, countdown, dateTime, holdLength, plural, roughly, timeOnly } from "./format.js";
import { TokenRefused } from "./graphql.js";
import { OperatorView } from "./operator.js";
import { FINAL_STATES, STATE_RANK } from "./states.js";

/** A fresh idempotency key for one reservation. */
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `board-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const ENDED = {
  CANCELLED: "Your booking was cancelled.",
  EXPIRED: "Your hold expired.",
  COMPLETED: "Your booking is complete.",
};

/**
 * The card of one slot. `board` is what the page lends it: `request(query, variables)` over HTTP,
 * `subscribe(query, variables, sink)` (returns its stop function; nothing live when signed out),
 * `signedIn()`, `admin()` (the token claims the admin role: the card shows who holds and who
 * waits), `tokenRefused(reason)` and `turns`, the element "Your turn" panels go in.
 */
export class SlotCard {
  constructor(slot, board) {
    this.slot = slot;
    this.board = board;
    this.booking = null; // the person's live booking of this slot, if any
    this.turn = false; // the booking waited in line and now holds a unit
    this.ended = null;
    this.busy = false;
    this.reserveKey = null;
    this.stopStatus = null;
    this.stopBooking = [];
    this.turnPanel = null;
    this.settledAt = 0;
    this.mineKey = null;
    this.operator = board.admin() ? new OperatorView(slot.id, board.request) : null;
    this.build();
    this.render();
  }

  build() {
    const base = `slot-${this.slot.id}`;
    const count = (field) => h("dd", { "data-field": field });
    this.titleId = `${base}-title`;
    this.el = {
      title: h("h3", { id: this.titleId, class: "resource" }),
      when: h("p", { class: "when" }),
      closed: h("span", { class: "badge", hidden: true }, "Closed"),
      hold: h("p", { class: "hold-length" }),
      capacity: count("capacity"),
      available: count("available"),
      held: count("held"),
      confirmed: count("confirmed"),
      queueLength: count("queueLength"),
      meter: h("div", { class: "meter", "aria-hidden": "true" }),
      queue: h("ol", { class: "queue", "aria-hidden": "true" }),
      mine: h("div", { class: "mine", "data-testid": "my-booking", "aria-live": "polite" }),
      timer: h("span", { class: "timer", role: "timer", "data-testid": "countdown" }),
      error: h("p", { class: "error", role: "alert", "data-testid": "slot-error" }),
      reserve: h("button", {
        type: "button",
        class: "primary",
        "data-testid": "reserve",
        "aria-describedby": this.titleId,
        onclick: () => this.reserve(),
      }),
      confirm: h(
        "button",
        {
          type: "button",
          class: "primary",
          "data-testid": "confirm",
          "aria-describedby": this.titleId,
          onclick: () => this.confirm(),
        },
        "Confirm",
      ),
      cancel: h("button", {
        type: "button",
        "data-testid": "cancel",
        "aria-describedby": this.titleId,
        onclick: () => this.cancel(),
      }),
    };
    const e = this.el;
    const pair = (label, dd) => h("div", { class: dd.dataset.field }, h("dt", {}, label), dd);
    this.root = h(
      "li",
      { class: "slot", "data-testid": "slot", "data-slot-id": this.slot.id },
      h(
        "article",
        { "aria-labelledby": this.titleId },
        h("header", { class: "slot-head" }, h("div", {}, e.title, e.when), e.closed),
        e.meter,
        h(
          "dl",
          { class: "counts" },
          pair("Capacity", e.capacity),
          pair("Available", e.available),
          pair("Held", e.held),
          pair("Confirmed", e.confirmed),
          pair("In line", e.queueLength),
        ),
        e.queue,
        this.operator?.root,
        e.hold,
        e.mine,
        h("div", { class: "actions" }, e.reserve, e.confirm, e.cancel),
        e.error,
      ),
    );
  }

  render() {
    const s = this.slot;
    const e = this.el;
    e.title.textContent = s.resource;
    const starts = new Date(s.startsAt);
    const ends = new Date(s.endsAt);
    e.when.replaceChildren(
      h("time", { datetime: s.startsAt }, dateTime.format(starts)),
      " – ",
      h("time", { datetime: s.endsAt }, timeOnly.format(ends)),
    );
    e.closed.hidden = !s.closed;
    e.hold.textContent = `Each hold lasts ${holdLength(s.holdSeconds)}.`;
    for (const field of ["capacity", "available", "held", "confirmed", "queueLength"]) {
      e[field].textContent = String(s[field]);
    }
    this.root.dataset.available = String(s.available);
    this.renderMeter();
    this.renderQueue();
    this.renderMine();
    this.renderButtons();
    this.renderTurn();
    this.tick(Date.now());
  }

  renderMeter() {
    const s = this.slot;
    const share = (n) => `${s.capacity ? (100 * n) / s.capacity : 0}%`;
    this.el.meter.replaceChildren(
      h("span", { class: "confirmed" }),
      h("span", { class: "held" }),
      h("span", { class: "free" }),
    );
    const [confirmed, held, free] = this.el.meter.children;
    confirmed.style.width = share(s.confirmed);
    held.style.width = share(s.held);
    free.style.width = share(s.available);
  }

  renderQueue() {
    const shown = Math.min(this.slot.queueLength, 12);
    const mine = this.booking?.state === "PENDING" ? this.booking.queuePosition : null;
    const places = [];
    for (let place = 1; place <= shown; place += 1) {
      places.push(h("li", { class: place === mine ? "place mine" : "place" }));
    }
    if (this.slot.queueLength > shown) places.push(h("li", { class: "more" }, `+${this.slot.queueLength - shown}`));
    this.el.queue.replaceChildren(...places);
    this.el.queue.hidden = places.length === 0;
  }

  renderMine() {
    const b = this.booking;
    const mine = this.el.mine;
    // The area is a polite live region: touch it only when what it says changes.
    const key = JSON.stringify(b ? [b.id, b.state, b.queuePosition, b.estimatedWaitSeconds] : this.ended);
    if (key === this.mineKey) return;
    this.mineKey = key;
    mine.dataset.state = b ? b.state : this.ended || "";
    if (!b) {
      mine.replaceChildren(this.ended ? h("p", {}, ENDED[this.ended]) : "");
      mine.hidden = !this.ended;
      return;
    }
    mine.hidden = false;
    if (b.state === "PENDING") {
      const ahead = b.queuePosition ? b.queuePosition - 1 : null;
      const wait = b.estimatedWaitSeconds;
      mine.replaceChildren(
        h(
          "p",
          {},
          "You are ",
          h("strong", {}, "#", h("span", { "data-testid": "queue-position" }, String(b.queuePosition ?? "?"))),
          " in line",
          ahead === null ? "." : ahead === 0 ? ": you are next." : `: ${plural(ahead, "person", "people")} ahead.`,
        ),
        wait === null || wait === undefined ? "" : h("p", { class: "hint" }, `Estimated wait ${roughly(wait)}.`),
      );
    } else if (b.state === "RESERVED") {
      mine.replaceChildren(h("p", {}, "A unit is held for you: ", this.el.timer, " left to confirm."));
    } else if (b.state === "CONFIRMED") {
      mine.replaceChildren(h("p", {}, h("strong", {}, "Confirmed."), " This unit is yours."));
    }
  }

  renderButtons() {
    const e = this.el;
    const b = this.booking;
    const signedIn = this.board.signedIn();
    e.reserve.hidden = Boolean(b);
    e.reserve.textContent = this.slot.available > 0 && this.slot.queueLength === 0 ? "Reserve" : "Join the line";
    e.reserve.disabled = this.busy || !signedIn || this.slot.closed;
    e.reserve.title = signedIn ? "" : "Use a token first";
    e.confirm.hidden = b?.state !== "RESERVED";
    e.confirm.disabled = this.busy;
    e.cancel.hidden = !b;
    e.cancel.textContent = b?.state === "PENDING" ? "Leave the line" : "Cancel";
    e.cancel.disabled = this.busy;
    this.root.setAttribute("aria-busy", String(this.busy));
  }

  renderTurn() {
    const showing = this.turn && this.booking?.state === "RESERVED";
    if (!showing) {
      this.turnPanel?.root.remove();
      this.turnPanel = null;
      return;
    }
    if (this.turnPanel) return;
    const headingId = `turn-${this.slot.id}`;
    const timer = h("span", { class: "timer", role: "timer", "data-testid": "turn-countdown" });
    const until = new Date(this.booking.expiresAt);
    const root = h(
      "section",
      { class: "turn", "data-testid": "your-turn", "data-slot-id": this.slot.id, "aria-labelledby": headingId },
      h("h2", { id: headingId }, "Your turn"),
      h(
        "p",
        {},
        "A unit of ",
        h("strong", {}, this.slot.resource),
        ` (${dateTime.format(new Date(this.slot.startsAt))}) is held for you until ${clockTime.format(until)}. `,
        "Confirm within ",
        timer,
        ".",
      ),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "primary", onclick: () => this.confirm() }, "Confirm now"),
        h("button", { type: "button", onclick: () => this.cancel() }, "Let it go"),
      ),
    );
    this.turnPanel = { root, timer };
    this.board.turns.append(root);
  }

  tick(now) {
    this.operator?.tick(now);
    const b = this.booking;
    if (b?.state !== "RESERVED" || !b.expiresAt) return;
    const left = Date.parse(b.expiresAt) - now;
    const text = countdown(left);
    if (this.el.timer.textContent !== text) this.el.timer.textContent = text;
    if (this.turnPanel && this.turnPanel.timer.textContent !== text) this.turnPanel.timer.textContent = text;
    if (left <= 0 && now - this.settledAt > 5000) {
      // The hold has lapsed by our clock: reading the booking makes the server settle it.
      this.settledAt = now;
      this.board
          .request(BOOKING_BY_ID, { id: b.id })
        .then((data) => data.booking && this.update(data.booking))
        .catch((error) => this.showError(error.message));
    }
  }

  // ---- the person's booking ----

  track(booking, { promoted = false } = {}) {
    this.ended = null;
    this.booking = { ...booking };
    this.turn = promoted && booking.state === "RESERVED";
    this.watchBooking();
    this.render();
  }

  /** A booking update from a mutation, a query or bookingUpdates. */
  update(booking) {
    const current = this.booking;
    if (!current || booking.id !== current.id || STATE_RANK[booking.state] < STATE_RANK[current.state]) return;
    if (current.state === "PENDING" && booking.state === "RESERVED") this.turn = true;
    const next = { ...current, ...booking };
    if (booking.state === current.state) next.queuePosition = current.queuePosition;
    this.apply(next);
  }

  /** A queuePosition update: the place in line, then the hold offered. */
  move(bookingId, position) {
    const current = this.booking;
    if (!current || bookingId !== current.id || STATE_RANK[position.state] < STATE_RANK[current.state]) return;
    if (current.state === "PENDING" && position.state === "RESERVED") this.turn = true;
    const next = { ...current, state: position.state, estimatedWaitSeconds: position.estimatedWaitSeconds };
    if (position.state === "PENDING") {
      next.queuePosition =
        current.state === "PENDING" && current.queuePosition
          ? Math.min(current.queuePosition, position.position)
          : position.position;
    } else {
      next.queuePosition = null;
    }
    if (position.expiresAt) next.expiresAt = position.expiresAt;
    this.apply(next);
  }

  apply(next) {
    if (FINAL_STATES.has(next.state)) {
      this.unwatchBooking();
      this.booking = null;
      this.turn = false;
      this.ended = next.state;
    } else {
      this.booking = next;
      if (next.state === "CONFIRMED") this.turn = false;
    }
    this.render();
  }

  // ---- subscriptions ----

  watch() {
    this.operator?.refresh();
    this.stopStatus = this.board.subscribe(SLOT_STATUS, { slotId: this.slot.id }, {
      next: (data) => {
        this.slot = data.slotStatus;
        this.render();
        this.operator?.refresh(); // the slot changed: so did who holds or waits
      },
      error: (message) => this.showError(`Live updates stopped: ${message}`),
      complete: () => {},
    });
  }

  watchBooking() {
    this.unwatchBooking();
    if (!this.booking) return;
    const id = this.booking.id;
    const variables = { bookingId: id };
    const error = (message) => this.showError(`Live updates stopped: ${message}`);
    const complete = () => {};
    this.stopBooking.push(
      this.board.subscribe(BOOKING_UPDATES, variables, {
        next: (data) => this.update(data.bookingUpdates),
        error,
        complete,
      }),
    );
    if (this.booking.state !== "CONFIRMED") {
      this.stopBooking.push(
        this.board.subscribe(QUEUE_POSITION, variables, {
          next: (data) => this.move(id, data.queuePosition),
          error,
          complete,
        }),
      );
    }
  }

  unwatchBooking() {
    for (const stop of this.stopBooking) stop();
    this.stopBooking = [];
  }

  dispose() {
    this.operator?.dispose();
    this.unwatchBooking();
    this.stopStatus?.();
    this.turnPanel?.root.remove();
    this.turnPanel = null;
  }

  // ---- actions ----

  showError(message) {
    this.el.error.textContent = message || "";
  }

  async act(query, variables, field) {
    this.busy = true;
    this.showError("");
    this.renderButtons();
    try {
      return (await this.board.request(query, variables))[field];
    } catch (error) {
      if (error instanceof TokenRefused) this.board.tokenRefused(error.message);
      else this.showError(error.message);
      return null;
    } finally {
      this.busy = false;
      this.renderButtons();
    }
  }

  async reserve() {
    // The same key until the server answers, so a retry after a network failure is a replay.
    this.reserveKey ||= newKey();
    const result = await this.act(RESERVE, { slotId: this.slot.id, key: this.reserveKey }, "reserveSlot");
    if (!result) return;
    this.reserveKey = null;
    if (result.__typename === "Booking") this.track(result);
    else this.showError(result.message);
  }

  async confirm() {
    const booking = this.booking;
    if (!booking) return;
    const result = await this.act(CONFIRM, { bookingId: booking.id }, "confirmBooking");
    if (!result) return;
    if (result.__typename === "Booking") this.update(result);
    else {
      this.showError(result.message);
      if (result.__typename === "HoldExpired") this.apply({ ...booking, state: "EXPIRED" });
    }
  }

  async cancel() {
    const booking = this.booking;
    if (!booking) return;
    const result = await this.act(CANCEL, { bookingId: booking.id }, "cancelBooking");
    if (!result) return;
    if (result.__typename === "Booking") this.update(result);
    else this.showError(result.message);
  }
}
