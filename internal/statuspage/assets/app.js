// proxyd status page. Reads this listener's /metrics (no token) and, with
// the operator's token, /api/v1. No external assets; see internal/statuspage.
"use strict";
(function () {
  const TOKEN_KEY = "proxyd.api-token";
  const REFRESH_MS = 5000;
  const PAGE = 50;
  const $ = (id) => document.getElementById(id);
  const state = { after: "", cursors: [], q: "", prevDiff: null };

  // A token in the URL fragment (#token=...) is taken once, stored and wiped
  // from the address bar, so a bookmark or a test can hand it over.
  function takeFragmentToken() {
    const m = /(?:^|&)token=([^&]+)/.exec(location.hash.slice(1));
    if (m) {
      localStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  }
  const token = () => localStorage.getItem(TOKEN_KEY) || "";

  function esc(v) {
    return String(v === undefined || v === null ? "" : v)
      .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  }
  function hashrate(hs) {
    if (!isFinite(hs)) return "–";
    const u = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    let i = 0;
    while (Math.abs(hs) >= 1000 && i < u.length - 1) { hs /= 1000; i++; }
    return hs.toFixed(hs < 10 ? 2 : 1) + " " + u[i];
  }
  function ago(t) {
    if (!t || t.startsWith("0001")) return "–";
    const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function table(id, head, rows, empty) {
    const el = $(id);
    if (!rows.length) { el.innerHTML = "<tr><td class=\"muted\">" + esc(empty) + "</td></tr>"; return; }
    el.innerHTML = "<thead><tr>" + head.map((h) => "<th>" + esc(h) + "</th>").join("") + "</tr></thead><tbody>" +
      rows.map((r) => "<tr>" + r.map((c) => (typeof c === "object" && c && "html" in c) ? "<td" + (c.cls ? " class=\"" + c.cls + "\"" : "") + ">" + c.html + "</td>" : "<td>" + esc(c) + "</td>").join("") + "</tr>").join("") + "</tbody>";
  }
  const cell = (html, cls) => ({ html: html, cls: cls });
  const yesno = (b, yes, no) => cell(b ? "<span class=\"ok\">" + esc(yes) + "</span>" : "<span class=\"bad\">" + esc(no) + "</span>");

  async function api(path) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + token() }, cache: "no-store" });
    if (r.status === 401) throw new Error("unauthorized");
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  // Prometheus text format: only the plain samples this page needs.
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[3]) m[3].replace(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g, (_, k, v) => { labels[k] = v; return ""; });
      out.push({ name: m[1], labels: labels, value: parseFloat(m[4]) });
    }
    return out;
  }
  const sum = (ms, name, pred) => ms.filter((s) => s.name === name && (!pred || pred(s.labels))).reduce((a, s) => a + s.value, 0);
  const has = (ms, name) => ms.some((s) => s.name === name);

  async function refreshMetrics() {
    const r = await fetch("/metrics", { cache: "no-store" });
    const ms = parseMetrics(await r.text());
    let hs = NaN;
    if (has(ms, "proxyd_site_hashrate_hs")) {
      hs = sum(ms, "proxyd_site_hashrate_hs");
    } else { // older proxyd: difference of accepted difficulty between refreshes
      const d = sum(ms, "proxyd_share_difficulty_sum"), now = Date.now();
      if (state.prevDiff && now > state.prevDiff.at) hs = (d - state.prevDiff.d) / ((now - state.prevDiff.at) / 1000) * 4294967296;
      state.prevDiff = { d: d, at: now };
    }
    $("t-hashrate").textContent = hashrate(hs);
    $("t-miners").textContent = sum(ms, "proxyd_miners_connected").toLocaleString();
    const pools = ms.filter((s) => s.name === "proxyd_pool_up");
    $("t-pools").textContent = pools.filter((s) => s.value === 1).length + " / " + pools.length;
    $("t-sessions").textContent = sum(ms, "proxyd_upstream_sessions").toLocaleString();
    const acc = sum(ms, "proxyd_shares_total", (l) => l.result === "accepted" || l.result === "pool_accepted");
    const rej = sum(ms, "proxyd_shares_total", (l) => l.result === "rejected" || l.result === "pool_rejected");
    $("t-shares").textContent = acc.toLocaleString() + " / " + rej.toLocaleString();
    const states = {};
    ms.filter((s) => s.name === "proxyd_gpu_state" && s.value === 1).forEach((s) => { states[s.labels.state] = (states[s.labels.state] || 0) + 1; });
    const gpuText = Object.keys(states).sort().map((k) => states[k] + " " + k).join(", ");
    $("t-gpus").textContent = gpuText || (has(ms, "DCGM_FI_DEV_GPU_UTIL") ? "monitored" : "none");
  }

  async function refreshAPI() {
    const [status, pools, stratum, gpus, contracts, events] = await Promise.all([
      api("/api/v1/status"), api("/api/v1/pools"), api("/api/v1/stratum"),
      api("/api/v1/gpus").catch(() => null), api("/api/v1/contracts").catch(() => null), api("/api/v1/events?limit=20"),
    ]);
    $("version").textContent = status.version + " · up " + Math.round(status.uptime_s / 60) + " min";
    const rd = status.readiness || {};
    $("ready").textContent = rd.ready ? "ready" : "not ready";
    $("ready").className = "badge " + (rd.ready ? "ok" : "bad");
    $("ready").title = (rd.not_ready || []).join("; ");
    $("simulated").hidden = !status.simulated;

    const pl = pools.pools || [];
    const siteHs = pl.reduce((a, p) => a + (p.hashrate_hs || 0), 0);
    if (pl.length) $("t-hashrate").textContent = hashrate(siteHs);
    table("pools", ["listener", "pool", "level", "health", "carrying", "hashrate", "miners", "sessions", "accepted", "rejected", "last job"],
      pl.map((p) => {
        const ss = p.sessions || [];
        const acc = ss.reduce((a, s) => a + (s.accepted || 0), 0), rej = ss.reduce((a, s) => a + (s.rejected || 0), 0);
        const age = ss.length ? Math.min.apply(null, ss.map((s) => s.last_job_age_s || 0)) : NaN;
        const alert = p.reject_alert ? cell("<span class=\"warn\">rejects high</span>") : null;
        return [p.server, p.pool, p.level, alert || yesno(p.healthy, "healthy", p.unhealthy_reason || "down"), p.carrying ? "yes" : "", hashrate(p.hashrate_hs), p.miners, ss.length, acc, rej, isFinite(age) ? age.toFixed(0) + " s" : "–"];
      }), "no pools configured");

    const acct = stratum.accounting || {};
    const conns = stratum.connections || {};
    table("listeners", ["listener", "miners", "received", "valid", "rejected", "forwarded", "pool accepted", "pool rejected", "no verdict"],
      Object.keys(conns).sort().map((s) => [s, conns[s], acct.received, acct.valid, acct.rejected, acct.forwarded, acct.pool_accepted, acct.pool_rejected, acct.no_verdict]),
      "no listeners");

    if (gpus && gpus.gpus) {
      table("gpus", ["#", "model", "state", "owner", "power", "temp", "util", "processes", "health"], gpus.gpus.map((g) => {
        const t = g.telemetry || {}, sw = g.switch || {};
        const procs = (t.compute_processes || []).concat(t.graphics_processes || []);
        const owner = (o) => !o ? "" : typeof o === "string" ? o :
          (o.class || "") + (o.class === "foreign" || o.class === "unknown" ? " (" + (o.unit || o.container || o.comm || o.reason || "?") + ")" : "");
        const ptxt = procs.map((p) => "pid " + p.pid + (p.owner ? " " + owner(p.owner) : "")).join(", ");
        const h = g.health || {};
        const healthy = (h.state || h) === "healthy" || h.healthy === true;
        return [g.index, g.name, sw.state || "–", sw.owner || sw.workload || "", (t.power_draw_mw / 1000).toFixed(0) + " / " + (t.power_limit_mw / 1000).toFixed(0) + " W",
          (t.temperature_c || 0) + " °C", (t.utilization_gpu_pct || 0) + "%", cell(esc(ptxt || "none"), "wrap"), yesno(healthy, "healthy", h.reason || h.state || "unhealthy")];
      }), "no GPUs");
    } else {
      table("gpus", [], [], "GPU monitoring is off");
    }
    if (contracts && contracts.contracts) {
      table("contracts", ["id", "state", "GPUs serving / desired", "workload", "start", "end", "source", "shortfall"], contracts.contracts.map((c) =>
        [c.id, c.state, (c.serving || 0) + " / " + (c.desired || 0), c.workload, new Date(c.start).toLocaleString(), new Date(c.end).toLocaleString(), c.source, cell(esc(c.shortfall || ""), "wrap")]),
      "no contracts");
    } else {
      table("contracts", [], [], "the switcher is off");
    }
    const ev = (events.events || []).slice().reverse();
    table("events", ["time", "component", "subject", "what", "reason"], ev.map((e) =>
      [new Date(e.time).toLocaleTimeString(), e.component, e.subject, e.kind + (e.from ? ": " + e.from + " → " + e.to : ""), cell(esc(e.reason || "") + (e.details && e.details.message ? " — " + esc(e.details.message) : ""), "wrap")]),
      "no events yet");
  }

  async function refreshWorkers() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (state.after) q.set("after", state.after);
    if (state.q) q.set("q", state.q);
    const w = await api("/api/v1/workers?" + q.toString());
    let list = w.workers || [];
    if (state.q) list = list.filter((x) => x.name.toLowerCase().includes(state.q.toLowerCase()));
    if (list.length > PAGE) list = list.slice(0, PAGE); // a proxyd without paging answers everything
    state.next = w.next || "";
    $("workers-next").disabled = !state.next;
    $("workers-first").disabled = !state.after;
    $("workers-total").textContent = (w.total !== undefined ? "(" + w.total.toLocaleString() + " total)" : "");
    table("workers", ["name", "hashrate", "connections", "difficulty", "accepted", "pool accepted", "rejected", "last share", "agent"], list.map((x) => {
      const live = x.live || {}, c0 = (x.connections || [])[0] || {};
      const rej = Object.values(live.rejected_by_reason || {}).reduce((a, n) => a + n, 0) + (live.pool_rejected || 0);
      return [x.name, hashrate(x.hashrate_hs), (x.connections || []).length, c0.difficulty, live.accepted, live.pool_accepted, rej, ago(live.last_share), c0.user_agent];
    }), state.q ? "no worker matches" : "no workers");
  }

  async function refresh() {
    try { await refreshMetrics(); } catch (e) { $("updated").textContent = "metrics: " + e.message; }
    if (token()) {
      try {
        await refreshAPI();
        await refreshWorkers();
        $("auth").hidden = true;
      } catch (e) {
        $("auth").hidden = false;
        $("auth-note").textContent = e.message === "unauthorized" ? "The token was refused: paste the current one." : "API: " + e.message;
      }
    } else {
      $("auth").hidden = false;
      ["pools", "listeners", "workers", "gpus", "contracts", "events"].forEach((id) => table(id, [], [], "paste the API token to see this"));
    }
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  document.addEventListener("DOMContentLoaded", () => {
    takeFragmentToken();
    $("token-form").addEventListener("submit", (e) => { e.preventDefault(); localStorage.setItem(TOKEN_KEY, $("token").value.trim()); $("token").value = ""; refresh(); });
    $("forget").addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); refresh(); });
    $("worker-search").addEventListener("submit", (e) => { e.preventDefault(); state.q = $("worker-q").value.trim(); state.after = ""; state.cursors = []; refreshWorkers().catch(() => {}); });
    $("workers-next").addEventListener("click", () => { if (state.next) { state.cursors.push(state.after); state.after = state.next; refreshWorkers().catch(() => {}); } });
    $("workers-first").addEventListener("click", () => { state.after = ""; state.cursors = []; refreshWorkers().catch(() => {}); });
    refresh();
    setInterval(refresh, REFRESH_MS);
  });
})();
