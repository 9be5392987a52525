// Model search: a text query (GET /api/search?text=) or an uploaded image (POST /api/search), the
// ranked models with their sample images.
"use strict";

const searchForm = document.getElementById("search-form");
const results = document.getElementById("s-results");
const notes = document.getElementById("s-notes");

function show(out) {
  notes.replaceChildren(el("p", {class: "muted"}, `${out.kind} query, ${out.method} over ${out.n_models} models`),
    ...out.notes.map((n) => el("p", {class: "note"}, n)));
  results.replaceChildren(...out.results.map((h) => el("li", {class: "hit"}, [
    el("div", {class: "hit-head"}, [el("span", {class: "rank"}, "#" + h.rank), el("span", {class: "model"}, h.model),
      el("span", {class: "score muted"}, "score " + fmt(h.score))]),
    el("div", {class: "samples"}, h.samples.length ? h.samples.map((u) => el("img", {src: u, alt: `${h.model} sample`, loading: "lazy"}))
      : [el("span", {class: "muted"}, "no sample images")]),
  ])));
  if (!out.results.length) results.append(el("li", {class: "muted"}, "no model matched"));
}

searchForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = document.getElementById("s-text").value.trim();
  const file = document.getElementById("s-image").files[0];
  notes.replaceChildren(el("p", {class: "muted"}, "searching…"));
  try {
    if (file) {
      const body = new FormData();
      body.append("image", file);
      show(await api("/api/search", {method: "POST", body}));
    } else if (text) {
      show(await api("/api/search?" + new URLSearchParams({text})));
    } else {
      notes.replaceChildren(el("p", {}, "type a query or choose an image"));
    }
  } catch (e) { notes.replaceChildren(el("p", {class: "bad"}, e.message)); results.replaceChildren(); }
});
document.getElementById("s-image").addEventListener("change", () => { if (document.getElementById("s-image").files.length) searchForm.requestSubmit(); });
