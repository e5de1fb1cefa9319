// The tenant's documents: a page at a time, newest first, each row kept current by
// the live stream (or, while it is down, by polling the unsettled ones).

import { api, describe } from "./api.js";
import { $, announce, formatBytes, h, notice, time } from "./dom.js";

const PAGE = 20;
/** id → { doc, el } for every row shown. */
const rows = new Map();
let nextCursor = null;
let loaded = false;
const listeners = [];

/** `fn(doc)` runs whenever a document's record changes (`null` doc: removed). */
export function onChange(fn) {
  listeners.push(fn);
}

export function isSettled(doc) {
  return doc.status === "indexed" || doc.status === "failed";
}

/** The ids of the rows whose documents are still being worked on. */
export function unsettled() {
  return [...rows.values()].filter((r) => !isSettled(r.doc)).map((r) => r.doc.id);
}

/** The first page again (after a new key: everything shown may belong to another tenant). */
export async function reload() {
  rows.clear();
  $("#docs").replaceChildren();
  nextCursor = null;
  loaded = false;
  await loadPage();
}

/** The first page read again and merged into what is shown (nothing is cleared). */
export async function recheck() {
  try {
    const page = await api("GET", `/v1/documents?limit=${PAGE}`);
    for (const doc of page.documents) upsert(doc, true);
  } catch (e) {
    if (e.status !== 401) notice(describe(e));
  }
}

/** The next page (the first when none is loaded yet). */
export async function loadPage() {
  const more = $("#more");
  more.disabled = true;
  const status = $("#docs-status");
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (nextCursor) query.set("cursor", nextCursor);
  try {
    const page = await api("GET", `/v1/documents?${query}`);
    for (const doc of page.documents) upsert(doc, true);
    nextCursor = page.next_cursor || null;
    loaded = true;
    status.textContent = rows.size ? "" : "No documents yet: upload one above.";
  } catch (e) {
    status.textContent = describe(e);
  } finally {
    more.hidden = !nextCursor;
    more.disabled = false;
  }
}

/** Fetches one document's record again and shows it (404: it is gone). */
export async function refresh(id) {
  try {
    upsert(await api("GET", `/v1/documents/${encodeURIComponent(id)}`), false);
  } catch (e) {
    if (e.status === 404) remove(id);
    else if (e.status !== 401) notice(describe(e));
  }
}

/** Shows `doc` (a record as the API gives it): a new row in order, or the row updated. */
export function upsert(doc, fromList) {
  if (doc.status === "deleted") {
    remove(doc.id);
    return;
  }
  const known = rows.get(doc.id);
  if (!known && !fromList && nextCursor && loaded && older(doc)) return;
  const el = row(doc);
  if (known) {
    known.el.replaceWith(el);
    if (known.doc.status !== doc.status) announce(`${doc.name}: ${doc.status}`);
  } else {
    insert(el, doc);
    if (!fromList) announce(`${doc.name}: ${doc.status}`);
  }
  rows.set(doc.id, { doc, el });
  $("#docs-status").textContent = "";
  listeners.forEach((fn) => fn(doc));
}

/** Takes a document's row away. */
export function remove(id) {
  const known = rows.get(id);
  if (known) {
    known.el.remove();
    rows.delete(id);
    announce(`${known.doc.name}: deleted`);
  }
  if (loaded && !rows.size) $("#docs-status").textContent = "No documents yet: upload one above.";
  listeners.forEach((fn) => fn(null, id));
}

/** The record shown for `id`, if any. */
export function shown(id) {
  return rows.get(id)?.doc;
}

function key(doc) {
  return `${doc.created_at || ""}\n${doc.id}`;
}

/** Whether `doc` sorts after every loaded row (a later page will bring it). */
function older(doc) {
  let oldest = null;
  for (const r of rows.values()) if (oldest === null || key(r.doc) < oldest) oldest = key(r.doc);
  return oldest !== null && key(doc) < oldest;
}

function insert(el, doc) {
  const list = $("#docs");
  const k = key(doc);
  for (const other of list.children) {
    const r = rows.get(other.dataset.id);
    if (r && key(r.doc) < k) {
      list.insertBefore(el, other);
      return;
    }
  }
  list.append(el);
}

function progress(doc) {
  const p = doc.progress;
  if (!p || !p.total) return null;
  return h("span", { class: "progress" }, `${p.done}/${p.total} batches`);
}

function row(doc) {
  const name = doc.name || doc.id;
  const facts = [
    progress(doc),
    doc.size != null && h("span", {}, formatBytes(doc.size)),
    doc.content_type && h("span", {}, doc.content_type),
    doc.pages != null && h("span", {}, `${doc.pages} ${doc.pages === 1 ? "page" : "pages"}`),
    doc.created_at && time(doc.created_at),
  ].filter(Boolean);
  const reason = doc.status === "failed" && doc.error
    ? h("p", { class: "error" }, `Failed: ${doc.error.message || doc.error.code} (${doc.error.code})`)
    : null;
  return h(
    "li",
    { class: "doc", "data-id": doc.id, "data-status": doc.status },
    h(
      "div",
      { class: "doc-head" },
      h("a", { class: "doc-name", href: `#/documents/${encodeURIComponent(doc.id)}` }, name),
      h("span", { class: `badge ${doc.status}` }, doc.status),
    ),
    h("p", { class: "facts" }, facts),
    reason,
    h("button", {
      type: "button",
      class: "danger",
      "aria-label": `Delete ${name}`,
      text: "Delete",
      onclick: () => deleteDocument(doc.id, name),
    }),
  );
}

/** Deletes a document after the user confirms. */
export async function deleteDocument(id, name) {
  if (!window.confirm(`Delete “${name}”? Its file, chunks and vectors are removed.`)) return;
  try {
    await api("DELETE", `/v1/documents/${encodeURIComponent(id)}`);
    remove(id);
    notice(null);
    if (location.hash.startsWith("#/documents/")) location.hash = "#/";
  } catch (e) {
    notice(describe(e));
  }
}
