// Helpers shared by the pages. Data from the API reaches the page only through textContent and
// attributes (never innerHTML), so a caption or a model name is shown as text whatever it holds.
"use strict";

async function api(url, options) {
  const res = await fetch(url, Object.assign({credentials: "same-origin"}, options || {}));
  const body = await res.json().catch(() => ({detail: res.statusText}));
  if (!res.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  return body;
}

function postJSON(url, data) {
  return api(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)});
}

// el("div", {class: "x", title: "..."}, "text" or [children])
function el(tag, attrs, content) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  if (Array.isArray(content)) content.forEach((c) => c && node.append(c));
  else if (content !== undefined && content !== null) node.textContent = String(content);
  return node;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (v !== 0 && Math.abs(v) < 1e-3) return v.toPrecision(3);
  return Math.abs(v) < 10 ? v.toFixed(4) : v.toFixed(2);
}

function typing(event) {
  const t = event.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
}
