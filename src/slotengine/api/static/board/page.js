// slotengine's live slot board: native ES modules, no build step, nothing loaded from elsewhere.
// This module is the page: it starts the board, keeps the person's token, lays out the cards and
// says how the live connection is doing. Queries and mutations go to /graphql over HTTP
// (graphql.js); live updates come over graphql-transport-ws (pool.js); each slot is a card
// (card.js). Text from the server is only ever set as text, never parsed as HTML.

import { SlotCard } from "./card.js";
import { BOARD, SLOT_BY_ID } from "./documents.js";
import { h } from "./element.js";
import { plural } from "./format.js";
import { request, TokenRefused } from "./graphql.js";
import { LivePool } from "./pool.js";
import { LIVE_STATES } from "./states.js";
import { claimsOf, removeToken, savedToken, saveToken, TOKEN_KEY } from "./token.js";

const PAGE = 50;
const TICK_MS = 250;
const CONNECTION_TEXT = {
  offline: "Offline: use a token for live updates",
  unavailable: "No live updates: the server lacks its graphql-ws client",
  idle: "Live",
  live: "Live",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
};

const $ = (id) => document.getElementById(id);

/** The board's state: who is signed in, their live connections and the cards shown. */
const state = { token: null, claims: null, live: null, cards: new Map(), loads: 0 };

const noop = () => {};

/** What a card may use of the page. */
const lent = {
  request: (query, variables) => request(query, variables, state.token),
  subscribe: (query, variables, sink) => (state.live ? state.live.subscribe(query, variables, sink) : noop),
  signedIn: () => Boolean(state.token),
  // What the token claims, unverified: the server refuses the operator's view to anyone else.
  admin: () => Boolean(state.claims?.admin),
  tokenRefused: (reason) => forgetToken(reason),
  turns: $("turns"),
};

function showConnection() {
  const status = state.live ? state.live.status() : "offline";
  const text = CONNECTION_TEXT[status];
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
  state.token = token;
  state.claims = claims;
  saveToken(token);
  state.live?.close();
  state.live = new LivePool(token, { changed: showConnection, refused: forgetToken });
  showIdentity(claims);
  showConnection();
  return true;
}

function forgetToken(reason) {
  removeToken();
  state.token = null;
  state.claims = null;
  state.live?.close();
  state.live = null;
  showIdentity(null);
  showConnection();
  $("token-error").textContent = reason || "";
  load();
}

/** List the upcoming slots (and the person's live bookings), one card each, followed live. */
async function load() {
  const seq = ++state.loads;
  const resource = $("resource").value.trim() || null;
  const status = $("board-status");
  status.textContent = "Loading slots…";
  let data;
  try {
    data = await lent.request(BOARD, { resource, after: new Date().toISOString(), first: PAGE });
  } catch (error) {
    if (seq !== state.loads) return;
    if (error instanceof TokenRefused) forgetToken(error.message);
    else status.textContent = error.message;
    return;
  }
  if (seq !== state.loads) return;

  const mine = new Map();
  for (const booking of data.myBookings) {
    if (LIVE_STATES.has(booking.state) && !mine.has(booking.slotId)) mine.set(booking.slotId, booking);
  }
  const slots = [...data.slots];
  if (!resource) {
    // A live booking of a slot beyond the first page still belongs on the board.
    const listed = new Set(slots.map((s) => s.id));
    for (const slotId of mine.keys()) {
      if (listed.has(slotId)) continue;
      const extra = await lent.request(SLOT_BY_ID, { id: slotId }).catch(() => null);
      if (seq !== state.loads) return;
      if (extra?.slot) slots.push(extra.slot);
    }
  }

  for (const card of state.cards.values()) card.dispose();
  state.cards.clear();
  const cards = slots.map((slot) => new SlotCard(slot, lent));
  for (const card of cards) {
    state.cards.set(card.slot.id, card);
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
    else if (!event.newValue && state.token) forgetToken("");
  });

  const saved = savedToken();
  if (saved && !useToken(saved)) removeToken();
  showConnection();
  setInterval(() => {
    const now = Date.now();
    for (const card of state.cards.values()) card.tick(now);
  }, TICK_MS);
  load();
}

start();
