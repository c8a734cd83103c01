// The salvo dashboard: polls GET /api/status every 2 s with the operator's token and
// shows it. Every value is put in the page with textContent (never as HTML): names come
// from producers. The token comes from the URL fragment (#token=..., never sent to the
// server) or the form, and is kept in sessionStorage (this tab only).
"use strict";

const POLL_MS = 2000;
const TIMEOUT_MS = 8000;
const KEY = "salvo.token";
const RATE_COLUMNS = [
  ["delivery_rate", "delivery"],
  ["hard_bounce_rate", "hard bounce"],
  ["soft_bounce_rate", "soft bounce"],
  ["complaint_rate", "complaint"],
  ["unsubscribe_rate", "unsub"],
  ["deferral_rate", "deferral"],
];

let timer = null;
let busy = false;

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function count(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : "–";
}

function pct(x) {
  return typeof x === "number" ? (x * 100).toFixed(2) + "%" : "–";
}

function perSecond(x) {
  return typeof x === "number" ? x.toFixed(2) : "–";
}

function duration(s) {
  if (typeof s !== "number") return "–";
  if (s < 60) return Math.round(s) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + Math.round(s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

function clock(ts) {
  if (typeof ts !== "number" || !ts) return "–";
  return new Date(ts * 1000).toLocaleString("en-GB", { hour12: false });
}

function threshold(kpi, value) {
  return kpi.endsWith("_rate") ? pct(value) : count(value);
}

// -- the token -------------------------------------------------------------------------

function tokenFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(KEY, token.trim());
    // Out of the address bar (and out of screenshots and shared links).
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function token() {
  return sessionStorage.getItem(KEY) || "";
}

function showLogin(message) {
  clearTimeout(timer);
  $("main").hidden = true;
  $("banner").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  setLive("bad", message ? "not connected" : "no token");
  $("token-input").focus();
}

function setLive(state, text) {
  $("live-dot").className = "dot " + state;
  $("live-text").textContent = text;
}

// -- the API ---------------------------------------------------------------------------

class Refused extends Error {}

async function api(method, path, body) {
  const controller = new AbortController();
  const stop = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch(path, {
      method,
      headers: Object.assign(
        { Authorization: "Bearer " + token() },
        body ? { "Content-Type": "application/json" } : {},
      ),
      body: body ? JSON.stringify(body) : undefined,
      signal: controller.signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) throw new Refused("401");
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || "HTTP " + response.status);
    return data;
  } finally {
    clearTimeout(stop);
  }
}

async function poll() {
  if (busy) return;
  busy = true;
  try {
    const status = await api("GET", "/api/status");
    render(status);
    $("banner").hidden = true;
    setLive("ok", "live · " + new Date().toLocaleTimeString("en-GB", { hour12: false }));
  } catch (err) {
    if (err instanceof Refused) {
      sessionStorage.removeItem(KEY);
      showLogin("The node refused this token (401). Use the token in the node's [http] token_file.");
      busy = false;
      return;
    }
    setLive("bad", "not reachable");
    const banner = $("banner");
    banner.textContent = "The node is not answering (" + err.message + "); retrying every 2 s.";
    banner.hidden = false;
  }
  busy = false;
  clearTimeout(timer);
  timer = setTimeout(poll, POLL_MS);
}

async function resume(scope, name, button) {
  button.disabled = true;
  const error = $("pause-error");
  error.hidden = true;
  try {
    await api("POST", "/api/resume", { scope, name });
  } catch (err) {
    if (err instanceof Refused) return showLogin("The node refused this token (401).");
    error.textContent = "Could not resume " + scope + " " + name + ": " + err.message;
    error.hidden = false;
    button.disabled = false;
    return;
  }
  clearTimeout(timer);
  busy = false;
  poll();
}

// -- rendering -------------------------------------------------------------------------

function fill(tableId, rows, emptyId) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows);
  if (emptyId) {
    $(emptyId).hidden = rows.length > 0;
    $(tableId).hidden = rows.length === 0;
  }
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell);
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  return tr;
}

