// The console's entry: the list and the live stream at once (what changed between the
// list's read and the stream's start is read again once the stream is open); routing
// between the home view and a document's detail (`#/documents/{id}`); the API-key prompt.

import { describe, onUnauthorized, openStream, setApiKey } from "./api.js";
import * as detail from "./detail.js";
import * as documents from "./documents.js";
import { $, notice } from "./dom.js";
import * as search from "./search.js";
import * as upload from "./upload.js";

/** How often rows still being worked on are fetched while the stream is down. */
const POLL_MS = 3000;

let live = "connecting";
const pending = new Set();
let flush = null;

/** Fetches the records of the documents events named, a burst at a time. */
function touched(id) {
  pending.add(id);
  if (flush) return;
  flush = setTimeout(() => {
    flush = null;
    const ids = [...pending];
    pending.clear();
    ids.forEach((one) => documents.refresh(one));
    if (ids.includes(detail.showing())) detail.refresh();
  }, 100);
}

/** A document's deletion arrived: its row goes at once, and its record is not asked
 * for (it is forgotten once its deletion is compensated, and a read then is a 404). */
function gone(id) {
  pending.delete(id);
  documents.remove(id);
  if (detail.showing() === id) detail.refresh();
}

const LIVE_TEXT = {
  connecting: "Connecting…",
  open: "Live",
  offline: "Reconnecting…",
  unauthorized: "Needs an API key",
  forbidden: "Not allowed",
};

function setLive(state) {
  live = state;
  const el = $("#live");
  el.dataset.state = state;
  el.textContent = LIVE_TEXT[state] || state;
}

function showAuth(message) {
  const panel = $("#auth");
  $("#auth-message").textContent = message || "";
  if (!panel.hidden) return;
  panel.hidden = false;
  const input = $("#auth-key");
  input.value = "";
  input.focus();
}

function route() {
  const m = location.hash.match(/^#\/documents\/([^/]+)$/);
  const home = $("#home");
  if (m) {
    home.hidden = true;
    $("#detail").hidden = false;
    detail.show(decodeURIComponent(m[1]));
  } else {
    detail.hide();
    $("#detail").hidden = true;
    if (home.hidden) {
      home.hidden = false;
      $("#main").focus();
    }
  }
}

function start() {
  onUnauthorized((err) => showAuth(describe(err)));
  // The first page does not wait for the stream: it is drawn as soon as it comes, and
  // once the stream says where it starts (`ready`) the page and the unsettled rows are
  // read again, which covers anything that changed before that.
  const listed = documents.loadPage().then(() => {
    window.__consoleReady = performance.now();
    document.documentElement.dataset.ready = "true";
  });
  let caughtUp = false;
  const stream = openStream({
    onEvent(frame) {
      let event = null;
      try {
        event = JSON.parse(frame.data);
      } catch {
        return;
      }
      if (!event || !event.subject) return;
      if (event.type === "troupe.document.deleted.v1") gone(event.subject);
      else touched(event.subject);
    },
    onState(state, err) {
      setLive(state);
      if (state === "forbidden") notice(describe(err));
    },
    onReady() {
      if (caughtUp) return;
      caughtUp = true;
      listed.then(() => documents.recheck()).then(() => documents.unsettled().forEach(touched));
    },
  });

  documents.onChange((doc, id) => {
    if (!doc) search.drop(id);
  });
  upload.setup((id) => documents.refresh(id));
  search.setup();
  $("#more").addEventListener("click", () => documents.loadPage());
  $("#key-button").addEventListener("click", () => showAuth(""));
  $("#auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    setApiKey($("#auth-key").value.trim());
    $("#auth").hidden = true;
    notice(null);
    stream.restart();
    documents.reload();
    if (detail.showing()) detail.refresh();
  });
  setInterval(() => {
    if (live === "offline" && !document.hidden) documents.unsettled().forEach(touched);
  }, POLL_MS);
  window.addEventListener("hashchange", route);
  route();
}

start();
