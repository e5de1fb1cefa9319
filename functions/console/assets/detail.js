// One document: its record and its audit trail as a timeline, in event-time order.

import { api, describe } from "./api.js";
import { deleteDocument } from "./documents.js";
import { $, eventName, formatBytes, h, time } from "./dom.js";

let current = null;
let generation = 0;

/** The document the detail view shows, or `null`. */
export function showing() {
  return current;
}

/** Shows document `id` (from the `#/documents/{id}` route). */
export async function show(id) {
  current = id;
  $("#detail-title").textContent = "Document";
  $("#detail-fields").replaceChildren();
  $("#timeline").replaceChildren();
  await refresh();
  $("#detail-title").focus();
}

export function hide() {
  current = null;
}

/** Fetches the shown document's record and trail again. */
export async function refresh() {
  const id = current;
  if (!id) return;
  const mine = ++generation;
  const status = $("#detail-status");
  const path = `/v1/documents/${encodeURIComponent(id)}`;
  try {
    const [doc, events] = await Promise.all([api("GET", path), api("GET", `${path}/events`)]);
    if (mine !== generation) return;
    render(doc, events);
    status.textContent = "";
  } catch (e) {
    if (mine !== generation) return;
    status.textContent = e.status === 404 ? "This document does not exist (or was deleted)." : describe(e);
  }
}

function field(name, value) {
  if (value == null || value === "") return [];
  return [h("dt", {}, name), h("dd", {}, value)];
}

function render(doc, events) {
  const name = doc.name || doc.id;
  $("#detail-title").textContent = name;
  const p = doc.progress;
  $("#detail-fields").replaceChildren(
    ...field("Status", h("span", { class: `badge ${doc.status}` }, doc.status)),
    ...field("Failed because", doc.error && `${doc.error.message || ""} (${doc.error.code})`),
    ...field("Progress", p && p.total ? `${p.done}/${p.total} batches` : null),
    ...field("Chunks", doc.chunks != null ? String(doc.chunks) : null),
    ...field("Type", doc.content_type),
    ...field("Size", doc.size != null ? formatBytes(doc.size) : null),
    ...field("Pages", doc.pages != null ? String(doc.pages) : null),
    ...field("Title", doc.title),
    ...field("Created", doc.created_at && time(doc.created_at)),
    ...field("Updated", doc.updated_at && time(doc.updated_at)),
    ...field("SHA-256", doc.sha256 && h("code", {}, doc.sha256)),
    ...field("Trace id", doc.trace_id && h("code", {}, doc.trace_id)),
    ...field("Id", h("code", {}, doc.id)),
  );
  if (doc.status !== "deleted") {
    $("#detail-fields").append(
      h("dt", {}, "Actions"),
      h("dd", {}, h("button", {
        type: "button",
        class: "danger",
        text: "Delete",
        "aria-label": `Delete ${name}`,
        onclick: () => deleteDocument(doc.id, name),
      })),
    );
  }
  const ordered = [...events].sort((a, b) => String(a.time).localeCompare(String(b.time)));
  $("#timeline").replaceChildren(
    ...ordered.map((e) => h(
      "li",
      { "data-type": e.type },
      time(e.time),
      h("span", { class: "event" }, eventName(e.type)),
      summary(e),
    )),
  );
}

/** A short line about what an event says, when it says more than its type. */
function summary(e) {
  const d = e.data || {};
  const parts = [];
  if (d.batch != null && d.of != null) parts.push(`batch ${d.batch} of ${d.of}`);
  if (d.chunks != null) parts.push(`${d.chunks} chunks`);
  if (d.pages != null) parts.push(`${d.pages} pages`);
  if (d.code) parts.push(`${d.code}${d.stage ? ` in ${d.stage}` : ""}`);
  if (d.message) parts.push(String(d.message));
  if (d.cause) parts.push(`after ${d.cause}`);
  return parts.length ? h("span", { class: "muted" }, parts.join(" · ")) : null;
}
