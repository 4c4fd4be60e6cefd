// commitd's web console, the coordinator's page: polls /api/ every second
// and draws what it answers (helpers in common.js).
"use strict";

function lookupLink(id) {
  return el("a", { class: "txn", href: "#", title: "look it up", onclick: (ev) => { ev.preventDefault(); $("lookup-id").value = id; lookup(id); } }, id);
}

// ---- charts: inline SVG polylines, no library ----
const W = 600, H = 160, PAD_L = 36, PAD_B = 14, PAD_T = 6;

function niceMax(x) {
  if (!(x > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

// chart draws series (arrays of numbers or null for no value) over the
// same x range into svg, with a y axis from 0 to the largest value.
function chart(svg, series, labelFor, xLabels) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const NS = "http://www.w3.org/2000/svg";
  let top = 0;
  for (const s of series) for (const v of s.values) if (v !== null && v > top) top = v;
  top = niceMax(top);
  const n = Math.max(...series.map((s) => s.values.length));
  const x = (i) => PAD_L + (W - PAD_L - 4) * (n <= 1 ? 0 : i / (n - 1));
  const y = (v) => PAD_T + (H - PAD_T - PAD_B) * (1 - v / top);
  for (const f of [0, 0.5, 1]) {
    const line = document.createElementNS(NS, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", PAD_L); line.setAttribute("x2", W - 4);
    line.setAttribute("y1", y(top * f)); line.setAttribute("y2", y(top * f));
    svg.append(line);
    const t = document.createElementNS(NS, "text");
    t.setAttribute("class", "axis");
    t.setAttribute("x", 2); t.setAttribute("y", y(top * f) + 3);
    t.textContent = labelFor(top * f);
    svg.append(t);
  }
  for (const [i, label] of [[0, xLabels[0]], [n - 1, xLabels[1]]]) {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("class", "axis");
    t.setAttribute("x", i === 0 ? x(0) : x(n - 1) - 18);
    t.setAttribute("y", H - 2);
    t.textContent = label;
    svg.append(t);
  }
  for (const s of series) {
    let pts = [];
    const flush = () => {
      if (pts.length === 1) {
        // A lone value (the first slot with commits) is a dot.
        const [cx, cy] = pts[0].split(",");
        const dot = document.createElementNS(NS, "circle");
        dot.setAttribute("class", s.cls);
        dot.setAttribute("cx", cx); dot.setAttribute("cy", cy); dot.setAttribute("r", 2.5);
        svg.append(dot);
      } else if (pts.length > 1) {
        const pl = document.createElementNS(NS, "polyline");
        pl.setAttribute("class", s.cls);
        pl.setAttribute("points", pts.join(" "));
        svg.append(pl);
      }
      pts = [];
    };
    s.values.forEach((v, i) => {
      if (v === null) { flush(); return; }
      pts.push(x(i).toFixed(1) + "," + y(v).toFixed(1));
    });
    flush();
  }
}

// ---- the summary: counters, rates, latency ----
function showSummary(sum) {
  const st = sum.status, r = sum.rates, lm = r.last_minute;
  const last = (xs) => xs[xs.length - 1] || 0;
  $("committed-total").textContent = num(st.committed);
  $("committed-rate").textContent = num(last(r.committed)) + "/s last second · " + rate(lm.committed_per_s) + "/s last minute";
  $("aborted-total").textContent = num(st.aborted);
  $("aborted-rate").textContent = num(last(r.aborted)) + "/s last second · " + rate(lm.aborted_per_s) + "/s last minute";
  $("other-total").textContent = num(st.unknown) + " / " + num(st.rejected);
  $("other-rate").textContent = rate(lm.unknown_per_s) + "/s · " + rate(lm.rejected_per_s) + "/s last minute";
  $("inflight-count").textContent = num(st.in_flight);
  $("indoubt-count").textContent = num(st.in_doubt);
  $("latency-now").textContent = lm.count > 0 ? ms(lm.p50_ms) + " · " + ms(lm.p99_ms) + " · " + ms(lm.p999_ms) : "no commits";
  const role = st.role || "standalone";
  const badge = $("role");
  badge.className = "badge " + role;
  badge.textContent = st.role ? role + " · term " + st.term : "standalone";
  chart($("chart-rates"), [
    { cls: "line-aborted", values: r.aborted },
    { cls: "line-committed", values: r.committed },
  ], (v) => (v >= 10 || v === 0 ? num(Math.round(v)) : v.toFixed(1)), ["−" + r.seconds / 60 + " min", "now"]);
  const lat = (k) => r.latency.map((s) => (s.count > 0 ? s[k] : null));
  chart($("chart-latency"), [
    { cls: "line-p999", values: lat("p999_ms") },
    { cls: "line-p99", values: lat("p99_ms") },
    { cls: "line-p50", values: lat("p50_ms") },
  ], (v) => (v >= 10 || v === 0 ? num(Math.round(v)) : v.toFixed(1)), ["−" + r.latency.length * r.slot_seconds / 60 + " min", "now"]);
  $("updated").textContent = "updated " + new Date(sum.at).toLocaleTimeString();
}

function showParticipants(list) {
  fill($("participants").tBodies[0], list.map((p) => el("tr", {},
    el("td", {}, p.name),
    el("td", { class: "id" }, p.addr),
    el("td", {}, state(p.health)),
    el("td", {}, p.connected),
    el("td", {}, p.waiting < 0 ? "–" : num(p.waiting)),
    el("td", { class: "muted" }, p.last_error ? (p.connected > 0 ? "earlier: " : "") + p.last_error + " (" + new Date(p.last_error_at).toLocaleTimeString() + ")" : ""),
  )), "no participants", 6);
}

function showGroup(g) {
  if (!g.replicated) {
    $("group-summary").textContent = "runs alone: no replicas (--peers not set)";
    fill($("group").tBodies[0], [], "—", 5);
    return;
  }
  const m = g.members;
  $("group-summary").textContent = "group " + m.group + " · this replica: " + g.role + " · leader " + (m.leader ? "#" + m.leader + " " + (g.leader || "(here)") : "unknown") + " · term " + m.term;
  fill($("group").tBodies[0], m.replicas.map((rp) => el("tr", {},
    el("td", {}, "#" + rp.id + (rp.id === m.leader ? " ★ leader" : "")),
    el("td", { class: "id" }, rp.addr),
    el("td", {}, rp.role),
    el("td", {}, rp.up === undefined ? "–" : state(rp.up ? "up" : "down")),
    el("td", {}, rp.match === undefined ? "–" : num(rp.match)),
  )), "no members", 5);
}

function awaiting(t) {
  return (t.participants || []).filter((p) => p.state !== "acknowledged" && !p.state.startsWith("read-only")).map((p) => p.name + ": " + p.state).join("; ");
}

// ---- in flight: paged by id (the page's last id is the next cursor) ----
const inflight = { cursors: [""], next: "" };
function showInFlight(page) {
  $("inflight-total").textContent = "(" + num(page.total) + " held by the shards)";
  fill($("inflight").tBodies[0], page.txns.map((t) => el("tr", {},
    el("td", { class: "id" }, lookupLink(t.txn)),
    el("td", {}, state(t.state), " ", el("span", { class: "muted" }, t.detail)),
    el("td", { class: "age" }, age(t.age_ms)),
    el("td", {}, (t.participants || []).map((p) => p.name + ": " + p.state).join("; ")),
  )), "nothing in flight", 4);
  inflight.next = page.next;
  $("inflight-next").disabled = !page.next;
  $("inflight-first").disabled = inflight.cursors.length <= 1;
  $("inflight-where").textContent = "page " + inflight.cursors.length + " of " + Math.max(1, Math.ceil(page.total / page.limit)) + ", " + page.limit + " a page, in id order";
}
$("inflight-next").addEventListener("click", () => { if (inflight.next) { inflight.cursors.push(inflight.next); poll(); } });
$("inflight-first").addEventListener("click", () => { inflight.cursors = [""]; poll(); });

// ---- in doubt: paged by number, oldest decision first ----
const indoubt = { page: 0, pages: 0 };
function showInDoubt(page) {
  indoubt.pages = page.pages;
  $("indoubt-total").textContent = "(" + num(page.total) + (page.listed < page.total ? ", the oldest " + num(page.listed) + " listed" : "") + ")";
  fill($("indoubt").tBodies[0], page.txns.map((t) => el("tr", {},
    el("td", { class: "id" }, lookupLink(t.txn)),
    el("td", { class: "age" }, age(t.age_ms)),
    el("td", {}, awaiting(t)),
    el("td", { class: "muted" }, t.detail),
  )), "no commit awaits an acknowledgement", 4);
  $("indoubt-prev").disabled = indoubt.page === 0;
  $("indoubt-next").disabled = indoubt.page + 1 >= page.pages;
  $("indoubt-where").textContent = page.pages > 0 ? "page " + (page.page + 1) + " of " + page.pages : "";
}
$("indoubt-prev").addEventListener("click", () => { if (indoubt.page > 0) { indoubt.page--; poll(); } });
$("indoubt-next").addEventListener("click", () => { if (indoubt.page + 1 < indoubt.pages) { indoubt.page++; poll(); } });

// ---- lookup by id ----
async function lookup(id) {
  const out = $("lookup-result");
  out.hidden = false;
  out.className = "result";
  while (out.firstChild) out.removeChild(out.firstChild);
  id = id.trim();
  if (id === "") {
    out.className = "result error";
    out.append(el("div", { id: "lookup-error" }, "type a transaction id"));
    return;
  }
  out.append(el("div", { class: "muted" }, "looking up " + id + "…"));
  let st;
  try {
    st = await getJSON("api/txn/" + encodeURIComponent(id));
  } catch (e) {
    while (out.firstChild) out.removeChild(out.firstChild);
    out.className = "result error";
    const b = e.body || {};
    out.append(el("div", {}, b.state ? state(b.state) : null, " ", el("span", { id: "lookup-error" }, e.message)));
    return;
  }
  while (out.firstChild) out.removeChild(out.firstChild);
  out.append(
    el("div", {}, el("span", { id: "lookup-state", class: "state " + st.state }, st.state), " ", el("span", { class: "id" }, st.txn)),
    el("p", {}, st.detail),
  );
  const facts = [];
  if (st.cause) facts.push("cause: " + st.cause + (st.participant ? " at " + st.participant : ""));
  if (st.decided_at) facts.push("decided " + new Date(st.decided_at).toLocaleString());
  if (st.age_ms) facts.push("age " + age(st.age_ms));
  if (facts.length) out.append(el("p", { class: "muted" }, facts.join(" · ")));
  if (st.participants && st.participants.length) {
    out.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "participant"), el("th", {}, "vote"), el("th", {}, "state"))),
      el("tbody", {}, ...st.participants.map((p) => el("tr", {}, el("td", {}, p.name), el("td", {}, p.vote || "–"), el("td", {}, p.state))))));
  }
}
$("lookup-form").addEventListener("submit", (ev) => { ev.preventDefault(); lookup($("lookup-id").value); });

// ---- polling ----
let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  const problems = [];
  const step = async (path, show) => {
    try { show(await getJSON(path)); } catch (e) {
      problems.push(path.split("?")[0] + ": " + e.message + (e.body && e.body.leader ? " (leader: " + e.body.leader + ")" : ""));
    }
  };
  const cursor = inflight.cursors[inflight.cursors.length - 1];
  await Promise.all([
    step("api/summary", showSummary),
    step("api/participants", showParticipants),
    step("api/group", showGroup),
    step("api/inflight" + (cursor ? "?after=" + encodeURIComponent(cursor) : ""), showInFlight),
    step("api/in-doubt?page=" + indoubt.page, showInDoubt),
  ]);
  const banner = $("banner");
  banner.hidden = problems.length === 0;
  banner.textContent = problems.join(" · ");
  polling = false;
}
poll();
setInterval(poll, POLL_MS);
