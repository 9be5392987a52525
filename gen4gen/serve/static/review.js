// Review: a paginated grid of final images with filters, a detail panel, keyboard-first decisions.
// Every decision is POSTed at once (the server appends it to the review file before answering);
// undo posts the state the item had before. Filters, page and selection live in the URL's hash,
// so a reload comes back to the same place.
"use strict";

const grid = document.getElementById("grid");
const form = document.getElementById("filters");
const detail = document.getElementById("detail");
const statusLine = document.getElementById("status-line");
const pageSize = Number(grid.dataset.pageSize) || 60;
const LABEL = {keep: "kept", reject: "rejected", unreviewed: "unreviewed", changed: "changed since review"};
const FILTERS = ["scene", "concept", "flag", "status", "q"];
let state = {offset: 0, sel: 0, total: 0, items: [], open: false};
const undoStack = [];

const itemPath = (id) => id.split("/").map(encodeURIComponent).join("/");

function readHash() {
  const h = new URLSearchParams(location.hash.slice(1));
  for (const f of FILTERS) form.elements[f].value = h.get(f) || "";
  state.offset = Math.max(0, Number(h.get("offset")) || 0);
  state.sel = Math.max(0, Number(h.get("sel")) || 0);
  state.open = h.get("open") === "1";
}

function writeHash() {
  const h = new URLSearchParams();
  for (const f of FILTERS) if (form.elements[f].value) h.set(f, form.elements[f].value);
  if (state.offset) h.set("offset", state.offset);
  if (state.sel) h.set("sel", state.sel);
  if (state.open) h.set("open", "1");
  history.replaceState(null, "", "#" + h.toString());
}

function say(text, bad) {
  statusLine.textContent = text;
  statusLine.classList.toggle("bad", !!bad);
}

async function loadFacets() {
  const f = await api("/api/facets");
  for (const name of ["scene", "concept", "flag"]) {
    const select = form.elements[name];
    const keep = select.value;
    select.replaceChildren(select.options[0]);
    for (const v of f[name]) select.append(el("option", {value: v}, v));
    select.value = keep;
  }
  const s = f.status;
  document.getElementById("counts").textContent =
    `${f.total} images · ${s.keep || 0} kept · ${s.reject || 0} rejected · ${s.unreviewed || 0} unreviewed` +
    (s.changed ? ` · ${s.changed} changed since review` : "") + (f.left_out ? ` · ${f.left_out} incomplete (not shown)` : "");
}

async function loadPage(selectLast) {
  const q = new URLSearchParams({offset: state.offset, limit: pageSize});
  for (const f of FILTERS) if (form.elements[f].value) q.set(f, form.elements[f].value);
  const page = await api("/api/items?" + q);
  state.total = page.total;
  state.items = page.items;
  if (state.offset >= page.total && page.total > 0) {  // a filter shrank the list under the page
    state.offset = Math.floor((page.total - 1) / pageSize) * pageSize;
    return loadPage(selectLast);
  }
  grid.replaceChildren(...page.items.map(card));
  if (!page.items.length) grid.append(el("p", {class: "empty"}, "No image matches these filters."));
  const end = Math.min(state.offset + pageSize, page.total);
  document.getElementById("range").textContent = page.total ? `${state.offset + 1}–${end} of ${page.total}` : "0 of 0";
  state.sel = selectLast ? page.items.length - 1 : Math.min(state.sel, Math.max(0, page.items.length - 1));
  select(state.sel);
}

function card(item, idx) {
  const c = el("div", {class: `card st-${item.status}`, dataset: {idx: String(idx)}, tabindex: "-1"}, [
    el("div", {class: "thumb"}, [el("img", {src: item.thumbnail, alt: item.id, loading: "lazy", width: 256, height: 256})]),
    el("div", {class: "meta"}, [
      el("span", {class: `badge st-${item.status}`}, LABEL[item.status]),
      item.edited.length ? el("span", {class: "badge edited", title: "captions edited: " + item.edited.join(", ")}, "edited") : null,
      el("span", {class: "cid", title: item.id}, [el("span", {class: "comp"}, item.composition.split("/").pop()),
        el("span", {class: "var"}, "/" + item.variant)]),
    ]),
    el("div", {class: "concepts"}, item.concepts.join(" · ")),
    el("p", {class: "caption", title: item.captions.detailed}, item.captions.short),
    item.flags.length ? el("div", {class: "cflags"}, item.flags.join(" · ")) : null,
  ]);
  c.addEventListener("click", () => { select(idx); });
  c.addEventListener("dblclick", () => { select(idx); openDetail(); });
  return c;
}

