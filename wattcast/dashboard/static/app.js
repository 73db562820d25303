// wattcast dashboard: follows the server's Server-Sent Events and draws them (uPlot, vendored).
"use strict";

const COLOURS = {
  actual: "#1d2330", persistence: "#9e9e9e", linear: "#8d6e63", lstm: "#1565c0", "lstm-augmented": "#6a1b9a",
  gbm: "#2e7d32", "gbm-history": "#00838f", rls: "#ef6c00",
};
const SPARE = ["#d81b60", "#5e35b1", "#00897b", "#f9a825", "#3949ab", "#6d4c41"];
const colour = (name, i) => COLOURS[name] || SPARE[i % SPARE.length];

// what a test (or a curious user) can read: snapshots taken and points drawn per chart
window.wattcast = { snapshots: 0, points: { mse: 0, rolling: 0, house: 0 }, last: null, house: null };

const $ = (id) => document.getElementById(id);
// every name and value that goes into HTML is escaped: ids follow the contract, but a page never trusts a message
const esc = (v) => String(v).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fmt = (v, digits = 4) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)} %`);
const when = (ts) => (ts ? new Date(ts * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC" : "");

const charts = {};

function chart(key, el, names, data, yLabel) {
  const width = Math.max(300, el.clientWidth || 600);
  const signature = names.join("|");
  if (!charts[key] || charts[key].signature !== signature) {
    if (charts[key]) charts[key].plot.destroy();
    const series = [{ label: "meter time (UTC)" }].concat(
      names.map((name, i) => ({
        label: name, stroke: colour(name, i), width: name === "actual" ? 2 : 1.5, spanGaps: false,
        value: (u, v) => fmt(v),
      })),
    );
    const opts = {
      width, height: 260, series, scales: { x: { time: true } },
      axes: [{}, { label: yLabel, size: 60 }], legend: { live: true }, tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    };
    charts[key] = { signature, plot: new uPlot(opts, data, el) };
  } else {
    charts[key].plot.setData(data);
  }
  let points = 0;
  for (let s = 1; s < data.length; s++) for (const v of data[s]) if (v !== null && v !== undefined) points++;
  window.wattcast.points[key] = points;
}

function renderModels(snap) {
  const rows = snap.models.map((m) => `<tr data-model="${esc(m.model)}">
      <td>${esc(m.model)}</td><td>${m.houses}</td><td class="n">${m.n}</td><td class="mse">${fmt(m.mse)}</td>
      <td class="rolling">${fmt(m.rolling_mse)}</td><td class="skill">${pct(m.skill)}</td><td>${m.rate.toFixed(1)}</td>
      <td>${m.latency_ms === null ? "–" : m.latency_ms + " ms"}</td><td class="unmatched">${m.unmatched}</td>
      <td class="pending">${m.pending}</td></tr>`);
  $("models").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="10">no metrics yet</td></tr>`;
  const w = snap.models.length ? Math.max(...snap.models.map((m) => m.window_s)) : 0;
  $("window").textContent = w ? `(last ${w / 60} min of meter time)` : "";
}

function renderNodes(snap) {
  const rows = snap.nodes.map((n) => {
    const counters = Object.entries(n.counters).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(" ");
    return `<tr data-node="${esc(n.node)}"><td>${esc(n.node)}</td><td>${esc(n.role)}${n.model ? " (" + esc(n.model) + ")" : ""}</td>
      <td class="state-${esc(n.state)}">${esc(n.state)}</td><td>${n.age_s === null ? "–" : n.age_s + " s ago"}</td>
      <td>${n.latency_ms === null ? "–" : n.latency_ms + " ms"}</td><td class="counters">${counters}</td></tr>`;
  });
  $("nodes").tBodies[0].innerHTML = rows.join("") || `<tr><td colspan="6">no node has said anything yet</td></tr>`;
}

function renderHeader(snap) {
  const c = $("connection");
  const b = snap.broker;
  c.className = "badge " + (b.connected ? "ok" : "down");
  c.textContent = b.connected
    ? `connected to ${b.url}` + (b.reconnects ? ` (reconnected ${b.reconnects}×)` : "")
    : `broker ${b.url || ""} unreachable: reconnecting…`;
  $("run").textContent = snap.run ? `run ${snap.run}` : "";
  $("meter-time").textContent = snap.as_of ? `meter time ${when(snap.as_of)}` : "";
  const p = snap.progress;
  $("progress-bar").style.width = p ? `${(100 * p.done) / p.total}%` : "0";
  $("progress-text").textContent = p ? p.text : "waiting for the replay's progress…";
  if (snap.rejected) $("progress-text").textContent += ` · ${snap.rejected} malformed message(s) ignored`;
  $("sampled").textContent = snap.sampled
    ? "sampled: the replay is faster than a page can follow, so bursts of consecutive minutes are drawn every few seconds"
    : "";
}

function renderHouses(snap) {
  const select = $("house");
  const have = Array.from(select.options).map((o) => o.value).join("|");
  if (have !== snap.houses.join("|")) {
    select.innerHTML = snap.houses.map((h) => `<option value="${esc(h)}">${esc(h)}</option>`).join("");
  }
  if (snap.house) select.value = snap.house.id;
}

function render(snap) {
  window.wattcast.snapshots++;
  window.wattcast.last = snap;
  renderHeader(snap);
  renderModels(snap);
  renderNodes(snap);
  renderHouses(snap);
  const models = Object.keys(snap.history.mse);
  const t = snap.history.t;
  chart("mse", $("chart-mse"), models, [t, ...models.map((m) => snap.history.mse[m])], "kW²");
  chart("rolling", $("chart-rolling"), models, [t, ...models.map((m) => snap.history.rolling_mse[m])], "kW²");
  const h = snap.house;
  if (h) {
    const fm = Object.keys(h.forecasts);
    chart("house", $("chart-house"), ["actual", ...fm], [h.t, h.actual, ...fm.map((m) => h.forecasts[m])], "kW");
  }
}

let source = null;
function follow(house) {
  if (source) source.close();
  window.wattcast.house = house;
  source = new EventSource("/events" + (house ? "?house=" + encodeURIComponent(house) : ""));
  source.addEventListener("state", (e) => render(JSON.parse(e.data)));
  source.onerror = () => {
    const c = $("connection");
    c.className = "badge wait";
    c.textContent = "dashboard server unreachable: retrying…";
  };
}

$("house").addEventListener("change", (e) => follow(e.target.value));
window.addEventListener("resize", () => {
  for (const key in charts) charts[key].plot.setSize({ width: charts[key].plot.root.parentNode.clientWidth, height: 260 });
});
follow(new URLSearchParams(location.search).get("house"));
