// commitd's web console: what the coordinator's page (console.js) and a
// participant's (participant.js) share. No framework, no build step; every
// value from the API goes into the page as text (textContent), never as
// markup.
"use strict";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

// el makes an element with attributes and children (strings become text).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const fmt = new Intl.NumberFormat("en");
function num(n) { return fmt.format(n); }
function rate(x) { return x >= 100 ? num(Math.round(x)) : x.toFixed(1); }
function ms(x) { return x >= 100 ? Math.round(x) + " ms" : x >= 10 ? x.toFixed(1) + " ms" : x.toFixed(2) + " ms"; }
function age(msec) {
  if (msec === undefined || msec === null) return "–";
  if (msec < 1000) return msec + " ms";
  const s = msec / 1000;
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function state(s) { return el("span", { class: "state " + s }, s); }

// getJSON fetches an API path; an error answer rejects with its one line.
async function getJSON(path) {
  const res = await fetch(path, { cache: "no-store" });
  let body;
  try { body = await res.json(); } catch (e) { body = { error: res.status + " " + res.statusText }; }
  if (!res.ok) {
    const err = new Error(body.error || (res.status + " " + res.statusText));
    err.status = res.status;
    err.body = body;
    throw err;
  }
  return body;
}

function fill(tbody, rows, empty, cols) {
  while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
  if (rows.length === 0) tbody.append(el("tr", {}, el("td", { colspan: cols, class: "muted" }, empty)));
  for (const r of rows) tbody.append(r);
}

