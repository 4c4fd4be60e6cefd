// commitd's web console, a participant's page: its counters, its
// connections to the coordinator (every replica's), and the transactions it
// holds, oldest first (helpers in common.js).
"use strict";

let lastCommitted = null, lastAt = null;

function showStatus(s) {
  const st = s.status;
  $("name").textContent = s.name;
  document.title = "commitd participant " + s.name;
  $("committed-total").textContent = num(st.Committed);
  const now = Date.now();
  if (lastCommitted !== null && now > lastAt) {
    $("committed-rate").textContent = num(Math.round((st.Committed - lastCommitted) * 1000 / (now - lastAt))) + "/s since the last poll";
  }
  lastCommitted = st.Committed;
  lastAt = now;
  $("aborted-total").textContent = num(st.Aborted) + " / " + num(st.VotedNo);
  $("prepared-count").textContent = num(st.Prepared);
  $("voting-count").textContent = num(st.Voting);
  const conns = [st.coordinator].concat(st.replicas || []);
  fill($("coordinators").tBodies[0], conns.map((c) => el("tr", {},
    el("td", { class: "id" }, c.addr),
    el("td", {}, state(c.connected > 0 ? "connected" : "disconnected")),
    el("td", {}, c.connected),
    el("td", { class: "muted" }, c.last_error ? (c.connected > 0 ? "earlier: " : "") + c.last_error + " (" + new Date(c.last_error_at).toLocaleTimeString() + ")" : ""),
  )), "no coordinator", 4);
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

const indoubt = { page: 0, pages: 0 };
function showInDoubt(page) {
  indoubt.pages = page.pages;
  $("indoubt-total").textContent = "(" + num(page.total) + (page.listed < page.total ? ", the oldest " + num(page.listed) + " listed" : "") + ")";
  fill($("indoubt").tBodies[0], page.txns.map((t) => el("tr", {},
    el("td", { class: "id" }, t.txn),
    el("td", {}, state(t.state)),
    el("td", { class: "age" }, age(t.age_ms)),
    el("td", { class: "muted" }, t.waits_for),
  )), "nothing in hand", 4);
  $("indoubt-prev").disabled = indoubt.page === 0;
  $("indoubt-next").disabled = indoubt.page + 1 >= page.pages;
  $("indoubt-where").textContent = page.pages > 0 ? "page " + (page.page + 1) + " of " + page.pages : "";
}
$("indoubt-prev").addEventListener("click", () => { if (indoubt.page > 0) { indoubt.page--; poll(); } });
$("indoubt-next").addEventListener("click", () => { if (indoubt.page + 1 < indoubt.pages) { indoubt.page++; poll(); } });

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  const problems = [];
  const step = async (path, show) => {
    try { show(await getJSON(path)); } catch (e) { problems.push(path.split("?")[0] + ": " + e.message); }
  };
  await Promise.all([
    step("api/status", showStatus),
    step("api/in-doubt?page=" + indoubt.page, showInDoubt),
  ]);
  const banner = $("banner");
  banner.hidden = problems.length === 0;
  banner.textContent = problems.join(" · ");
  polling = false;
}
poll();
setInterval(poll, POLL_MS);