function td(text, cls, kpi) {
  const cell = el("td", text, cls);
  if (kpi) cell.dataset.kpi = kpi;
  return cell;
}

function render(s) {
  $("main").hidden = false;
  $("login").hidden = true;
  $("forget").hidden = false;
  const node = s.node || {};
  $("node-host").textContent = node.hostname || "";
  $("node-line").textContent =
    "v" + node.version + " · pid " + node.pid + " · up " + duration(node.uptime_s) +
    " · producers " + (node.listen ? node.listen.producers : "") + " · data " + node.data_dir;
  renderThroughput(s.throughput || {});
  renderQueue(s.queue || {});
  renderAlerts(s.alerts || { active: [], rules: [] });
  renderPauses(s.pauses || []);
  renderProviders(s.providers || []);
  renderKpis("tenants", (s.kpis || {}).tenants, false);
  renderKpis("campaigns", (s.kpis || {}).campaigns, true);
}

function renderThroughput(t) {
  $("tp-1m").textContent = perSecond(t.per_s_1m);
  $("tp-5m").textContent = perSecond(t.per_s_5m);
  $("tp-total").textContent = count(t.delivered_since_start);
  drawSpark($("spark"), t.series || []);
}

function drawSpark(canvas, series) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 640;
  const height = canvas.clientHeight || 110;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const max = Math.max(1, ...series);
  const pad = 4;
  const step = series.length > 1 ? (width - 2 * pad) / (series.length - 1) : 0;
  const y = (v) => height - pad - (v / max) * (height - 2 * pad - 12);
  g.strokeStyle = "#e3e8ee";
  g.beginPath();
  g.moveTo(pad, height - pad + 0.5);
  g.lineTo(width - pad, height - pad + 0.5);
  g.stroke();
  if (!series.length) return;
  g.beginPath();
  series.forEach((v, i) => (i ? g.lineTo(pad + i * step, y(v)) : g.moveTo(pad, y(v))));
  g.lineTo(pad + (series.length - 1) * step, height - pad);
  g.lineTo(pad, height - pad);
  g.closePath();
  g.fillStyle = "rgba(37, 99, 235, 0.12)";
  g.fill();
  g.beginPath();
  series.forEach((v, i) => (i ? g.lineTo(pad + i * step, y(v)) : g.moveTo(pad, y(v))));
  g.strokeStyle = "#2563eb";
  g.lineWidth = 2;
  g.stroke();
  g.fillStyle = "#6b7785";
  g.font = "11px system-ui, sans-serif";
  g.fillText("max " + max.toLocaleString("en-US") + "/min", pad + 2, 11);
}

function renderQueue(q) {
  const states = q.states || {};
  $("q-waiting").textContent = count(states.waiting);
  $("q-inflight").textContent = count(states["in-flight"]);
  $("q-oldest").textContent = q.total ? duration(q.oldest_s) : "–";
  const rows = Object.entries(q.by_provider || {}).map(([name, c]) =>
    row([td(name, "name"), td(count(c.waiting), "n"), td(count(c["in-flight"]), "n")], {
      "data-provider": name,
    }),
  );
  fill("queue-table", rows, "queue-empty");
  const note = $("queue-note");
  note.hidden = !q.by_provider_partial;
  note.textContent = "By provider: counted over the first part of a large queue only.";
}

function renderAlerts(a) {
  const active = a.active || [];
  const pill = $("alerts-count");
  pill.textContent = String(active.length);
  pill.className = active.length ? "pill bad" : "pill";
  fill(
    "alerts-table",
    active.map((x) =>
      row([
        td(x.rule),
        td(x.scope),
        td(x.name, "name"),
        td(threshold(x.kpi || "", x.value), "n over"),
        td(threshold(x.kpi || "", x.threshold), "n"),
        (() => { const c = td(""); c.append(el("span", x.action, "badge " + x.action)); return c; })(),
        td(clock(x.since)),
      ]),
    ),
    "alerts-empty",
  );
  const rules = a.rules || [];
  $("rules-count").textContent = String(rules.length);
  fill(
    "rules-table",
    rules.map((r) =>
      row([
        td(r.rule), td(r.kpi), td(r.scope), td(threshold(r.kpi || "", r.above), "n"),
        td(r.window), td(count(r.min_volume), "n"), td(r.action),
      ]),
    ),
  );
}

