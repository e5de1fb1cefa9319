// Small DOM helpers: every text goes in through textContent, never as HTML.

/** An element: `attrs` are attributes (`class`, `text`, `on<event>` are special). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const $ = (selector) => document.querySelector(selector);

/** Says `text` to screen readers (the page's polite live region). */
export function announce(text) {
  $("#announcer").textContent = text;
}

/** Shows `text` in the page's alert line; `null` hides it. */
export function notice(text) {
  const el = $("#notice");
  el.textContent = text || "";
  el.hidden = !text;
}

export function formatBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

/** `troupe.document.indexed.v1` → `document indexed`. */
export function eventName(type) {
  return String(type || "")
    .replace(/^troupe\./, "")
    .replace(/\.v\d+$/, "")
    .replace(/[.-]/g, " ");
}

/** A `<time>` element for an ISO timestamp. */
export function time(iso) {
  return h("time", { datetime: iso, text: formatTime(iso) });
}
