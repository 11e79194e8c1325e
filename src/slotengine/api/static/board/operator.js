// The operator's view of one slot, shown on its card when an admin's token is used: who holds a
// unit (counting down to the hold's expiresAt), who confirmed, and who waits, by name in queue
// order. It reads slotBookings over HTTP and reads again whenever the slot's slotStatus
// subscription reports a change, one read at a time: a change that arrives during a read is
// followed by one more read, so the view always ends on the slot's latest state.

import { OPERATOR_VIEW } from "./documents.js";
import { h } from "./element.js";
import { countdown, plural } from "./format.js";

export class OperatorView {
  /** `request(query, variables)` is the page's HTTP call; `slotId` the slot shown. */
  constructor(slotId, request) {
    this.slotId = slotId;
    this.request = request;
    this.loading = false;
    this.again = false;
    this.disposed = false;
    this.holds = [];
    this.holding = h("ul", { class: "operator-list", "data-testid": "operator-holding" });
    this.waiting = h("ol", { class: "operator-list", "data-testid": "operator-queue" });
    this.more = h("p", { class: "hint", "data-testid": "operator-more", hidden: true });
    this.error = h("p", { class: "error", role: "alert", "data-testid": "operator-error" });
    this.root = h(
      "section",
      { class: "operator", "data-testid": "operator-view", "aria-label": "Who holds and who waits" },
      h("h4", {}, "Holding"),
      this.holding,
      h("h4", {}, "In line"),
      this.waiting,
      this.more,
      this.error,
    );
  }

  /** Read the slot's bookings again (now, or right after the read in flight). */
  async refresh() {
    if (this.loading) {
      this.again = true;
      return;
    }
    this.loading = true;
    try {
      const data = await this.request(OPERATOR_VIEW, { slotId: this.slotId });
      if (!this.disposed) this.render(data);
    } catch (error) {
      if (!this.disposed) this.error.textContent = `Operator's view: ${error.message}`;
    } finally {
      this.loading = false;
      if (this.again && !this.disposed) {
        this.again = false;
        this.refresh();
      }
    }
  }

  render({ holding, waiting }) {
    this.error.textContent = "";
    this.root.dataset.loaded = "true";
    this.holds = [];
    const held = holding.items.map((b) => {
      const what = h("span", { class: "what" });
      if (b.state === "RESERVED") {
        const timer = h("span", { class: "timer", role: "timer", "data-testid": "operator-countdown" });
        what.append("holds, ", timer, " left");
        this.holds.push({ timer, until: Date.parse(b.expiresAt) });
      } else {
        what.append("confirmed");
      }
      return h(
        "li",
        { "data-testid": "operator-hold", "data-state": b.state, "data-holder": b.holder },
        h("span", { class: "who" }, b.holder),
        " ",
        what,
      );
    });
    if (holding.hasNextPage) held.push(h("li", { class: "hint" }, "and more"));
    if (!held.length) held.push(h("li", { class: "hint" }, "Nobody holds a unit."));
    this.holding.replaceChildren(...held);

    const line = waiting.items.map((b) =>
      h(
        "li",
        { "data-testid": "operator-waiter", "data-position": String(b.queuePosition), "data-holder": b.holder },
        h("span", { class: "place" }, `#${b.queuePosition}`),
        " ",
        h("span", { class: "who" }, b.holder),
      ),
    );
    this.more.hidden = !waiting.hasNextPage;
    this.more.textContent = waiting.hasNextPage
      ? `Only the first ${plural(line.length, "place", "places")} shown.`
      : "";
    if (!line.length) line.push(h("li", { class: "hint" }, "Nobody waits."));
    this.waiting.replaceChildren(...line);
    this.tick(Date.now());
  }

  tick(now) {
    for (const { timer, until } of this.holds) {
      const text = countdown(until - now);
      if (timer.textContent !== text) timer.textContent = text;
    }
  }

  dispose() {
    this.disposed = true;
  }
}
