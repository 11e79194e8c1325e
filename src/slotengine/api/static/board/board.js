// slotengine's live slot board: plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Queries and mutations go to /graphql over HTTP. Live updates come over a WebSocket speaking
// graphql-transport-ws, implemented below: connection_init (with the bearer token), then
// subscribe / next / error / complete per operation, ping / pong both ways.
// Text from the server is only ever set with textContent or text nodes, never parsed as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "slotengine.token";
  const PROTOCOL = "graphql-transport-ws";
  // The server allows 20 operations per connection. It forgets a completed operation a moment
  // after it says so, and after we say so: places freed in the last seconds count as taken.
  const OPERATIONS_PER_CONNECTION = 18;
  const RETIRING_MS = 3000;
  const KEEPALIVE_MS = 20000;
  const PAGE = 50;
  const LIVE = new Set(["PENDING", "RESERVED", "CONFIRMED"]);
  const FINAL = new Set(["CANCELLED", "EXPIRED", "COMPLETED"]);
  // Bookings only move forward: PENDING -> RESERVED -> CONFIRMED -> a final state.
  const RANK = { PENDING: 0, RESERVED: 1, CONFIRMED: 2, CANCELLED: 3, EXPIRED: 3, COMPLETED: 3 };

  const SLOT = "id resource startsAt endsAt capacity holdSeconds available held confirmed queueLength closed";
  const BOOKING = "id slotId state expiresAt queuePosition";
  const Q = {
    board: `query Board($resource: String, $after: DateTime, $first: Int!) {
      slots(resource: $resource, startsAfter: $after, first: $first) { ${SLOT} }
      myBookings(first: 50) { ${BOOKING} history { fromState } } }`,
    slot: `query Slot($id: ID!) { slot(id: $id) { ${SLOT} } }`,
    booking: `query Booking($id: ID!) { booking(id: $id) { ${BOOKING} } }`,
    reserve: `mutation Reserve($slotId: ID!, $key: String!) {
      reserveSlot(slotId: $slotId, idempotencyKey: $key) {
        __typename ... on Booking { ${BOOKING} } ... on Error { message } } }`,
    confirm: `mutation Confirm($bookingId: ID!) {
      confirmBooking(bookingId: $bookingId) {
        __typename ... on Booking { ${BOOKING} } ... on Error { message } } }`,
    cancel: `mutation Cancel($bookingId: ID!) {
      cancelBooking(bookingId: $bookingId, reason: "cancelled on the slot board") {
        __typename ... on Booking { ${BOOKING} } ... on Error { message } } }`,
    slotStatus: `subscription SlotStatus($slotId: ID!) { slotStatus(slotId: $slotId) { ${SLOT} } }`,
    bookingUpdates: `subscription BookingUpdates($bookingId: ID!) {
      bookingUpdates(bookingId: $bookingId) { ${BOOKING} } }`,
    queuePosition: `subscription QueuePosition($bookingId: ID!) {
      queuePosition(bookingId: $bookingId) { state position ahead estimatedWaitSeconds expiresAt } }`,
  };

  // ---- small helpers ----------------------------------------------------------------------

  /** An element; string children become text nodes, so server text is never markup. */
  function h(tag, props = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child !== null && child !== undefined) el.append(child);
    return el;
  }

  const dateTime = new Intl.DateTimeFormat(undefined, {
    weekday: "short",
    day: "numeric",
    month: "short",
    hour: "2-digit",
    minute: "2-digit",
  });
  const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const clockTime = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });

  function countdown(ms) {
    const seconds = Math.max(0, Math.ceil(ms / 1000));
    return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  }

  function roughly(seconds) {
    if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s`;
    return `about ${Math.round(seconds / 60)} min`;
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return `board-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  /** The token's claims, read (not verified: the server does that) to greet the person. */
  function claimsOf(token) {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    try {
      const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      const padded = base64.padEnd(Math.ceil(base64.length / 4) * 4, "=");
      const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return typeof claims.sub === "string" && claims.sub ? claims : null;
    } catch {
      return null;
    }
  }

  // ---- GraphQL over HTTP ------------------------------------------------------------------

  class TokenRefused extends Error {}

  const endpoint = new URL("graphql", document.baseURI);

  async function gql(query, variables) {
    const headers = { "content-type": "application/json", accept: "application/json" };
    if (board.token) headers.authorization = `Bearer ${board.token}`;
    let response;
    try {
      response = await fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
    } catch {
      throw new Error("The server cannot be reached.");
    }
    const body = await response.json().catch(() => null);
    const message = body?.errors?.map((e) => e.message).join("; ");
    if (response.status === 401) throw new TokenRefused(message || "The token was refused.");
    if (!response.ok || !body) throw new Error(message || `The server answered ${response.status}.`);
    if (body.errors?.length) throw new Error(message);
    return body.data;
  }

  // ---- graphql-transport-ws ---------------------------------------------------------------

  /** One WebSocket; operations survive reconnects and are subscribed again after each ack. */
  class LiveConnection {
    constructor(url, token, pool) {
      this.url = url;
      this.token = token;
      this.pool = pool;
      this.operations = new Map();
      this.retiring = 0;
      this.nextId = 1;
      this.acked = false;
      this.closed = false;
      this.failures = 0;
      this.keepalive = null;
      this.awaitingPong = false;
      this.open();
    }

    open() {
      const ws = new WebSocket(this.url, PROTOCOL);
      this.ws = ws;
      this.acked = false;
      this.retiring = 0;
      ws.addEventListener("open", () => {
        this.send({ type: "connection_init", payload: { Authorization: `Bearer ${this.token}` } });
      });
      ws.addEventListener("message", (event) => this.receive(event.data));
      ws.addEventListener("close", (event) => this.lost(ws, event));
    }

    send(message) {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    }

    receive(raw) {
      let message;
      try {
        message = JSON.parse(raw);
      } catch {
        return;
      }
      const operation = this.operations.get(message.id);
      switch (message.type) {
        case "connection_ack":
          this.acked = true;
          this.failures = 0;
          for (const [id, op] of this.operations) this.sendSubscribe(id, op);
          this.startKeepalive();
          this.pool.changed();
          break;
        case "ping":
          this.send({ type: "pong" });
          break;
        case "pong":
          this.awaitingPong = false;
          break;
        case "next":
          if (!operation) break;
          if (message.payload?.errors?.length) {
            this.operations.delete(message.id);
            operation.error(message.payload.errors.map((e) => e.message).join("; "));
          } else {
            operation.next(message.payload.data);
          }
          break;
        case "error":
          if (!operation) break;
          this.operations.delete(message.id);
          operation.error((message.payload || []).map((e) => e.message).join("; ") || "refused");
          break;
        case "complete":
          if (!operation) break;
          this.operations.delete(message.id);
          this.retire();
          operation.complete();
          break;
      }
    }

    sendSubscribe(id, op) {
      this.send({ id, type: "subscribe", payload: { query: op.query, variables: op.variables } });
    }

    startKeepalive() {
      clearInterval(this.keepalive);
      this.awaitingPong = false;
      this.keepalive = setInterval(() => {
        if (this.awaitingPong) {
          this.ws.close(4000, "no pong"); // a silent connection: start afresh
          return;
        }
        this.awaitingPong = true;
        this.send({ type: "ping" });
      }, KEEPALIVE_MS);
    }

    lost(ws, event) {
      if (ws !== this.ws) return;
      clearInterval(this.keepalive);
      this.acked = false;
      if (this.closed) return;
      if (event.code === 4403) {
        this.pool.refused("The server refused the token.");
        return;
      }
      this.pool.changed();
      const delay = Math.min(15000, 500 * 2 ** this.failures) * (0.75 + Math.random() / 2);
      this.failures += 1;
      this.retry = setTimeout(() => this.open(), delay);
    }

    subscribe(query, variables, sink) {
      const id = String(this.nextId++);
      const op = { query, variables, ...sink };
      this.operations.set(id, op);
      if (this.acked) this.sendSubscribe(id, op);
      return () => {
        if (this.operations.delete(id) && this.acked) {
          this.send({ id, type: "complete" });
          this.retire();
        }
      };
    }

    retire() {
      const ws = this.ws;
      this.retiring += 1;
      setTimeout(() => {
        if (this.ws === ws) this.retiring -= 1;
      }, RETIRING_MS);
    }

    get load() {
      return this.operations.size + this.retiring;
    }

    close() {
      this.closed = true;
      clearInterval(this.keepalive);
      clearTimeout(this.retry);
      this.ws.close(1000, "bye");
    }
  }

  /** As many connections as the operations need, all with the same token. */
  class LivePool {
    constructor(token) {
      const url = new URL(endpoint);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      this.url = url.href;
      this.token = token;
      this.connections = [];
      this.closed = false;
    }

    subscribe(query, variables, sink) {
      let connection = this.connections.find((c) => c.load < OPERATIONS_PER_CONNECTION);
      if (!connection) {
        connection = new LiveConnection(this.url, this.token, this);
        this.connections.push(connection);
        this.changed();
      }
      return connection.subscribe(query, variables, sink);
    }

    status() {
      if (this.closed) return "offline";
      if (this.connections.length === 0) return "idle";
      if (this.connections.every((c) => c.acked)) return "live";
      return this.connections.some((c) => c.failures > 0) ? "reconnecting" : "connecting";
    }

    changed() {
      showConnection();
    }

    refused(reason) {
      if (this.closed) return;
      forgetToken(reason);
    }

    close() {
      this.closed = true;
      for (const c of this.connections) c.close();
      this.connections = [];
    }
  }

  // ---- one slot on the board --------------------------------------------------------------

  const ENDED = {
    CANCELLED: "Your booking was cancelled.",
    EXPIRED: "Your hold expired.",
    COMPLETED: "Your booking is complete.",
  };

  class SlotCard {
    constructor(slot) {
      this.slot = slot;
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
      e.hold.textContent = `Each hold lasts ${s.holdSeconds < 120 ? `${s.holdSeconds} s` : `${Math.round(s.holdSeconds / 60)} min`}.`;
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
      const signedIn = Boolean(board.token);
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
      document.getElementById("turns").append(root);
    }

    tick(now) {
      const b = this.booking;
      if (b?.state !== "RESERVED" || !b.expiresAt) return;
      const left = Date.parse(b.expiresAt) - now;
      const text = countdown(left);
      if (this.el.timer.textContent !== text) this.el.timer.textContent = text;
      if (this.turnPanel && this.turnPanel.timer.textContent !== text) this.turnPanel.timer.textContent = text;
      if (left <= 0 && now - this.settledAt > 5000) {
        // The hold has lapsed by our clock: reading the booking makes the server settle it.
        this.settledAt = now;
        gql(Q.booking, { id: b.id })
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
      if (!current || booking.id !== current.id || RANK[booking.state] < RANK[current.state]) return;
      if (current.state === "PENDING" && booking.state === "RESERVED") this.turn = true;
      const next = { ...current, ...booking };
      if (booking.state === current.state) next.queuePosition = current.queuePosition;
      this.apply(next);
    }

    /** A queuePosition update: the place in line, then the hold offered. */
    move(bookingId, position) {
      const current = this.booking;
      if (!current || bookingId !== current.id || RANK[position.state] < RANK[current.state]) return;
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
      if (FINAL.has(next.state)) {
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
      if (!board.live) return;
      this.stopStatus = board.live.subscribe(Q.slotStatus, { slotId: this.slot.id }, {
        next: (data) => {
          this.slot = data.slotStatus;
          this.render();
        },
        error: (message) => this.showError(`Live updates stopped: ${message}`),
        complete: () => {},
      });
    }

    watchBooking() {
      this.unwatchBooking();
      if (!board.live || !this.booking) return;
      const id = this.booking.id;
      const variables = { bookingId: id };
      const error = (message) => this.showError(`Live updates stopped: ${message}`);
      const complete = () => {};
      this.stopBooking.push(
        board.live.subscribe(Q.bookingUpdates, variables, {
          next: (data) => this.update(data.bookingUpdates),
          error,
          complete,
        }),
      );
      if (this.booking.state !== "CONFIRMED") {
        this.stopBooking.push(
          board.live.subscribe(Q.queuePosition, variables, {
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
        return (await gql(query, variables))[field];
      } catch (error) {
        if (error instanceof TokenRefused) forgetToken(error.message);
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
      const result = await this.act(Q.reserve, { slotId: this.slot.id, key: this.reserveKey }, "reserveSlot");
      if (!result) return;
      this.reserveKey = null;
      if (result.__typename === "Booking") this.track(result);
      else this.showError(result.message);
    }

    async confirm() {
      const booking = this.booking;
      if (!booking) return;
      const result = await this.act(Q.confirm, { bookingId: booking.id }, "confirmBooking");
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
      const result = await this.act(Q.cancel, { bookingId: booking.id }, "cancelBooking");
      if (!result) return;
      if (result.__typename === "Booking") this.update(result);
      else this.showError(result.message);
    }
  }

  // ---- the board --------------------------------------------------------------------------

  const board = { token: null, live: null, cards: new Map(), loads: 0 };
  const $ = (id) => document.getElementById(id);

  function showConnection() {
    const status = board.live ? board.live.status() : "offline";
    const text = {
      offline: "Offline: use a token for live updates",
      idle: "Live",
      live: "Live",
      connecting: "Connecting…",
      reconnecting: "Reconnecting…",
    }[status];
    const el = $("connection");
    el.dataset.status = status;
    if (el.textContent !== text) el.textContent = text;
  }

  function showIdentity(claims) {
    const identity = $("identity");
    if (!claims) {
      identity.textContent = "Not signed in: you can look, not reserve.";
    } else {
      identity.replaceChildren("Signed in as ", h("strong", {}, claims.sub), claims.admin ? " (admin)." : ".");
    }
    $("forget-token").hidden = !claims;
  }

  function useToken(token) {
    const claims = claimsOf(token);
    if (!claims) {
      $("token-error").textContent = "That does not look like a token (three dot-separated parts, with a subject).";
      return false;
    }
    $("token-error").textContent = "";
    board.token = token;
    localStorage.setItem(TOKEN_KEY, token);
    board.live?.close();
    board.live = new LivePool(token);
    showIdentity(claims);
    showConnection();
    return true;
  }

  function forgetToken(reason) {
    localStorage.removeItem(TOKEN_KEY);
    board.token = null;
    board.live?.close();
    board.live = null;
    showIdentity(null);
    showConnection();
    $("token-error").textContent = reason || "";
    load();
  }

  async function load() {
    const seq = ++board.loads;
    const resource = $("resource").value.trim() || null;
    const status = $("board-status");
    status.textContent = "Loading slots…";
    let data;
    try {
      data = await gql(Q.board, { resource, after: new Date().toISOString(), first: PAGE });
    } catch (error) {
      if (seq !== board.loads) return;
      if (error instanceof TokenRefused) forgetToken(error.message);
      else status.textContent = error.message;
      return;
    }
    if (seq !== board.loads) return;

    const mine = new Map();
    for (const booking of data.myBookings) {
      if (LIVE.has(booking.state) && !mine.has(booking.slotId)) mine.set(booking.slotId, booking);
    }
    const slots = [...data.slots];
    if (!resource) {
      // A live booking of a slot beyond the first page still belongs on the board.
      const listed = new Set(slots.map((s) => s.id));
      for (const slotId of mine.keys()) {
        if (listed.has(slotId)) continue;
        const extra = await gql(Q.slot, { id: slotId }).catch(() => null);
        if (seq !== board.loads) return;
        if (extra?.slot) slots.push(extra.slot);
      }
    }

    for (const card of board.cards.values()) card.dispose();
    board.cards.clear();
    const cards = slots.map((slot) => new SlotCard(slot));
    for (const card of cards) {
      board.cards.set(card.slot.id, card);
      const booking = mine.get(card.slot.id);
      if (booking) {
        const promoted = booking.history.some((t) => t.fromState === "PENDING");
        const { history: _history, ...current } = booking;
        card.track(current, { promoted });
      }
      card.watch();
    }
    $("slots").replaceChildren(...cards.map((c) => c.root));
    status.textContent = slots.length
      ? `${plural(slots.length, "slot", "slots")}${resource ? ` for “${resource}”` : ""}.`
      : `No upcoming slots${resource ? ` for “${resource}”` : ""}.`;
  }

  function start() {
    const params = new URLSearchParams(location.search);
    $("resource").value = params.get("resource") || "";

    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("token");
      const token = input.value.trim().replace(/^Bearer\s+/i, "");
      if (useToken(token)) {
        input.value = "";
        load();
      }
    });
    $("forget-token").addEventListener("click", () => forgetToken(""));
    $("filter-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const url = new URL(location.href);
      const resource = $("resource").value.trim();
      if (resource) url.searchParams.set("resource", resource);
      else url.searchParams.delete("resource");
      history.replaceState(null, "", url);
      load();
    });
    window.addEventListener("storage", (event) => {
      // Another tab of this board changed the token.
      if (event.key !== TOKEN_KEY) return;
      if (event.newValue && useToken(event.newValue)) load();
      else if (!event.newValue && board.token) forgetToken("");
    });

    const saved = localStorage.getItem(TOKEN_KEY);
    if (saved && !useToken(saved)) localStorage.removeItem(TOKEN_KEY);
    showConnection();
    setInterval(() => {
      const now = Date.now();
      for (const card of board.cards.values()) card.tick(now);
    }, 250);
    load();
  }

  start();
})();
