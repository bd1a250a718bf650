// Metrics dashboard: polls the JSON API (/v1/summary, /v1/closures, /v1/metrics) and redraws.
// The grouped table names no metric: its groupings and columns come from /v1/metric-set
// (the store's metric set), so a metric added to the registry shows up without a change here.
// No build step, no dependencies but the vendored Chart.js. `?refresh=N` sets the polling
// interval in seconds (default 5). `window.convmetrics` holds what the page last fetched.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const REFRESH_MS = Math.max(1, Number(params.get("refresh")) || 5) * 1000;
  const SIZE = { "1m": 60, "1h": 3600 };
  const SPAN = { "1m": 120, "1h": 48 }; // windows shown, ending with the newest one
  const TABLE_ROWS = 100;
  const PALETTE = [ // 20 distinct colours, busiest channel types first
    "#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16",
    "#f97316", "#64748b", "#1e3a8a", "#a16207", "#065f46", "#991b1b", "#5b21b6", "#0e7490",
    "#9d174d", "#3f6212", "#c2410c", "#94a3b8",
  ];
  // tick steps for durations: ticks land on round minutes, hours and days
  const DURATION_STEPS = [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800];

  const state = {
    window: "1h",
    ttcKey: null,
    search: "",
    sort: { col: "closures", desc: true },
    summary: null,
    series: [], // /v1/closures rows by channel type for the shown windows
    labels: [], // window starts shown on the time charts
    accounts: [], // the account table's page: /v1/closures by account, all time, ranked by the API
    accountsMatch: 0, // accounts that match the search
    accountsTotal: 0, // all accounts
    channels: [], // channel types, busiest first (fixes their colours)
    refreshes: 0,
    error: null,
    scoped: false, // the token reads some accounts only: the page shows their table alone
    needsToken: false,
    metricSet: null, // /v1/metric-set: the store's groupings and metrics
    // the grouped table: a grouping, filters on its dimensions (from a drill-down or the
    // account field), and the /v1/metrics rows of its first pages, all time
    grouped: { group: "channel_type", window: "all", filters: {}, rows: [], next: null, error: null, loading: true },
    newest: null, // /v1/summary's newest window starts (null for a scoped token: no sized windows)
    groupedBack: [], // the views a drill-down left, for "back"
  };
  // A token (when the API asks for one) is kept for this tab only.
  const TOKEN_KEY = "convmetrics.token";
  window.convmetrics = state;

  // -- formatting -------------------------------------------------------------------
  const nf = new Intl.NumberFormat("en-US");
  const count = (n) => nf.format(n);
  const pct = (part, whole) => (whole ? ((100 * part) / whole).toFixed(1) + "%" : "–");
  const pad = (n) => String(n).padStart(2, "0");

  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d" + pad(Math.floor((s % 86400) / 3600)) + "h";
  }

  function lag(s) {
    if (s === null || s === undefined) return "–";
    return s < 10 ? s.toFixed(2) + "s" : duration(s);
  }

  function utc(t, withDate) {
    const d = new Date(t * 1000);
    const hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    return withDate ? pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + hm : hm;
  }

  function utcFull(t) {
    return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  const escape = (s) =>
    String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  // -- data -------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function getJSON(path, query) {
    const url = query ? path + "?" + new URLSearchParams(query) : path;
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const r = await fetch(url, { cache: "no-store", headers });
    const body = await r.json();
    if (!r.ok) throw new HttpError(r.status, body.error || r.status + " " + r.statusText);
    return body;
  }

  async function allRows(query) {
    const rows = [];
    let cursor = null;
    do {
      const q = Object.assign({ limit: "10000" }, query, cursor ? { cursor } : {});
      const body = await getJSON("/v1/closures", q);
      rows.push(...body.rows);
      cursor = body.next;
    } while (cursor);
    return rows;
  }

  // The account table is ranked, searched and cut to TABLE_ROWS by the API (`sort`,
  // `contains`, `limit`): the page never loads every account. Each fetch has a number, so
  // an answer that a newer search or sort overtook is dropped.
  const SORT_PARAM = {
    key: "key",
    closures: "closures",
    reopens: "reopens",
    unread: "closed_unread/closures",
    mean: "time_to_close.mean",
  };
  let accountFetches = 0;

  async function fetchAccounts() {
    const query = { by: "account", window: "all", limit: String(TABLE_ROWS) };
    query.sort = (state.sort.desc ? "-" : "") + SORT_PARAM[state.sort.col];
    const search = state.search.trim();
    const page = await getJSON("/v1/closures", search ? Object.assign({ contains: search }, query) : query);
    const all = search ? (await getJSON("/v1/closures", Object.assign({}, query, { limit: "1" }))).total : page.total;
    return { accounts: page.rows, accountsMatch: page.total, accountsTotal: all };
  }

  async function redrawAccounts() {
    const mine = ++accountFetches;
    try {
      const got = await fetchAccounts();
      if (mine !== accountFetches) return; // a newer search or sort is on its way
      Object.assign(state, got);
      drawAccounts();
      setText("kpi-accounts", count(state.accountsTotal));
    } catch (err) {
      setText("accounts-note", "Cannot load accounts: " + (err.message || err));
    }
  }

  // -- the grouped table (/v1/metrics) --------------------------------------------------
  const GROUPED_ROWS = 100; // rows per page; "more rows" fetches the next page
  // a sized window shows the newest windows of the data: how many, and how it is named
  const GROUPED_SPAN = { "1m": 60, "1h": 24, "1d": 7 };
  const WINDOW_SIZE = { "1m": 60, "1h": 3600, "1d": 86400 };
  const WINDOW_NAME = { all: "all time", "1d": "per day (7 d)", "1h": "per hour (24 h)", "1m": "per minute (1 h)" };

  // The windows the table offers for a grouping: those it keeps; sized ones only where the
  // newest window is known (not for a scoped token, which cannot read /v1/summary).
  function offeredWindows(name) {
    return grouping(name).windows.filter((w) => w === "all" || (state.newest && GROUPED_SPAN[w]));
  }
  let groupedFetches = 0;

  function grouping(name) {
    return state.metricSet.groupings.find((g) => g.name === name);
  }

  // The groupings offered: the metric set's; a token scoped to accounts reads those by account.
  function offeredGroupings() {
    if (!state.metricSet) return [];
    return state.metricSet.groupings.filter((g) => !state.scoped || g.dimensions.includes("account"));
  }

  // Where a row of a grouping drills to: the groupings that hold all its dimensions and more
  // (channel_type -> account,channel_type; account -> account,channel_type and inbox).
  function finer(name) {
    const dims = grouping(name).dimensions;
    return offeredGroupings().filter(
      (g) => g.dimensions.length > dims.length && dims.every((d) => g.dimensions.includes(d)));
  }

  // The metric set's columns for a grouping's all-time rows: a counter is one column, a
  // distribution its p50, p90 and mean (as far as its JSON has them) and its buckets, if the
  // rows carry any.
  function groupedColumns(name, window, rows) {
    const cols = [];
    for (const m of state.metricSet.metrics) {
      if (!m.groupings.includes(name) || !m.windows.includes(window)) continue;
      if (m.kind === "counter") cols.push({ metric: m, stat: null });
      if (m.kind !== "distribution") continue;
      for (const stat of ["p50", "p90", "mean"]) if (m.stats.includes(stat)) cols.push({ metric: m, stat });
      const withBuckets = rows.find((r) => r[m.name] && r[m.name].buckets);
      if (withBuckets) cols.push({ metric: m, stat: "buckets", buckets: Object.keys(withBuckets[m.name].buckets) });
    }
    return cols;
  }

  function groupedQuery(cursor) {
    const g = state.grouped;
    const q = Object.assign({ group: g.group, window: g.window, limit: String(GROUPED_ROWS) }, g.filters);
    const newest = g.window === "all" || !state.newest ? null : state.newest[g.window];
    if (newest !== null && newest !== undefined) {
      q.from = String(newest - (GROUPED_SPAN[g.window] - 1) * WINDOW_SIZE[g.window]);
    }
    if (cursor) q.cursor = cursor;
    return q;
  }

  // Fetch the grouped table's first page (or the pages already shown, on a refresh); an
  // answer a newer view overtook is dropped. An API error (a bad account) is shown in its
  // note, not as the page's error.
  async function fetchGrouped() {
    const mine = ++groupedFetches;
    const shown = Math.max(GROUPED_ROWS, state.grouped.rows.length);
    const view = { group: state.grouped.group, window: state.grouped.window, filters: state.grouped.filters };
    let rows = [];
    let next = null;
    let error = null;
    try {
      do {
        const body = await getJSON("/v1/metrics", groupedQuery(next));
        rows.push(...body.rows);
        next = body.next;
      } while (next && rows.length < shown);
    } catch (err) {
      if (err instanceof HttpError && err.status === 401) throw err;
      rows = [];
      next = null;
      error = String(err.message || err);
    }
    if (mine !== groupedFetches) return;
    state.grouped = Object.assign({}, view, { rows, next, error, loading: false });
    drawGrouped();
  }

  async function moreGrouped() {
    const mine = ++groupedFetches;
    const body = await getJSON("/v1/metrics", groupedQuery(state.grouped.next));
    if (mine !== groupedFetches) return;
    state.grouped.rows.push(...body.rows);
    state.grouped.next = body.next;
    drawGrouped();
  }

  async function loadMetricSet() {
    if (!state.metricSet) state.metricSet = await getJSON("/v1/metric-set");
    const offered = offeredGroupings();
    if (!offered.some((g) => g.name === state.grouped.group) && offered.length) {
      state.grouped.group = offered[0].name;
      state.grouped.window = "all";
      state.grouped.filters = {};
    }
  }

  // Show a view of the grouped table: a grouping, a window (kept where the grouping keeps it,
  // else all time) and filters on its dimensions.
  function showGrouped(group, filters, remember, window) {
    const old = state.grouped;
    if (remember) state.groupedBack.push({ group: old.group, window: old.window, filters: old.filters });
    window = window || old.window;
    if (!offeredWindows(group).includes(window)) window = "all";
    const dims = grouping(group).dimensions;
    const kept = {};
    for (const [d, v] of Object.entries(filters)) if (dims.includes(d)) kept[d] = String(v);
    state.grouped = { group, window, filters: kept, rows: [], next: null, error: null, loading: true };
    drawGrouped();
    fetchGrouped().catch((err) => setText("grouped-note", "Cannot load rows: " + (err.message || err)));
  }

  // A token scoped to some accounts may not read across tenants (/v1/summary answers 403):
  // the page then shows those accounts' table alone.
  async function refreshScoped() {
    await loadMetricSet();
    drawGroupedControls();
    await fetchGrouped();
    const mine = ++accountFetches;
    const accounts = await fetchAccounts();
    if (mine === accountFetches) Object.assign(state, accounts);
    state.error = null;
    drawAccounts();
    setText("kpi-accounts", count(state.accountsTotal));
    setText("status", "The accounts of this token · updated " + new Date().toLocaleTimeString());
    document.getElementById("status").classList.remove("error");
    state.refreshes += 1;
  }

  async function refresh() {
    if (state.scoped) return refreshScoped();
    let summary;
    try {
      summary = await getJSON("/v1/summary");
      state.newest = summary.newest;
    } catch (err) {
      if (!(err instanceof HttpError && err.status === 403)) throw err;
      state.scoped = true;
      document.body.classList.add("scoped");
      return refreshScoped();
    }
    const w = state.window;
    const newest = summary.newest[w];
    const channels = summary.channel_types
      .slice()
      .sort((a, b) => b.closures - a.closures || (a.key < b.key ? -1 : 1))
      .map((r) => r.key);
    let labels = [];
    let series = [];
    if (newest !== null) {
      const from = newest - (SPAN[w] - 1) * SIZE[w];
      for (let t = from; t <= newest; t += SIZE[w]) labels.push(t);
      const query = { by: "channel_type", window: w, from: String(from) };
      // more channel types than the API names (--max-label-values): draw the named ones only
      if (summary.channel_types_folded) query.keys = channels.filter((k) => k !== "_other").join(",");
      series = await allRows(query);
    }
    await loadMetricSet();
    await fetchGrouped();
    const mine = ++accountFetches;
    const accounts = await fetchAccounts();
    if (w !== state.window) return; // switched while fetching: the next poll draws it
    Object.assign(state, { summary, labels, series, channels, error: null }, mine === accountFetches ? accounts : {});
    if (!state.ttcKey || !channels.includes(state.ttcKey)) state.ttcKey = channels[0] || null;
    render();
    state.refreshes += 1;
  }

  // -- charts -----------------------------------------------------------------------
  const colour = (key) => PALETTE[Math.max(0, state.channels.indexOf(key)) % PALETTE.length];
  const charts = {};

  function chart(id, type, yTitle, yTick, stacked) {
    return new Chart(document.getElementById(id), {
      type,
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 12, boxHeight: 12 } },
          tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + (c.raw === null ? "–" : yTick(c.raw)) } },
        },
        scales: {
          x: { stacked, grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
          y: { stacked, beginAtZero: true, title: { display: true, text: yTitle }, ticks: { callback: yTick } },
        },
        spanGaps: true,
      },
    });
  }

  function byWindow(rows) {
    const m = new Map();
    for (const r of rows) {
      if (!m.has(r.window_start)) m.set(r.window_start, new Map());
      m.get(r.window_start).set(r.key, r);
    }
    return m;
  }

  function drawCharts() {
    const cells = byWindow(state.series);
    const labels = state.labels.map((t) => utc(t, state.window === "1h"));
    const at = (t, key) => (cells.get(t) || new Map()).get(key);

    charts.closures.data = {
      labels,
      datasets: state.channels.map((key) => ({
        label: key,
        data: state.labels.map((t) => (at(t, key) ? at(t, key).closures : 0)),
        backgroundColor: colour(key),
        stack: "closures",
      })),
    };
    charts.closures.update("none");

    const key = state.ttcKey;
    const ttc = (q) => state.labels.map((t) => (at(t, key) ? at(t, key).time_to_close[q] : null));
    charts.ttc.data = {
      labels,
      datasets: [
        { label: "p50", data: ttc("p50"), borderColor: colour(key), backgroundColor: colour(key), pointRadius: 2 },
        { label: "p90", data: ttc("p90"), borderColor: colour(key), backgroundColor: colour(key),
          borderDash: [6, 4], pointRadius: 2 },
      ],
    };
    const top = Math.max(0, ...charts.ttc.data.datasets.flatMap((d) => d.data.filter((v) => v !== null)));
    charts.ttc.options.scales.y.ticks.stepSize = DURATION_STEPS.find((st) => top / st <= 6) || 604800;
    charts.ttc.update("none");

    const share = state.labels.map((t) => {
      let closed = 0;
      let unread = 0;
      for (const r of (cells.get(t) || new Map()).values()) {
        closed += r.closures;
        unread += r.closed_unread;
      }
      return closed ? (100 * unread) / closed : null;
    });
    charts.unread.data = {
      labels,
      datasets: [{ label: "all channel types", data: share, borderColor: "#ef4444",
        backgroundColor: "rgba(239, 68, 68, 0.12)", fill: true, pointRadius: 2 }],
    };
    charts.unread.update("none");
  }

  // -- tables and numbers -----------------------------------------------------------
  function setText(id, text) {
    document.getElementById(id).textContent = text;
  }

  // The fixed tiles above show these counters; every other counter of the metric set that
  // counts by channel type gets a tile of its all-time total.
  const FIXED_KPIS = ["closures", "reopens", "closed_unread"];

  function drawMoreKpis() {
    const box = document.getElementById("kpi-more");
    const t = state.summary.totals;
    const more = state.metricSet ? state.metricSet.metrics.filter((m) => m.kind === "counter" &&
      !FIXED_KPIS.includes(m.name) && m.groupings.includes("channel_type") && m.windows.includes("all") &&
      t[m.name] !== undefined) : [];
    const ids = more.map((m) => "kpi-m-" + m.name).join(" ");
    if (box.dataset.ids !== ids) {
      box.innerHTML = more.map((m) => `<div class="kpi" title="${escape(m.description)}"><span class="label">` +
        `${escape(metricLabel(m.name))}</span><span class="value" id="kpi-m-${escape(m.name)}">–</span></div>`).join("");
      box.dataset.ids = ids;
    }
    for (const m of more) setText("kpi-m-" + m.name, count(t[m.name]));
    box.hidden = more.length === 0;
  }

  function drawKpis() {
    drawMoreKpis();
    const t = state.summary.totals;
    setText("kpi-closures", count(t.closures));
    setText("kpi-reopens", count(t.reopens));
    setText("kpi-unread", count(t.closed_unread));
    setText("kpi-unread-share", pct(t.closed_unread, t.closures) + " of closures");
    setText("kpi-ttc-mean", duration(t.ttc_mean));
    setText("kpi-ttc-count", "over " + count(t.ttc_count) + " timed closures");
    const folded = state.summary.channel_types_folded || 0; // names summed under _other
    setText("kpi-channels", count(state.channels.length - (folded ? 1 : 0) + folded));
    setText("kpi-accounts", count(state.accountsTotal));
    const newest = state.summary.newest;
    const upTo = newest["1m"] ?? newest["1h"] ?? newest["1d"];
    setText("status", (upTo === null ? "No data yet" : "Data up to " + utcFull(upTo)) +
      " · updated " + new Date().toLocaleTimeString() + " · refreshes every " + REFRESH_MS / 1000 + " s");
    document.getElementById("status").classList.remove("error");
  }

  function cellsOf(r) {
    const t = r.time_to_close;
    return [
      `<td class="num">${count(r.closures)}</td>`,
      `<td class="num">${count(r.reopens)}</td>`,
      `<td class="num">${pct(r.closed_unread, r.closures)}</td>`,
      `<td class="num">${duration(t.p50)}</td>`,
      `<td class="num">${duration(t.p90)}</td>`,
      `<td class="num">${duration(t.mean)}</td>`,
    ].join("");
  }

  function drawChannels() {
    const rows = state.channels.map((k) => state.summary.channel_types.find((r) => r.key === k));
    document.querySelector("#channels tbody").innerHTML = rows
      .map((r) => `<tr data-key="${escape(r.key)}"><td><span class="swatch" style="background:${colour(r.key)}">` +
        `</span>${escape(r.key)}</td>${cellsOf(r)}` +
        `<td class="num lag">${lag(r.ingest_lag && r.ingest_lag.p50)}</td>` +
        `<td class="num lag">${lag(r.ingest_lag && r.ingest_lag.p99)}</td></tr>`)
      .join("");
  }

  function drawAccounts() {
    const shown = state.accounts;
    document.querySelector("#accounts tbody").innerHTML = shown
      .map((r) => `<tr data-key="${escape(r.key)}"><td>${escape(r.key)}</td>${cellsOf(r)}</tr>`)
      .join("");
    for (const th of document.querySelectorAll("#accounts th")) {
      th.classList.toggle("sorted-desc", th.dataset.col === state.sort.col && state.sort.desc);
      th.classList.toggle("sorted-asc", th.dataset.col === state.sort.col && !state.sort.desc);
    }
    const total = state.accountsTotal;
    const matched = state.search.trim() ? `${count(state.accountsMatch)} of ${count(total)} accounts match` :
      `${count(total)} accounts`;
    setText("accounts-note",
      state.accountsMatch > shown.length ? `${matched}; showing the first ${shown.length}` : matched);
  }

  const metricLabel = (name) => name.replace(/_/g, " ");

  function cellOf(col, r) {
    const v = r[col.metric.name];
    if (col.stat === null) return `<td class="num">${v === null || v === undefined ? "–" : count(v)}</td>`;
    if (col.stat === "buckets") {
      const counts = col.buckets.map((b) => (v && v.buckets ? v.buckets[b] || 0 : 0));
      const total = counts.reduce((a, b) => a + b, 0);
      const parts = col.buckets.map((b, i) => total ? `<span class="seg" style="width:${(100 * counts[i]) / total}%;` +
        `background:${PALETTE[i % PALETTE.length]}" title="${escape(b)}: ${count(counts[i])}"></span>` : "").join("");
      const text = col.buckets.map((b, i) => `${b} ${count(counts[i])}`).join(" · ");
      return `<td class="buckets" title="${escape(text)}"><span class="bar">${parts}</span>` +
        `<span class="bucket-counts">${escape(text)}</span></td>`;
    }
    const x = v ? v[col.stat] : null;
    return `<td class="num">${col.metric.unit === "s" ? lag(x) : x === null || x === undefined ? "–" : count(x)}</td>`;
  }

  function drawGroupedControls() {
    if (!state.metricSet) return;
    const select = document.getElementById("group");
    const offered = offeredGroupings();
    const have = Array.from(select.options).map((o) => o.value).join("\n");
    if (have !== offered.map((g) => g.name).join("\n")) {
      select.innerHTML = offered.map((g) => `<option value="${escape(g.name)}">${escape(g.name)}</option>`).join("");
    }
    const g = state.grouped;
    select.value = g.group;
    const dims = grouping(g.group).dimensions;
    document.getElementById("grouped-account-label").hidden = !dims.includes("account");
    const input = document.getElementById("grouped-account");
    if (document.activeElement !== input) input.value = g.filters.account || "";
    document.getElementById("grouped-back").hidden = state.groupedBack.length === 0;
    const filters = Object.entries(g.filters).map(([d, v]) => `${d} = ${v}`);
    const windows = document.getElementById("grouped-window");
    const offeredW = offeredWindows(g.group);
    if (Array.from(windows.options).map((o) => o.value).join("\n") !== offeredW.join("\n")) {
      windows.innerHTML = offeredW.map((w) => `<option value="${w}">${WINDOW_NAME[w] || w}</option>`).join("");
    }
    windows.value = g.window;
    setText("grouped-title", "By " + g.group + ", " + (WINDOW_NAME[g.window] || g.window));
    setText("grouped-filters", filters.length ? "Only " + filters.join(", ") : "");
  }

  function drawGrouped() {
    if (!state.metricSet) return;
    drawGroupedControls();
    const g = state.grouped;
    const dims = grouping(g.group).dimensions;
    const cols = groupedColumns(g.group, g.window, g.rows);
    const sized = g.window !== "all";
    const drills = finer(g.group);
    const head = (sized ? ["<th>window</th>"] : []).concat(dims.map((d) => `<th>${escape(metricLabel(d))}</th>`)).concat(cols.map((c) =>
      `<th class="${c.stat === "buckets" ? "" : "num"}" title="${escape(c.metric.description)}">` +
      `${escape(metricLabel(c.metric.name))}${c.stat ? " " + c.stat : ""}</th>`));
    if (drills.length) head.push("<th>finer</th>");
    document.querySelector("#grouped thead").innerHTML = "<tr>" + head.join("") + "</tr>";
    document.querySelector("#grouped tbody").innerHTML = g.rows.map((r, i) => {
      const key = (sized ? `<td>${utc(r.window_start, g.window !== "1m")}</td>` : "") +
        dims.map((d) => `<td>${escape(r.key[d])}</td>`).join("");
      const links = drills.map((f) => `<button type="button" class="link" data-row="${i}" data-to="${escape(f.name)}">` +
        `${escape(f.name)}</button>`).join(" ");
      return `<tr data-row="${i}"${drills.length ? ` class="drill" title="click: by ${escape(drills[0].name)}"` : ""}>` +
        key + cols.map((c) => cellOf(c, r)).join("") + (drills.length ? `<td>${links}</td>` : "") + "</tr>";
    }).join("");
    document.getElementById("grouped-more").hidden = !g.next;
    const n = g.rows.length;
    setText("grouped-note", g.loading ? "Loading…" : g.error ? "Cannot load rows: " + g.error :
      n === 0 ? "No rows" : `${count(n)} ${n === 1 ? "row" : "rows"}${g.next ? " shown; more in the API" : ""}`);
    document.getElementById("grouped-note").classList.toggle("error", Boolean(g.error));
  }

  // A click on a row (or on one of its "finer" buttons): its numbers in a finer grouping,
  // filtered to the row's key.
  function drill(e) {
    const tr = e.target.closest("tr[data-row]");
    if (!tr) return;
    const drills = finer(state.grouped.group);
    const to = e.target.closest("button[data-to]") ? e.target.closest("button[data-to]").dataset.to :
      drills.length ? drills[0].name : null;
    if (!to) return;
    const row = state.grouped.rows[Number(tr.dataset.row)];
    showGrouped(to, Object.assign({}, state.grouped.filters, row.key), true);
  }

  function drawTtcChoices() {
    const select = document.getElementById("ttc-key");
    const have = Array.from(select.options).map((o) => o.value).join("\n");
    if (have !== state.channels.join("\n")) {
      select.innerHTML = state.channels.map((k) => `<option>${escape(k)}</option>`).join("");
    }
    select.value = state.ttcKey || "";
  }

  function render() {
    drawKpis();
    drawTtcChoices();
    drawCharts();
    drawChannels();
    drawGrouped();
    drawAccounts();
  }

  // -- wiring -----------------------------------------------------------------------
  let timer = null;
  let running = false;
  let again = false;
  async function poll() {
    if (running) {
      again = true; // e.g. the window switch while a refresh is in flight
      return;
    }
    running = true;
    clearTimeout(timer);
    try {
      await refresh();
    } catch (err) {
      state.error = String(err.message || err);
      const status = document.getElementById("status");
      if (err instanceof HttpError && err.status === 401) {
        askForToken(sessionStorage.getItem(TOKEN_KEY) ? "That token was not accepted." : null);
        running = false;
        return; // polling resumes once a token is given
      }
      status.textContent = "Cannot load metrics: " + state.error + " (retrying)";
      status.classList.add("error");
    }
    running = false;
    if (again) {
      again = false;
      poll();
      return;
    }
    timer = setTimeout(poll, REFRESH_MS);
  }

  function askForToken(problem) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.needsToken = true;
    document.getElementById("token-card").hidden = false;
    if (problem) setText("token-note", problem + " Kept for this tab only; ask the operator for one.");
    setText("status", "This API needs a token");
  }

  function start() {
    document.getElementById("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = document.getElementById("token-input");
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      input.value = "";
      state.needsToken = false;
      state.scoped = false;
      document.body.classList.remove("scoped");
      document.getElementById("token-card").hidden = true;
      poll();
    });
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#3e4c59";
    charts.closures = chart("closures-chart", "bar", "closures", (v) => count(v), true);
    charts.ttc = chart("ttc-chart", "line", "seconds to close", duration, false);
    charts.unread = chart("unread-chart", "line", "% of closures unread", (v) => Number(v).toFixed(0) + "%", false);

    for (const b of document.querySelectorAll(".switch button")) {
      b.addEventListener("click", () => {
        state.window = b.dataset.window;
        for (const o of document.querySelectorAll(".switch button")) o.classList.toggle("on", o === b);
        poll();
      });
    }
    document.getElementById("ttc-key").addEventListener("change", (e) => {
      state.ttcKey = e.target.value;
      drawCharts();
    });
    document.getElementById("account-search").addEventListener("input", (e) => {
      state.search = e.target.value;
      redrawAccounts();
    });
    document.getElementById("grouped-window").addEventListener("change", (e) => {
      showGrouped(state.grouped.group, state.grouped.filters, true, e.target.value);
    });
    document.getElementById("group").addEventListener("change", (e) => {
      showGrouped(e.target.value, state.grouped.filters, true);
    });
    document.getElementById("grouped-account").addEventListener("change", (e) => {
      const filters = Object.assign({}, state.grouped.filters);
      const value = e.target.value.trim();
      if (value) filters.account = value;
      else delete filters.account;
      showGrouped(state.grouped.group, filters, false);
    });
    document.getElementById("grouped-back").addEventListener("click", () => {
      const back = state.groupedBack.pop();
      if (back) showGrouped(back.group, back.filters, false, back.window);
    });
    document.getElementById("grouped-more").addEventListener("click", () => {
      moreGrouped().catch((err) => setText("grouped-note", "Cannot load rows: " + (err.message || err)));
    });
    document.querySelector("#grouped tbody").addEventListener("click", drill);
    for (const th of document.querySelectorAll("#accounts th[data-col]")) {
      th.addEventListener("click", () => {
        const col = th.dataset.col;
        state.sort = { col, desc: state.sort.col === col ? !state.sort.desc : col !== "key" };
        redrawAccounts();
      });
    }
    poll();
  }

  start();
})();
