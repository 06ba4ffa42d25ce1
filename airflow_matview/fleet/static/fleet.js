// The fleet overview page (fleet.html). Every value from the JSON is shown as text: elements are built with
// createElement and filled with textContent, never from HTML, and the page's Content-Security-Policy enforces it
// (Trusted Types: assigning a string to innerHTML throws).
"use strict";
const COLUMNS = [
  ["view", "View", (v) => v.view],
  ["conn_id", "Connection", (v) => v.conn_id],
  ["dag_id", "DAG", (v) => v.dag_id],
  ["schedule", "Schedule", (v) => scheduleText(v)],
  ["last_success", "Last success", (v) => v.last_success || ""],
  ["last_state", "Last run", (v) => v.last_state || ""],
  ["mode", "Mode", (v) => v.mode || ""],
  ["rows", "Rows", (v) => v.rows ?? -1],
  ["duration", "Duration", (v) => v.duration ?? -1],
  ["skipped_runs", "Skipped", (v) => v.skipped_runs],
  ["next_run", "Next run", (v) => v.next_run || "~"],
  ["staleness", "Staleness", (v) => v.staleness ?? Infinity],
  ["max_staleness", "Max staleness", (v) => v.max_staleness ?? Infinity],
  ["lag", "Lag / target", (v) => v.lag_state == null ? -1 : v.lag ?? Infinity],
];
const STATUSES = ["fresh", "stale", "failing", "paused"];
const STATES = ["success", "failed", "upstream_failed", "skipped", "running", "queued"];
const REFRESH_MS = 60000;
const TIMEOUT_MS = 50000;
const SVG = "http://www.w3.org/2000/svg";
let data = null;
let inflight = null;
let sort = { key: "view", desc: false };
const collator = new Intl.Collator("en");
const $ = (id) => document.getElementById(id);

