// Uploads: several files at once (picker or drop), each with its own progress bar and
// the server's answer in words.

import { describe, errorOf, withAuth } from "./api.js";
import { $, announce, formatBytes, h } from "./dom.js";

/** The types the API reads. */
const TYPES = ["text/plain", "text/markdown", "text/html", "application/pdf"];
/** Names the API reads whatever the browser calls their type (sent as octet-stream). */
const NAMES = /\.(txt|text|log|md|markdown|html?|pdf)$/i;

/** The type to send: the browser's when the API reads it, else octet-stream for a name
 * the API knows, else the browser's (which the API refuses with its own words). */
function typeOf(file) {
  if (TYPES.includes(file.type)) return file.type;
  if (NAMES.test(file.name) || !file.type) return "application/octet-stream";
  return file.type;
}

/** `onUploaded(id)` runs for each file the server accepted. */
export function setup(onUploaded) {
  const input = $("#file");
  input.addEventListener("change", () => {
    uploadAll(input.files, onUploaded);
    input.value = "";
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    uploadAll(ev.dataTransfer.files, onUploaded);
  });
  // A file dropped beside the zone must not replace the console with itself.
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
}

function uploadAll(files, onUploaded) {
  for (const file of files) upload(file, onUploaded);
}

function upload(file, onUploaded) {
  const bar = h("progress", { max: 100, value: 0, "aria-label": `Uploading ${file.name}` });
  const status = h("span", { class: "upload-status" }, "Uploading…");
  const li = h(
    "li",
    { class: "upload", "data-name": file.name },
    h("span", { class: "upload-name" }, file.name),
    h("span", { class: "muted" }, formatBytes(file.size)),
    bar,
    status,
  );
  $("#uploads").prepend(li);
  const done = (state, text) => {
    li.dataset.state = state;
    status.textContent = text;
    announce(`${file.name}: ${text}`);
  };
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/v1/documents?name=${encodeURIComponent(file.name)}`);
  const type = typeOf(file);
  for (const [k, v] of Object.entries(withAuth({ "Content-Type": type, Accept: "application/json" }))) {
    xhr.setRequestHeader(k, v);
  }
  xhr.upload.addEventListener("progress", (ev) => {
    if (ev.lengthComputable) bar.value = Math.round((ev.loaded / ev.total) * 100);
  });
  xhr.addEventListener("load", () => {
    if (xhr.status >= 200 && xhr.status < 300) {
      bar.value = 100;
      let id = null;
      try {
        id = JSON.parse(xhr.responseText).id;
      } catch {
        id = null;
      }
      done("done", "Uploaded.");
      if (id) onUploaded(id);
    } else {
      bar.value = 0;
      const err = errorOf(xhr.status, xhr.responseText, xhr.getResponseHeader("retry-after"));
      done("error", describe(err));
      li.classList.add("failed");
    }
  });
  xhr.addEventListener("error", () => done("error", "The server cannot be reached; the file was not uploaded."));
  xhr.send(file);
}