function select(idx) {
  if (!state.items.length) { writeHash(); return; }
  state.sel = Math.max(0, Math.min(idx, state.items.length - 1));
  grid.querySelectorAll(".card.sel").forEach((n) => n.classList.remove("sel"));
  const node = grid.querySelector(`.card[data-idx="${state.sel}"]`);
  if (node) { node.classList.add("sel"); node.scrollIntoView({block: "nearest"}); }
  writeHash();
  if (state.open) showDetail();
}

async function move(delta) {
  const next = state.sel + delta;
  if (next >= 0 && next < state.items.length) return select(next);
  if (delta > 0 && state.offset + pageSize < state.total) { state.offset += pageSize; state.sel = 0; return loadPage(false); }
  if (delta < 0 && state.offset > 0) { state.offset = Math.max(0, state.offset - pageSize); return loadPage(true); }
}

function columns() {
  const cards = grid.querySelectorAll(".card");
  if (cards.length < 2) return 1;
  const top = cards[0].offsetTop;
  let n = 0;
  while (n < cards.length && cards[n].offsetTop === top) n++;
  return n;
}

function current() { return state.items[state.sel]; }

async function send(item, status, captions, remember) {
  const before = {id: item.id, status: item.status === "changed" ? "unreviewed" : item.status, captions: item.captions};
  const updated = await postJSON(`/api/items/${itemPath(item.id)}/review`, captions ? {status, captions} : {status});
  if (remember) undoStack.push(before);
  replace(updated);
  loadFacets();
  return updated;
}

function replace(updated) {
  const idx = state.items.findIndex((it) => it.id === updated.id);
  if (idx < 0) return;
  state.items[idx] = updated;
  const node = grid.querySelector(`.card[data-idx="${idx}"]`);
  const fresh = card(updated, idx);
  if (idx === state.sel) fresh.classList.add("sel");
  node.replaceWith(fresh);
  if (state.open && idx === state.sel) showDetail();
}

async function decide(status) {
  const item = current();
  if (!item) return;
  try {
    await send(item, status, null, true);
    say(`${item.id}: ${LABEL[status]}`);
    await move(1);
  } catch (e) { say(`not saved: ${e.message}`, true); }
}

async function undo() {
  const last = undoStack.pop();
  if (!last) return say("nothing to undo");
  try {
    const updated = await postJSON(`/api/items/${itemPath(last.id)}/review`, {status: last.status, captions: last.captions});
    replace(updated);
    const idx = state.items.findIndex((it) => it.id === last.id);
    if (idx >= 0) select(idx);
    loadFacets();
    say(`undone: ${last.id} is ${LABEL[updated.status]} again`);
  } catch (e) { undoStack.push(last); say(`undo failed: ${e.message}`, true); }
}

// ------------------------------------------------------------------ detail panel
const $ = (id) => document.getElementById(id);

function openDetail() { if (current()) { state.open = true; detail.hidden = false; document.body.classList.add("with-detail"); writeHash(); showDetail(); } }
function closeDetail() { state.open = false; detail.hidden = true; document.body.classList.remove("with-detail"); writeHash(); select(state.sel); }

