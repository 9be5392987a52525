// Leaderboard: sortable metric columns per model or per category, user-set metric weights with a live
// ranking (each metric min-max normalised over the rows shown, flipped where lower is better, then
// weighted and summed, as GEMRec ranks models), the Pareto plot, and the prompt x model image grid.
"use strict";

const table = document.getElementById("lb");
const groupSelect = document.getElementById("lb-group");
let data = null;
let sortKey = "score";
let sortDesc = true;
const weights = {};

function score(rows) {
  const norm = {};
  for (const m of data.metrics) {
    const xs = rows.map((r) => r[m.key]).filter((v) => v !== null && v !== undefined);
    const lo = Math.min(...xs), hi = Math.max(...xs);
    norm[m.key] = (v) => (v === null || v === undefined || hi === lo) ? 0 : (m.higher_better ? (v - lo) / (hi - lo) : (hi - v) / (hi - lo));
  }
  for (const r of rows) r.score = data.metrics.reduce((s, m) => s + (weights[m.key] || 0) * norm[m.key](r[m.key]), 0);
  const ranked = [...rows].sort((a, b) => b.score - a.score || a.model.localeCompare(b.model));
  ranked.forEach((r, i) => { r.rank = i + 1; });
}

function render() {
  const group = groupSelect.value;
  const rows = data[group].map((r) => Object.assign({}, r));
  score(rows);
  const key = sortKey;
  rows.sort((a, b) => {
    const va = a[key], vb = b[key];
    if (va === vb) return a.model.localeCompare(b.model);
    if (va === null || va === undefined) return 1;
    if (vb === null || vb === undefined) return -1;
    const c = typeof va === "string" ? va.localeCompare(vb) : va - vb;
    return sortDesc ? -c : c;
  });
  const cols = [["rank", "#"], ["model", "model"]];
  if (group === "categories") cols.push(["set", "set"], ["category", "category"]);
  cols.push(["n", "images"], ...data.metrics.map((m) => [m.key, m.label + (m.higher_better ? " ↑" : " ↓")]), ["score", "score"]);
  const head = el("tr", {}, cols.map(([k, label]) => {
    const th = el("th", {class: "sortable" + (k === sortKey ? (sortDesc ? " desc" : " asc") : ""), dataset: {key: k}, title: "sort"}, label);
    th.addEventListener("click", () => { sortDesc = k === sortKey ? !sortDesc : !["model", "set", "category", "rank"].includes(k); sortKey = k; render(); });
    return th;
  }));
  const wrow = el("tr", {class: "weights"}, cols.map(([k]) => {
    const m = data.metrics.find((x) => x.key === k);
    if (!m) return el("th", {}, k === "model" ? "weights →" : "");
    const input = el("input", {type: "number", step: "0.1", min: "-5", max: "5", value: weights[k] || 0, "aria-label": `weight of ${m.label}`, dataset: {metric: k}});
    input.addEventListener("input", () => { weights[k] = Number(input.value) || 0; render(); });
    return el("th", {}, [input]);
  }));
  table.tHead.replaceChildren(head, wrow);
  table.tBodies[0].replaceChildren(...rows.map((r) => el("tr", {}, cols.map(([k]) =>
    el("td", {class: typeof r[k] === "number" ? "num" : ""}, k === "rank" || k === "n" ? r[k] : fmt(r[k]))))));
  const focus = table.tHead.querySelector(`input[data-metric="${document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.metric : ""}"]`);
  if (focus && focus !== document.activeElement) focus.focus();
}

const tick = (v) => String(Number(v.toPrecision(3)));  // 0.68, 1.84, 31.6: axis labels, not table figures

