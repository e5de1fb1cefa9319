// Search: hits best first, each with its document's name, score and the chunk's text
// with the query's terms marked.

import { api, describe } from "./api.js";
import { $, h } from "./dom.js";

const K = 10;

export function setup() {
  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search($("#query").value.trim());
  });
}

/** Runs `query` (again) and shows its hits. */
export async function search(query) {
  const status = $("#search-status");
  const list = $("#hits");
  if (!query) return;
  status.textContent = "Searching…";
  try {
    const { hits } = await api("POST", "/v1/search", { query, k: K });
    list.replaceChildren(...hits.map((hit) => render(hit, query)));
    status.textContent = hits.length
      ? `${hits.length} ${hits.length === 1 ? "match" : "matches"} for “${query}”.`
      : `No matches for “${query}”.`;
  } catch (e) {
    list.replaceChildren();
    status.textContent = describe(e);
  }
}

/** Takes the hits of a deleted document away. */
export function drop(id) {
  for (const li of [...$("#hits").children]) if (li.dataset.document === id) li.remove();
}

function render(hit, query) {
  return h(
    "li",
    { class: "hit", "data-document": hit.document_id },
    h(
      "a",
      { href: `#/documents/${encodeURIComponent(hit.document_id)}` },
      h("span", { class: "hit-name" }, hit.name || hit.document_id),
      h("span", { class: "score" }, `score ${Number(hit.score).toFixed(3)}`),
    ),
    h("p", { class: "hit-text" }, highlight(hit.text || "", query)),
  );
}

/** Words too common to be worth marking (unless the query has nothing else). */
const COMMON = new Set(
  "a an and are as at be by do does for from how in is it of on or the to was what when where which who why with".split(" "),
);

/** The query's words (two letters or more), longest first, for one pattern. */
function terms(query) {
  const words = [...new Set(query.toLowerCase().match(/[\p{L}\p{N}]{2,}/gu) || [])];
  const telling = words.filter((w) => !COMMON.has(w));
  return (telling.length ? telling : words).sort((a, b) => b.length - a.length);
}

/** `text` as text nodes, with each occurrence of a query term in a `<mark>`. */
export function highlight(text, query) {
  const words = terms(query);
  const frag = document.createDocumentFragment();
  if (!words.length) {
    frag.append(text);
    return frag;
  }
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  // At the start of a word: "glacier" marks "glaciers", "by" does not mark "nearby".
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(${escaped.join("|")})`, "giu");
  text.split(pattern).forEach((part, i) => {
    if (!part) return;
    frag.append(i % 2 ? h("mark", {}, part) : document.createTextNode(part));
  });
  return frag;
}