// An element with its class and children: strings become text nodes, null and undefined are left out.
function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.append(...children.filter((child) => child != null));
  return node;
}
function age(seconds) {
  if (seconds == null) return "-";
  const s = Math.max(0, seconds);
  if (s < 90) return Math.round(s) + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return (s / 3600).toFixed(1).replace(/\.0$/, "") + "h";
  return (s / 86400).toFixed(1).replace(/\.0$/, "") + "d";
}
function secs(seconds) {
  if (seconds == null) return "-";
  return seconds < 10 ? seconds.toFixed(2) + "s" : age(seconds);
}
// A duration as the alerts write it (airflow_matview.text.format_seconds): 75 -> 1m15s.
function duration(seconds) {
  const s = Math.max(0, seconds);
  if (s < 10) return s.toFixed(1) + "s";
  let rest = Math.round(s);
  return [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]].map(([unit, name]) => {
    const count = Math.floor(rest / unit);
    rest -= count * unit;
    return count ? count + name : "";
  }).join("") || "0s";
}
function when(iso) {
  return iso ? iso.slice(5, 16).replace("T", " ") : "-";
}
function whenCell(iso) {
  if (!iso) return "-";
  const span = el("span", "", when(iso));
  span.title = iso;
  return span;
}
function scheduleText(v) {
  const parts = [];
  if (v.schedule) parts.push(v.schedule + (v.timezone && v.timezone !== "UTC" ? " (" + v.timezone + ")" : v.timezone ? " UTC" : ""));
  if (v.after.length) parts.push("after " + v.after.join(", "));
  if (v.other_assets) parts.push(`after ${v.other_assets} other asset${v.other_assets === 1 ? "" : "s"}`);
  if (v.on_change) parts.push(v.target_lag == null ? "on change" : `on change, target lag ${age(v.target_lag)}`);
  return parts.join(" or ") || "manual";
}
function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}
function spark(v) {
  const n = v.recent_seconds.length;
  if (n < 2) return null;
  const w = 60, h = 16, max = Math.max(...v.recent_seconds.map((x) => x || 0)) || 1, step = w / (n - 1);
  const chart = svg("svg", { class: "spark", width: w, height: h });
  const title = document.createElementNS(SVG, "title");
  const points = [], lines = [`last ${n} runs, oldest first:`];
  for (let i = 0; i < n; i++) {
    const x = (i * step).toFixed(1), y = (h - 2 - ((v.recent_seconds[i] || 0) / max) * (h - 4)).toFixed(1);
    const state = v.recent_states[i];
    points.push(x + "," + y);
    if (state !== "success") chart.append(svg("circle", { cx: x, cy: y, r: 2, class: state === "skipped" ? "skipped" : "failed" }));
    lines.push(`${state} ${secs(v.recent_seconds[i])}`);
  }
  title.textContent = lines.join("\n");
  chart.prepend(title, svg("polyline", { points: points.join(" ") }));
  return chart;
}
// The lag over the last 24 hours (lag_history): per bucket a bar up to its largest lag, red when over the target;
// dotted full height where the lag was unknown or not measured (never drawn as 0); the target as a dashed line.
function lagChart(v) {
  const points = Array.isArray(v.lag_history) ? v.lag_history : [];
  if (!points.length) return null;
  const step = data.lag_history_bucket_seconds, slots = Math.round(86400 / step), w = 144, h = 20;
  const first = points[points.length - 1][0] - (slots - 1) * step;
  const shown = points.filter((p) => p[0] >= first);
  const top = Math.max(v.target_lag || 0, ...shown.map((p) => p[1] || 0)) * 1.1 || 1;
  const x = (start) => (((start - first) / step + 0.5) * (w / slots)).toFixed(2);
  const y = (seconds) => Math.min(h - 1, h - (seconds / top) * h).toFixed(1);
  const bars = { within: [], over: [], unknown: [] };
  let worst = null, over = 0, unknown = 0, previous = null;
  for (const [start, max, isOver, isUnknown] of shown) {
    for (let t = previous == null ? start : previous + step; t < start; t += step) {
      bars.unknown.push(`M${x(t)},0V${h}`);  // no measurement at all: unknown, over any target
      over++;
      unknown++;
    }
    previous = start;
    if (isUnknown) { bars.unknown.push(`M${x(start)},0V${h}`); unknown++; }
    if (max != null) {
      bars[isOver ? "over" : "within"].push(`M${x(start)},${h}V${y(max)}`);
      if (!worst || max > worst[1]) worst = [start, max];
    }
    if (isOver) over++;
  }
  const minutes = step / 60;
  const text = [
    worst ? `Lag over the last 24 h: max ${duration(worst[1])} at ${new Date(worst[0] * 1000).toISOString().slice(11, 16)} UTC`
      : "Lag over the last 24 h: never known",
    v.target_lag == null ? null : `target ${duration(v.target_lag)}`,
    `over target in ${over} ${minutes}-minute period${over === 1 ? "" : "s"}`,
    `unknown in ${unknown}`,
  ].filter(Boolean).join("; ");
  const chart = svg("svg", { class: "lagchart", width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": text });
  const title = document.createElementNS(SVG, "title");
  title.textContent = text;
  chart.append(title, svg("path", { class: "base", d: `M${x(shown[0][0])},${h - 0.5}H${w}` }));
  for (const [kind, parts] of Object.entries(bars)) if (parts.length) chart.append(svg("path", { class: kind, d: parts.join("") }));
  if (v.target_lag != null) chart.append(svg("path", { class: "target", d: `M0,${y(v.target_lag)}H${w}` }));
  return chart;
}
function options(select, values) {
  const current = select.value;
  select.length = 1;
  for (const value of values) select.add(new Option(value, value));
  select.value = values.includes(current) ? current : "";
}
function renderHead() {
  $("head").replaceChildren(...COLUMNS.map(([key, label]) => {
    const button = el("button", "", label);
    button.type = "button";
    button.dataset.sort = key;
    button.dataset.arrow = sort.key === key ? (sort.desc ? "▼" : "▲") : "";
    return el("th", "", button);
  }));
}
function visible() {
  const text = $("search").value.trim().toLowerCase();
  const older = Number($("age").value || 0);
  const status = $("status").value, state = $("state").value, conn = $("conn").value, tag = $("tag").value;
  const rows = data.views.filter((v) =>
    (!status || v.status === status) && (!older || (v.staleness ?? Infinity) > older) && (!state || (v.last_state || "none") === state) &&
    (!conn || v.conn_id === conn) && (!tag || v.tags.includes(tag)) &&
    (!text || [v.view, v.dag_id, v.conn_id, ...v.tags].some((s) => s.toLowerCase().includes(text))));
  const key = COLUMNS.find((c) => c[0] === sort.key)[2];
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    const order = typeof x === "number" && typeof y === "number" ? x - y : collator.compare(String(x), String(y));
    return (sort.desc ? -order : order) || collator.compare(a.view, b.view);
  });
  return rows;
}
function viewCell(v) {
  const tags = v.tags.filter((t) => t !== "matview").map((t) => el("span", "tag", t));
  return el("td", "wrap view", el("b", "", v.view), " ", ...tags);
}
function dagCell(v) {
  const link = el("a", "", v.dag_id);
  link.href = "../dags/" + encodeURIComponent(v.dag_id);
  link.target = "_top";
  const cell = el("td", "dag", v.paused ? el("span", "muted", "(paused)") : null, v.paused ? " " : null, link,
    ...outsideLinks(v));
  cell.title = v.dag_id;
  return cell;
}
// The view's metrics and lineage pages ([matview] metrics_url, lineage_url): http(s) only, opened in a new tab.
function outsideLinks(v) {
  return ["metrics", "lineage"].filter((name) => /^https?:\/\//i.test((v.links || {})[name] || "")).flatMap((name) => {
    const link = el("a", "outside", name);
    link.href = v.links[name];
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.dataset.link = name;
    return [" ", link];
  });
}
function stateCell(v) {
  const cell = el("td", "");
  cell.dataset.col = "last_state";
  if (!v.last_state) cell.append("-");
  else cell.append(el("span", "state" + (STATES.includes(v.last_state) ? " " + v.last_state : ""), v.last_state));
  return cell;
}
function stalenessCells(v) {
  const breach = v.breached ? " breach" : "";
  const pending = v.pending_for == null ? null : el("span", "muted age", `run waiting ${age(v.pending_for)}`);
  if (pending) pending.title = `the run queued at ${v.pending_since} has not succeeded`;
  const staleness = el("td", "num" + breach, v.staleness == null ? "never fresh" : age(v.staleness));
  staleness.dataset.col = "staleness";
  const budget = el("td", "num" + breach, v.max_staleness == null ? "-" : age(v.max_staleness), v.breached ? " ⚠" : null, pending);
  budget.dataset.col = "max_staleness";
  return [staleness, budget];
}
function lagCell(v) {
  const cell = el("td", "num" + (v.lag_state === "over" || v.lag_state === "unknown" ? " breach" : ""));
  cell.dataset.col = "lag";
  if (v.lag_state == null) {
    cell.append("-");
    return cell;
  }
  const threshold = v.max_staleness ?? v.target_lag;
  cell.append(v.lag == null ? "unknown" : age(v.lag), el("span", "muted age", ` / ${age(threshold)}`), lagChart(v));
  const why = [v.lag_basis === "last_refresh" ? "sources cannot be watched: age of the last refresh" : null,
    v.lag_since ? `oldest change not reflected seen at ${v.lag_since}` : null, v.lag_reason,
    v.lag_alert_reason ? `alerted: ${v.lag_alert_reason}` : null].filter(Boolean);
  if (why.length) cell.title = why.join("\n");
  return cell;
}
function row(v) {
  const success = v.last_success
    ? [whenCell(v.last_success), el("span", "muted age", `${age(v.last_success_age)} ago`)]
    : ["never"];
  const tr = el("tr", STATUSES.includes(v.status) ? "status-" + v.status : "",
    viewCell(v),
    el("td", "", v.conn_id),
    dagCell(v),
    el("td", "wrap", scheduleText(v)),
    el("td", "", ...success),
    stateCell(v),
    el("td", "", v.mode || "-"),
    el("td", "num", v.rows == null ? "-" : v.rows.toLocaleString("en")),
    el("td", "num", secs(v.duration), spark(v)),
    el("td", "num", String(v.skipped_runs)),
    el("td", "", whenCell(v.next_run)),
    ...stalenessCells(v),
    lagCell(v));
  tr.dataset.view = v.view;
  tr.dataset.status = v.status;
  return tr;
}
function renderRows() {
  const rows = visible();
  $("shown").textContent = rows.length === data.views.length ? "" : `${rows.length} shown`;
  $("rows").replaceChildren(...rows.map(row));
}
function renderCounts() {
  $("counts").replaceChildren(...STATUSES.map((s) => {
    const button = el("button", `count ${s}${$("status").value === s ? " active" : ""}`, el("b", "", String(data.counts[s])), s);
    button.type = "button";
    button.dataset.status = s;
    button.dataset.testid = "count-" + s;
    return button;
  }));
}
function renderSkipped() {
  const skipped = $("skipped");
  skipped.hidden = !data.skipped_records;
  const kinds = Object.entries(data.skipped || {}).map(([kind, count]) => `${kind} ×${count}`).join(", ");
  skipped.textContent = data.skipped_records
    ? `${data.skipped_records} record${data.skipped_records === 1 ? "" : "s"} skipped (unreadable): ${kinds}`
    : "";
  skipped.title = "Records in Airflow's metadata database that are not those of a view refreshed by airflow-matview";
}
function render() {
  $("total").textContent = `(${data.total})`;
  $("generated").textContent = "as of " + data.generated_at.slice(0, 19).replace("T", " ") + " UTC; times in UTC";
  renderCounts();
  renderSkipped();
  options($("status"), STATUSES);
  options($("state"), [...new Set(data.views.map((v) => v.last_state || "none"))].sort());
  options($("conn"), [...new Set(data.views.map((v) => v.conn_id))].sort());
  options($("tag"), [...new Set(data.views.flatMap((v) => v.tags))].sort());
  renderHead();
  renderRows();
}
function setLoading(loading) {
  $("loading").hidden = !loading;
  document.body.dataset.loading = String(loading);
}
// The one line to show for a response that is not the document: the server's reason when it gave one.
async function failure(response) {
  let reason = "";
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") reason = ": " + body.detail;
  } catch (error) {
    reason = "";
  }
  return `Could not load the views (HTTP ${response.status})${reason}`;
}
function measure(started, fetched) {
  document.body.dataset.fetchMs = Math.round(fetched - started);
  document.body.dataset.renderMs = Math.round(performance.now() - fetched);
  const navigation = performance.getEntriesByType("navigation")[0];
  document.body.dataset.htmlMs = navigation ? Math.round(navigation.responseEnd) : 0;
  document.body.dataset.totalMs = Math.round(performance.now());
  document.body.dataset.loaded = "true";
}
// Fetches the document and draws it; a fetch still running is abandoned first, so requests never pile up.
async function load() {
  if (inflight) inflight.abort(new DOMException("replaced by a newer request", "AbortError"));
  const controller = new AbortController();
  inflight = controller;
  const timer = setTimeout(() => controller.abort(new DOMException(`no answer within ${TIMEOUT_MS / 1000}s`, "TimeoutError")), TIMEOUT_MS);
  const started = performance.now();
  setLoading(true);
  try {
    const response = await fetch("api/views", { credentials: "same-origin", headers: { Accept: "application/json" }, signal: controller.signal });
    if (response.status === 401) { window.top.location.reload(); return; }
    if (!response.ok) { $("error").textContent = await failure(response); return; }
    data = await response.json();
    $("error").textContent = "";
    const fetched = performance.now();
    render();
    measure(started, fetched);
  } catch (error) {
    if (inflight !== controller) return;  // replaced by a newer request, which reports for itself
    $("error").textContent = `Could not load the views: ${error && error.message ? error.message : error}`;
  } finally {
    clearTimeout(timer);
    if (inflight === controller) { inflight = null; setLoading(false); }
  }
}
$("head").addEventListener("click", (event) => {
  const key = event.target.dataset && event.target.dataset.sort;
  if (!key) return;
  sort = { key, desc: sort.key === key ? !sort.desc : key === "staleness" };
  renderHead();
  renderRows();
});
$("counts").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  $("status").value = $("status").value === button.dataset.status ? "" : button.dataset.status;
  render();
});
for (const id of ["search", "status", "age", "state", "conn", "tag"]) $(id).addEventListener("input", () => data && render());
$("reload").addEventListener("click", load);
load();
setInterval(load, REFRESH_MS);