function renderPauses(pauses) {
  fill(
    "pauses-table",
    pauses.map((p) => {
      const button = el("button", "Resume");
      button.type = "button";
      button.addEventListener("click", () => resume(p.scope, p.name, button));
      const action = td("");
      action.append(button);
      return row(
        [td(p.scope), td(p.name, "name"), td(p.until ? clock(p.until) : "until resumed"),
         td(p.reason, "name"), action],
        { "data-scope": p.scope, "data-name": p.name },
      );
    }),
    "pauses-empty",
  );
}

function renderProviders(providers) {
  fill(
    "providers-table",
    providers.map((p) => {
      const state = td("");
      const label = p.paused ? (p.paused_by === "operator" ? "paused" : "backoff " + duration(p.backoff_s)) : "sending";
      state.append(el("span", label, p.paused ? "badge paused" : "badge ok"));
      const replies = p.replies || {};
      const hour = p.last_hour || {};
      return row(
        [
          td(p.name, "name"), state, td(count(p.connections), "n"),
          td(count(p.allowed_connections), "n"),
          td(p.allowed_rate_per_s == null ? (p.allowed_connections ? "no limit" : "-") : count(p.allowed_rate_per_s), "n"),
          td(count(p.waiting), "n"),
          td(count(p.in_flight), "n"), td(count(replies["2xx"] || 0), "n"),
          td(count(replies["4xx"] || 0), "n"), td(count(replies["5xx"] || 0), "n"),
          td(count(hour.sent), "n"), td(pct(hour.delivery_rate), "n"),
          td(pct(hour.deferral_rate), "n"), td(pct(hour.hard_bounce_rate), "n"),
        ],
        { "data-provider": p.name },
      );
    }),
    "providers-empty",
  );
}

function renderKpis(which, block, campaigns) {
  const table = $(which + "-table");
  const head = ["tenant"].concat(campaigns ? ["campaign"] : []);
  const th = (text, n) => el("th", text, n ? "n" : "");
  table.tHead.replaceChildren(
    row([
      ...head.map((h) => th(h)), th("sent", 1), th("delivered", 1),
      ...RATE_COLUMNS.map(([, label]) => th(label, 1)), th("p50", 1),
    ]),
  );
  const rows = ((block && block.rows) || []).map((r) => {
    const cells = [td(r.tenant, "name")];
    if (campaigns) cells.push(td(r.campaign, "name"));
    cells.push(td(count(r.sent), "n", "sent"), td(count(r.delivered), "n", "delivered"));
    const above = new Set(r.above || []);
    for (const [kpi] of RATE_COLUMNS) {
      const cell = td(pct(r[kpi]), above.has(kpi) ? "n over" : "n", kpi);
      const rules = (r.thresholds || []).filter((t) => t.kpi === kpi);
      if (rules.length) {
        const limits = rules.map((t) => pct(t.above) + " " + t.action).join(", ");
        cell.append(el("span", "> " + limits, "th"));
        cell.title = "thresholds: " + limits;
      }
      cells.push(cell);
    }
    cells.push(td(r.latency_p50_s == null ? "–" : r.latency_p50_s.toFixed(2) + "s", "n"));
    return row(cells, Object.assign({ "data-tenant": r.tenant }, campaigns ? { "data-campaign": r.campaign } : {}));
  });
  fill(which + "-table", rows, which + "-empty");
}

// -- start -----------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    $("token-input").value = "";
    $("login").hidden = true;
    setLive("", "connecting…");
    busy = false;
    poll();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showLogin("");
  });
  window.addEventListener("hashchange", () => {
    tokenFromFragment();
    if (token()) { busy = false; poll(); }
  });
  tokenFromFragment();
  if (token()) poll();
  else showLogin("");
});
