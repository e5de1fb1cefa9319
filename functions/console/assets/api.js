// The public API from the browser: JSON calls with the tab's API key, and the one live
// event stream (`GET /v1/events`, server-sent events read through fetch, since
// EventSource cannot send an Authorization header).

const KEY = "troupe.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** `headers` with the bearer credential added, when the tab has one. */
export function withAuth(headers = {}) {
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

/** A refused or failed call: the status, the server's `error.code` and `message`. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

const authListeners = [];

/** `fn(error)` runs whenever a call answers 401. */
export function onUnauthorized(fn) {
  authListeners.push(fn);
}

/** The error of a non-2xx answer; a 401 also tells the listeners. */
export function errorOf(status, body, retryAfter) {
  let json = null;
  try {
    json = typeof body === "string" && body ? JSON.parse(body) : body;
  } catch {
    json = null;
  }
  const e = (json && json.error) || {};
  const message = e.message || (typeof body === "string" && body) || `HTTP ${status}`;
  const err = new ApiError(status, e.code || `http_${status}`, message, retryAfter);
  if (status === 401) authListeners.forEach((fn) => fn(err));
  return err;
}

/** `method path` with a JSON `body`; the answer's JSON, or throws an [`ApiError`]. */
export async function api(method, path, body) {
  const headers = withAuth({ Accept: "application/json" });
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", `The server cannot be reached (${e.message}).`);
  }
  const text = await resp.text();
  if (!resp.ok) throw errorOf(resp.status, text, resp.headers.get("retry-after"));
  return text ? JSON.parse(text) : null;
}

/** A plain sentence for an error, as the console shows it. */
export function describe(err) {
  switch (err.status) {
    case 0:
      return err.message;
    case 401:
      return `Not signed in (401): ${err.message}`;
    case 403:
      return `Not allowed (403): ${err.message}`;
    case 413:
      return err.code === "quota_exceeded"
        ? `Over your storage quota (413): ${err.message}`
        : `Too large (413): ${err.message}`;
    case 415:
      return `Unsupported type (415): ${err.message}`;
    case 429: {
      const wait = err.retryAfter ? ` Retry in ${err.retryAfter} s.` : "";
      return `Too many requests (429): ${err.message}${wait}`;
    }
    default:
      return `Error ${err.status}: ${err.message}`;
  }
}

/** How long the stream may be silent (keep-alives come every ~15 s) before a reconnect. */
const SILENCE_MS = 45000;

/**
 * The one live connection: `GET /v1/events`. `onEvent({id, event, data})` per
 * document event; `onState(state, error)` with `connecting`, `open`, `offline`,
 * `unauthorized` or `forbidden`; `onReady()` when a stream opened without
 * `Last-Event-ID` says where it starts (every event logged after that comes). A
 * reconnect sends the last id seen as `Last-Event-ID`.
 */
export function openStream({ onEvent, onState, onReady }) {
  let lastId = null;
  let ctrl = null;
  let stopped = false;
  let wake = null;
  let quick = false;

  async function connect() {
    ctrl = new AbortController();
    const headers = withAuth({ Accept: "text/event-stream" });
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const resp = await fetch("/v1/events", { headers, signal: ctrl.signal, cache: "no-store" });
    if (!resp.ok || !resp.body) {
      throw errorOf(resp.status, await resp.text(), resp.headers.get("retry-after"));
    }
    onState("open");
    let timer = null;
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(() => ctrl.abort(), SILENCE_MS);
    };
    alive();
    try {
      await readFrames(resp.body, alive, (frame) => {
        if (frame.event === "error") {
          // The server ends the stream after saying why (e.g. the key was revoked).
          const code = (() => {
            try {
              return JSON.parse(frame.data).error.code;
            } catch {
              return "";
            }
          })();
          const status = { unauthorized: 401, forbidden: 403 }[code] || 503;
          throw errorOf(status, frame.data, null);
        }
        if (frame.id !== null) lastId = frame.id;
        if (frame.event === "ready") {
          if (onReady) onReady();
        } else if (frame.data) onEvent(frame);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async function run() {
    let backoff = 1000;
    while (!stopped) {
      onState("connecting");
      const began = Date.now();
      try {
        await connect();
        backoff = 1000;
        // The server ends streams after a while: reconnect at once, resuming.
        if (Date.now() - began > 5000) continue;
      } catch (e) {
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
          onState(e.status === 401 ? "unauthorized" : "forbidden", e);
          await new Promise((resolve) => {
            wake = resolve;
          });
          continue;
        }
      }
      if (stopped) return;
      if (quick) {
        quick = false;
        continue;
      }
      onState("offline");
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, backoff);
      });
      backoff = Math.min(backoff * 2, 15000);
    }
  }

  run();
  return {
    /** Reconnects now (e.g. with a new key), resuming after the last id seen. */
    restart() {
      quick = true;
      if (ctrl) ctrl.abort();
      if (wake) wake();
    },
  };
}

/** Reads `body` as server-sent events: `onFrame({id, event, data})` per frame. */
async function readFrames(body, onBytes, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onBytes();
    buf = (buf + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const frame = { id: null, event: "message", data: "" };
      const data = [];
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "id") frame.id = val;
        else if (field === "event") frame.event = val;
        else if (field === "data") data.push(val);
      }
      frame.data = data.join("\n");
      if (frame.id !== null || data.length) onFrame(frame);
    }
  }
}