let shown = null;
async function showDetail() {
  const item = current();
  if (!item) return;
  const want = item.id;
  shown = want;
  const d = await api(`/api/items/${itemPath(item.id)}/detail`);
  if (shown !== want) return;  // the selection moved on while this loaded
  $("d-title").textContent = d.id;
  $("d-status").textContent = LABEL[d.status];
  $("d-status").className = `badge st-${d.status}`;
  $("d-image").src = d.image;
  $("d-image").alt = d.id;
  $("d-overlay").src = d.overlay;
  $("d-overlay").hidden = !$("t-masks").checked;
  $("d-boxes").hidden = !$("t-boxes").checked;
  $("d-boxes").replaceChildren(...d.objects.map((o) => {
    const b = el("div", {class: "box"}, [el("span", {class: "label"}, `${o.name} (${o.concept})`)]);
    Object.assign(b.style, {left: o.box_pct[0] + "%", top: o.box_pct[1] + "%", width: o.box_pct[2] + "%",
      height: o.box_pct[3] + "%", borderColor: o.colour});
    b.firstChild.style.background = o.colour;
    return b;
  }));
  $("d-composed").src = d.composed;
  $("d-size").textContent = `${d.size[0]}×${d.size[1]}`;
  $("d-background").textContent = d.background ? `background: ${d.background}` : "";
  $("d-objects").replaceChildren(...d.objects.map((o) => {
    const sw = el("span", {class: "swatch"});
    sw.style.background = o.colour;
    return el("tr", {}, [el("td", {}, [sw]), el("td", {}, o.name), el("td", {}, o.concept), el("td", {}, o.box.join(", ")),
      el("td", {}, o.visible_fraction === null ? "–" : Math.round(100 * o.visible_fraction) + " %"), el("td", {}, o.z)]);
  }));
  $("d-sources").replaceChildren(...d.sources.map((s) => el("figure", {}, [
    s.url ? el("img", {src: s.url, alt: `${s.name} source cut-out`}) : el("div", {class: "missing"}, "no cut-out"),
    el("figcaption", {}, `${s.name} · ${s.concept}`)])));
  $("d-flags").replaceChildren(...(d.flags.length ? d.flags : ["none"]).map((f) => el("li", {}, f)));
  $("d-variants").replaceChildren(...d.variants.map((v) => {
    const fig = el("figure", {class: `variant st-${v.status}` + (v.id === d.id ? " this" : "")}, [
      el("img", {src: v.image, alt: v.id}), el("figcaption", {}, `${v.variant} · ${LABEL[v.status]}`)]);
    return fig;
  }));
  const fields = [["short", 2], ["detailed", 4], ["personalized", 3]].map(([k, rows]) => el("label", {}, [
    el("span", {class: "ck"}, k + (d.edited.includes(k) ? " (edited)" : "")),
    el("textarea", {name: k, rows: rows, spellcheck: "true"}, d.captions[k]),
    d.edited.includes(k) ? el("span", {class: "muted orig"}, "s4 wrote: " + d.original_captions[k]) : null]));
  $("d-captions").replaceChildren(...fields, el("div", {class: "cap-actions"}, [
    el("button", {type: "submit"}, "save captions"), el("span", {class: "muted"}, "Ctrl+Enter saves · Esc leaves the field")]));
}

$("d-captions").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const item = current();
  const captions = {};
  for (const k of ["short", "detailed", "personalized"]) captions[k] = ev.target.elements[k].value;
  const status = item.status === "changed" ? "unreviewed" : item.status;
  try {
    await send(item, status, captions, true);
    say(`${item.id}: captions saved`);
    document.activeElement.blur();
  } catch (e) { say(`captions not saved: ${e.message}`, true); }
});
$("d-captions").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); ev.currentTarget.requestSubmit(); }
  if (ev.key === "Escape") { ev.preventDefault(); document.activeElement.blur(); }
});
$("t-masks").addEventListener("change", (e) => { $("d-overlay").hidden = !e.target.checked; });
$("t-boxes").addEventListener("change", (e) => { $("d-boxes").hidden = !e.target.checked; });
$("d-close").addEventListener("click", closeDetail);
$("d-keep").addEventListener("click", () => decide("keep"));
$("d-reject").addEventListener("click", () => decide("reject"));
$("prev-page").addEventListener("click", () => { if (state.offset > 0) { state.offset = Math.max(0, state.offset - pageSize); state.sel = 0; loadPage(false); } });
$("next-page").addEventListener("click", () => { if (state.offset + pageSize < state.total) { state.offset += pageSize; state.sel = 0; loadPage(false); } });

function toggle(id) { const box = $(id); box.checked = !box.checked; box.dispatchEvent(new Event("change")); }

const KEYS = {
  k: () => decide("keep"), x: () => decide("reject"), u: () => decide("unreviewed"), z: undo,
  n: () => move(1), ArrowRight: () => move(1), p: () => move(-1), ArrowLeft: () => move(-1),
  ArrowDown: () => move(state.open ? 1 : columns()), ArrowUp: () => move(state.open ? -1 : -columns()),
  Enter: openDetail, Escape: closeDetail, m: () => toggle("t-masks"), b: () => toggle("t-boxes"),
  "[": () => $("prev-page").click(), "]": () => $("next-page").click(),
  e: () => { if (!state.open) openDetail(); setTimeout(() => { const t = document.querySelector("#d-captions textarea"); if (t) t.focus(); }, 150); },
};
document.addEventListener("keydown", (ev) => {
  if (typing(ev) || ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const action = KEYS[ev.key];
  if (action) { ev.preventDefault(); action(); }
});

let debounce = null;
form.addEventListener("input", () => {
  clearTimeout(debounce);
  debounce = setTimeout(() => { state.offset = 0; state.sel = 0; loadPage(false); }, 200);
});
form.addEventListener("submit", (ev) => ev.preventDefault());

readHash();
loadFacets().then(() => { readHash(); return loadPage(false); }).then(() => { if (state.open) openDetail(); })
  .catch((e) => say(`cannot load the items: ${e.message}`, true));
