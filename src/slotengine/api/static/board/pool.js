// Live updates: subscriptions shared over as few graphql-transport-ws connections as the server
// allows, each one a client of the graphql-ws package's own browser build. That build is fetched
// from npm at install (src/slotengine/api/vendor.py) and served by the engine under /vendor.

import { endpoint } from "./graphql.js";

const CLIENT_SCRIPT = new URL("../vendor/graphql-ws/umd/graphql-ws.min.js", import.meta.url);
// The server allows 20 operations per connection. It forgets a completed operation a moment
// after it says so, and after we say so: places freed in the last seconds count as taken.
const OPERATIONS_PER_CONNECTION = 18;
const RETIRING_MS = 3000;
const KEEPALIVE_MS = 20000;
const PONG_WAIT_MS = 10000;
const ACK_WAIT_MS = 10000;
// The server closes with 4403 when it refuses the token in connection_init; retrying cannot help.
const FORBIDDEN = 4403;
const NO_PONG = 4408;

let clientFactory = null;

/** graphql-ws's createClient. Its UMD build, run as a module, sets `globalThis.graphqlWs`. */
function loadCreateClient() {
  clientFactory ??= import(CLIENT_SCRIPT.href).then(() => globalThis.graphqlWs.createClient);
  return clientFactory;
}

function isCloseEvent(value) {
  return typeof value === "object" && value !== null && "code" in value && "reason" in value;
}

/** What graphql-ws handed to `error`, in words: GraphQL errors, a close event, or an Error. */
function describe(error) {
  if (Array.isArray(error)) return error.map((e) => e.message).join("; ") || "refused";
  if (isCloseEvent(error)) return `the connection closed (${error.code}${error.reason ? `: ${error.reason}` : ""})`;
  return error?.message || String(error);
}

/** A reconnect delay: doubling from half a second up to 15 s, jittered. */
function retryWait(retries) {
  const delay = Math.min(15000, 500 * 2 ** retries) * (0.75 + Math.random() / 2);
  return new Promise((resolve) => setTimeout(resolve, delay));
}

/** One graphql-ws client, that is one WebSocket; graphql-ws subscribes again after a reconnect. */
class Connection {
  constructor(pool) {
    this.pool = pool;
    this.client = null;
    this.socket = null;
    this.state = "idle"; // idle | connecting | live | reconnecting
    this.active = 0;
    this.retiring = 0;
    this.generation = 0; // one per socket: retiring places of an old socket are not counted
    this.pongTimer = null;
    this.closed = false;
  }

  /** Operations running plus places the server may still count as taken. */
  get load() {
    return this.active + this.retiring;
  }

  status() {
    if (this.state === "live") return "live";
    if (this.active === 0) return "idle";
    return this.state === "reconnecting" ? "reconnecting" : "connecting";
  }

  open(createClient) {
    const url = new URL(endpoint);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return createClient({
      url: url.href,
      connectionParams: { Authorization: `Bearer ${this.pool.token}` },
      keepAlive: KEEPALIVE_MS,
      connectionAckWaitTimeout: ACK_WAIT_MS,
      // Sockets emptied by a reload of the board stay open for the subscriptions that follow.
      lazyCloseTimeout: RETIRING_MS,
      retryAttempts: Infinity,
      retryWait,
      shouldRetry: (event) => isCloseEvent(event) && event.code !== FORBIDDEN,
      on: {
        connecting: (isRetry) => {
          this.generation += 1;
          this.retiring = 0;
          this.setState(isRetry ? "reconnecting" : "connecting");
        },
        opened: (socket) => {
          this.socket = socket;
        },
        connected: () => this.setState("live"),
        // graphql-ws pings every KEEPALIVE_MS; a socket that stops answering is closed and
        // reconnected rather than trusted.
        ping: (received) => {
          if (received) return;
          clearTimeout(this.pongTimer);
          this.pongTimer = setTimeout(() => {
            if (this.socket?.readyState === WebSocket.OPEN) this.socket.close(NO_PONG, "no pong");
          }, PONG_WAIT_MS);
        },
        pong: (received) => {
          if (received) clearTimeout(this.pongTimer);
        },
        closed: (event) => {
          clearTimeout(this.pongTimer);
          if (this.closed) return;
          if (isCloseEvent(event) && event.code === FORBIDDEN) {
            this.pool.refused("The server refused the token.");
            return;
          }
          this.setState(this.active > 0 ? "reconnecting" : "idle");
        },
      },
    });
  }

  setState(state) {
    this.state = state;
    if (!this.closed) this.pool.changed();
  }

  /** Start an operation; the sink gets `next(data)`, `error(message)` and `complete()`. */
  subscribe(query, variables, sink) {
    this.active += 1;
    let ended = false;
    let dispose = null;
    const end = () => {
      if (ended) return false;
      ended = true;
      this.active -= 1;
      this.retire();
      return !this.closed;
    };
    this.pool.ready.then(
      (createClient) => {
        if (ended || this.closed) return;
        this.client ??= this.open(createClient);
        dispose = this.client.subscribe(
          { query, variables },
          {
            next: (result) => {
              if (ended || this.closed) return;
              if (result.errors?.length) {
                dispose();
                if (end()) sink.error(describe(result.errors));
              } else {
                sink.next(result.data);
              }
            },
            error: (error) => {
              if (end()) sink.error(describe(error));
            },
            complete: () => {
              if (end()) sink.complete();
            },
          },
        );
      },
      () => {
        if (end()) sink.error("the live-update client is not installed on the server");
      },
    );
    return () => {
      if (!end()) return;
      dispose?.();
      this.pool.changed();
    };
  }

  retire() {
    const generation = this.generation;
    this.retiring += 1;
    setTimeout(() => {
      if (this.generation === generation) this.retiring -= 1;
    }, RETIRING_MS);
  }

  close() {
    this.closed = true;
    clearTimeout(this.pongTimer);
    // A socket that never opened rejects here; there is nothing left to close then.
    this.client?.dispose().catch(() => {});
  }
}

/** As many connections as the subscriptions need, all with the same token. */
export class LivePool {
  /** `changed()` is called when the status may have changed, `refused(reason)` when the server
   * refuses the token. */
  constructor(token, { changed, refused }) {
    this.token = token;
    this.onChanged = changed;
    this.onRefused = refused;
    this.connections = [];
    this.closed = false;
    this.unavailable = false;
    this.ready = loadCreateClient();
    this.ready.catch(() => {
      this.unavailable = true;
      this.changed();
    });
  }

  /** Start a subscription; returns the function that stops it. */
  subscribe(query, variables, sink) {
    let connection = this.connections.find((c) => c.load < OPERATIONS_PER_CONNECTION);
    if (!connection) {
      connection = new Connection(this);
      this.connections.push(connection);
    }
    const stop = connection.subscribe(query, variables, sink);
    this.changed();
    return stop;
  }

  /** offline | unavailable | idle | connecting | live | reconnecting */
  status() {
    if (this.closed) return "offline";
    if (this.unavailable) return "unavailable";
    const busy = this.connections.map((c) => c.status()).filter((s) => s !== "idle");
    if (busy.length === 0) return "idle";
    if (busy.every((s) => s === "live")) return "live";
    return busy.includes("reconnecting") ? "reconnecting" : "connecting";
  }

  changed() {
    if (!this.closed) this.onChanged();
  }

  refused(reason) {
    if (!this.closed) this.onRefused(reason);
  }

  close() {
    this.closed = true;
    for (const connection of this.connections) connection.close();
    this.connections = [];
  }
}