function pareto(p) {
  const svg = document.getElementById("pareto");
  const NS = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs, text) => { const n = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v); if (text !== undefined) n.textContent = text; return n; };
  svg.replaceChildren();
  if (!p || !p.points.length) { svg.append(mk("text", {x: 20, y: 40}, "no model has both a quality and a cost")); return; }
  const W = 480, H = 320, L = 56, R = 16, T = 16, B = 44;
  const xs = p.points.map((q) => q.x), ys = p.points.map((q) => q.y);
  const pad = (lo, hi) => hi === lo ? [lo - 1, hi + 1] : [lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo)];
  const [x0, x1] = pad(Math.min(...xs), Math.max(...xs)), [y0, y1] = pad(Math.min(...ys), Math.max(...ys));
  const X = (v) => L + (v - x0) / (x1 - x0) * (W - L - R), Y = (v) => H - B - (v - y0) / (y1 - y0) * (H - T - B);
  svg.append(mk("rect", {x: L, y: T, width: W - L - R, height: H - T - B, class: "plot-bg"}));
  for (let i = 0; i <= 4; i++) {
    const xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    svg.append(mk("line", {x1: X(xv), x2: X(xv), y1: T, y2: H - B, class: "grid-line"}), mk("text", {x: X(xv), y: H - B + 16, class: "tick", "text-anchor": "middle"}, tick(xv)));
    svg.append(mk("line", {x1: L, x2: W - R, y1: Y(yv), y2: Y(yv), class: "grid-line"}), mk("text", {x: L - 6, y: Y(yv) + 4, class: "tick", "text-anchor": "end"}, tick(yv)));
  }
  const front = p.points.filter((q) => p.front.includes(q.model)).sort((a, b) => a.x - b.x);
  if (front.length > 1) svg.append(mk("polyline", {points: front.map((q) => `${X(q.x)},${Y(q.y)}`).join(" "), class: "front"}));
  for (const q of p.points) {
    const on = p.front.includes(q.model);
    const g = mk("g", {class: on ? "pt on" : "pt"});
    g.append(mk("circle", {cx: X(q.x), cy: Y(q.y), r: 5}), mk("text", X(q.x) > W * 0.7 ? {x: X(q.x) - 7, y: Y(q.y) - 7, class: "pt-label", "text-anchor": "end"} : {x: X(q.x) + 7, y: Y(q.y) - 7, class: "pt-label"}, q.model), mk("title", {}, `${q.model}: ${fmt(q.y)} at ${fmt(q.x)}`));
    svg.append(g);
  }
  const xl = p.x === "cost_usd" ? "$ per 1,000 images" : "seconds per image";
  svg.append(mk("text", {x: (L + W - R) / 2, y: H - 8, class: "axis", "text-anchor": "middle"}, xl), mk("text", {x: 14, y: (T + H - B) / 2, class: "axis", "text-anchor": "middle", transform: `rotate(-90 14 ${(T + H - B) / 2})`}, p.y));
  document.getElementById("pareto-caption").textContent = `${p.y} against ${xl}; Pareto front (red): ${p.front.join(", ") || "–"}`;
}

let pgOffset = 0, pgTotal = 0;
const PG = 8;
async function prompts() {
  const page = await api(`/api/leaderboard/prompts?offset=${pgOffset}&limit=${PG}`);
  const gridNode = document.getElementById("prompt-grid");
  pgTotal = page.total;
  document.getElementById("pg-range").textContent = page.total ? `${page.offset + 1}–${Math.min(page.offset + PG, page.total)} of ${page.total} prompts` : "no prompts";
  const head = el("tr", {}, [el("th", {}, "prompt"), ...page.models.map((m) => el("th", {}, m))]);
  const rows = page.prompts.map((p) => el("tr", {}, [
    el("th", {class: "prompt"}, [el("span", {class: "muted"}, `${p.key}${p.category ? " · " + p.category : ""}`), el("p", {}, p.prompt)]),
    ...page.models.map((m) => el("td", {}, p.cells[m].map((c) => el("img", {src: c.url, alt: `${m} seed ${c.seed}`, title: `${m} · seed ${c.seed}`, loading: "lazy"}))))]));
  gridNode.replaceChildren(el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)]));
}
document.getElementById("pg-prev").addEventListener("click", () => { if (pgOffset > 0) { pgOffset -= PG; prompts(); } });
document.getElementById("pg-next").addEventListener("click", () => { if (pgOffset + PG < pgTotal) { pgOffset += PG; prompts(); } });
groupSelect.addEventListener("change", render);

api("/api/leaderboard").then((d) => {
  data = d;
  for (const m of d.metrics) weights[m.key] = (d.weights || {})[m.key] || 0;  // bench.report.weights
  document.getElementById("lb-notes").replaceChildren(...d.notes.map((n) => el("p", {}, n)),
    d.run ? el("p", {class: "muted"}, `run ${d.run}: ${d.n_images} images, ${d.models.length} models`) : null);
  render();
  pareto(d.pareto);
  return prompts();
}).catch((e) => document.getElementById("lb-notes").replaceChildren(el("p", {class: "bad"}, e.message)));
