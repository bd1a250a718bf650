// Metrics dashboard: polls the JSON API (/v1/summary, /v1/closures, /v1/metrics) and redraws.
// The grouped table (grouped.js) names no metric: its groupings and columns come from
// /v1/metric-set (the store's metric set), so a metric added to the registry shows up
// without a change to the page.
// No build step, no dependencies but the vendored Chart.js. `?refresh=N` sets the polling
// interval in seconds (default 5). `window.convmetrics` holds what the page last fetched.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  // at most a day: setTimeout takes up to 2^31-1 ms and fires at once above it
  const REFRESH_MS = Math.min(86400, Math.max(1, Number(params.get("refresh")) || 5)) * 1000;
  const REQUEST_TIMEOUT_MS = 30000; // a request that never answers must not stop the polling
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
    series: [], // /v1/closures rows by channel type for the shown windows: their counters
    ttcSeries: [], // the same windows' time to close, of the chosen channel type (ttcKey)
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
    newest: null, // the newest window starts: /v1/summary's; a scoped token's account's own
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

  // event times come from any producer: one beyond what a Date holds shows as "–", it
  // does not stop the page (toISOString throws on an invalid date)
  function utc(t, withDate) {
    const d = new Date(t * 1000);
    if (Number.isNaN(d.getTime())) return "–";
    const hm = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    return withDate ? pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + hm : hm;
  }

  function utcFull(t) {
    const d = new Date(t * 1000);
    if (Number.isNaN(d.getTime())) return "–";
    return d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  const escape = (s) =>
    String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  // -- data -------------------------------------------------------------------------
  class HttpError extends Error {
    constructor(status, message, reason) {
      super(message);
      this.status = status;
      this.reason = reason; // a 401's short reason (the API's `reason`)
    }
  }

  // Ids (accounts, apps, inboxes, conversations) are 64-bit: beyond 2^53 a JS number
  // loses digits, so such an id is kept as its text, which the page shows and sends back
  // as it is. Only ids: times and counts stay numbers, which the page adds to. JSON.parse
  // hands a reviver the number's source text in Chromium 114+, Firefox 135+ and Safari
  // 18.4+; an older browser gets the number, as before.
  const ID_FIELDS = new Set(["account", "app", "inbox", "conversation"]);
  const INTEGER_TEXT = /^-?[0-9]+$/;
  const keepBigIds = (key, value, context) =>
    ID_FIELDS.has(key) && typeof value === "number" && !Number.isSafeInteger(value) &&
    context && INTEGER_TEXT.test(context.source)
      ? context.source
      : value;

  async function getJSON(path, query) {
    const url = query ? path + "?" + new URLSearchParams(query) : path;
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const r = await fetch(url, { cache: "no-store", headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const body = JSON.parse(await r.text(), keepBigIds);
    if (!r.ok) throw new HttpError(r.status, body.error || r.status + " " + r.statusText, body.reason);
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

  // The grouped table (/v1/metrics, its groupings and columns from /v1/metric-set): grouped.js.
  // The closures behind a grouped row (/v1/closures/conversations): closures.js.
  const closures = window.convmetricsClosures({ state, getJSON, HttpError, setText, escape, count, lag, utcFull });
  const grouped = window.convmetricsGrouped({ state, getJSON, HttpError, setText, escape, count, lag, utc, PALETTE,
    openClosures: closures.open });
  // The live backlog (/v1/backlog, where the metric set folds the gauges): backlog.js.
  const backlog = window.convmetricsBacklog({ state, getJSON, setText, escape, count, utcFull });

  // A token scoped to some accounts may not read across tenants (/v1/summary answers 403):
  // the page then shows those accounts' table alone.
  // A token of several accounts reads one at a time (the API asks for account=): the
  // grouped table and the backlog start on the first of its accounts, until one is typed.
  async function refreshScoped() {
    await grouped.loadMetricSet();
    const mine = ++accountFetches;
    const accounts = await fetchAccounts();
    if (mine === accountFetches) Object.assign(state, accounts);
    const first = state.accounts.length ? String(state.accounts[0].key) : null;
    if (first !== null && !state.grouped.filters.account) state.grouped.filters.account = first;
    state.newest = await tenantNewest(state.grouped.filters.account);
    grouped.drawControls();
    await grouped.fetch();
    await backlog.refresh();
    state.error = null;
    drawAccounts();
    setText("kpi-accounts", count(state.accountsTotal));
    setText("status", "The accounts of this token · updated " + new Date().toLocaleTimeString());
    document.getElementById("status").classList.remove("error");
    state.refreshes += 1;
  }

  // A scoped token may not read the data's newest windows (/v1/summary is across tenants):
  // its account's own are found from that account's rows, coarse to fine (its newest day,
  // that day's newest hour, that hour's newest minute: three small reads), so the grouped
  // table offers the sized windows too, ending with the account's newest. Null where the
  // account has no rows of a window (or is not the token's: the table says why).
  async function tenantNewest(account) {
    const newest = { "1d": null, "1h": null, "1m": null };
    const kept = (state.metricSet.groupings.find((g) => g.name === "account") || { windows: [] }).windows;
    if (account === undefined || account === null || account === "") return newest;
    let from = null;
    for (const w of ["1d", "1h", "1m"]) {
      if (!kept.includes(w)) break;
      const q = { group: "account", window: w, account: String(account), limit: "100000" };
      if (from !== null) Object.assign(q, { from: String(from), to: String(from + (w === "1h" ? 86400 : 3600)) });
      let body;
      try {
        body = await getJSON("/v1/metrics", q);
      } catch (err) {
        if (err instanceof HttpError && err.status === 401) throw err;
        break;
      }
      if (!body.rows.length) break;
      from = newest[w] = Math.max(...body.rows.map((r) => r.window_start));
    }
    return newest;
  }

  // The time-to-close chart's rows: one channel type's (`key`), its time to close only.
  // No rows for a key the API does not name (channel types folded into `_other`).
  function ttcRows(w, from, key, folded) {
    if (key === null || (folded && key === "_other")) return Promise.resolve([]);
    return allRows({ by: "channel_type", window: w, from: String(from), key, fields: "time_to_close" });
  }

  // Another channel type chosen for the time-to-close chart: the old line goes at once, and
  // the new one's rows are fetched alone (not a whole refresh) and drawn unless overtaken.
  let ttcFetches = 0;
  async function chooseTtc(key) {
    const mine = ++ttcFetches;
    const w = state.window;
    Object.assign(state, { ttcKey: key, ttcSeries: [] });
    drawCharts();
    if (!state.labels.length) return;
    try {
      const rows = await ttcRows(w, state.labels[0], key, state.summary.channel_types_folded);
      if (mine !== ttcFetches || w !== state.window || key !== state.ttcKey) return;
      state.ttcSeries = rows;
      drawCharts();
    } catch (err) {
      setText("status", "Cannot load the time to close of " + key + ": " + (err.message || err));
    }
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
      state.newest = null; // a global token's time bounds: a scoped one's are its account's
      document.body.classList.add("scoped");
      return refreshScoped();
    }
    const w = state.window;
    const newest = summary.newest[w];
    const channels = summary.channel_types
      .slice()
      .sort((a, b) => b.closures - a.closures || (a.key < b.key ? -1 : 1))
      .map((r) => r.key);
    const charting = () => (state.ttcKey && channels.includes(state.ttcKey) ? state.ttcKey : channels[0] || null);
    const ttcKey = charting();
    let labels = [];
    let series = [];
    let ttcSeries = [];
    if (newest !== null) {
      const from = newest - (SPAN[w] - 1) * SIZE[w];
      // by index: past 2^53 a number + SIZE[w] can round back to itself (times written
      // to the topic past the gateway are not bounded to year 9999)
      for (let i = 0; i < SPAN[w]; i++) labels.push(from + i * SIZE[w]);
      // the counters of every channel type, without their sketches (the bulk of a row, and
      // most of the call's time), and the quantiles of the one channel type charted
      const query = { by: "channel_type", window: w, from: String(from), fields: "closures,closed_unread" };
      // more channel types than the API names (--max-label-values): draw the named ones only
      const folded = summary.channel_types_folded;
      if (folded) query.keys = channels.filter((k) => k !== "_other").join(",");
      [series, ttcSeries] = await Promise.all([allRows(query), ttcRows(w, from, ttcKey, folded)]);
    }
    await grouped.loadMetricSet();
    await grouped.fetch();
    await backlog.refresh();
    const mine = ++accountFetches;
    const accounts = await fetchAccounts();
    if (w !== state.window) return; // switched while fetching: the next poll draws it
    const fresh = { summary, labels, series, channels, error: null };
    // another channel type chosen while fetching: its own fetch (chooseTtc) charts it
    if (ttcKey === charting()) Object.assign(fresh, { ttcSeries, ttcKey });
    Object.assign(state, fresh, mine === accountFetches ? accounts : {});
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
    const ttcCells = byWindow(state.ttcSeries);
    const ttcAt = (t) => (ttcCells.get(t) || new Map()).get(key);
    const ttc = (q) => state.labels.map((t) => (ttcAt(t) ? ttcAt(t).time_to_close[q] : null));
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
        `${escape(grouped.metricLabel(m.name))}</span><span class="value" id="kpi-m-${escape(m.name)}">–</span></div>`).join("");
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

  function drawTtcChoices() {
    const select = document.getElementById("ttc-key");
    const have = Array.from(select.options).map((o) => o.value).join("\n");
    if (have !== state.channels.join("\n")) {
      // an explicit value: an option's text loses leading and repeated spaces
      select.innerHTML = state.channels.map((k) => `<option value="${escape(k)}">${escape(k)}</option>`).join("");
    }
    select.value = state.ttcKey || "";
  }

  function render() {
    drawKpis();
    drawTtcChoices();
    drawCharts();
    drawChannels();
    grouped.draw();
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
        // the API's reason: "unknown token", "token expired at ..."
        const why = err.reason ? " (" + err.reason + ")" : "";
        askForToken(sessionStorage.getItem(TOKEN_KEY) ? "That token was not accepted" + why + "." : null);
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
    document.body.classList.add("locked"); // what an earlier token read goes out of sight
    document.getElementById("forget-token").hidden = true;
    document.getElementById("token-card").hidden = false;
    if (problem) setText("token-note", problem + " Kept for this tab only; ask the operator for one.");
    setText("status", "This API needs a token");
  }

  function start() {
    document.getElementById("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = document.getElementById("token-input");
      const token = input.value.trim();
      if (!/^[\x21-\x7e]+$/.test(token)) { // a header carries printable ASCII only
        setText("token-note", "A token is printable ASCII without spaces: check what was pasted.");
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, token);
      input.value = "";
      state.needsToken = false;
      state.scoped = false;
      document.body.classList.remove("scoped", "locked");
      document.getElementById("token-card").hidden = true;
      document.getElementById("forget-token").hidden = false;
      poll();
    });
    // another token (a tenant with two, an operator checking a tenant's view): a fresh page
    document.getElementById("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    document.getElementById("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
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
      chooseTtc(e.target.value);
    });
    document.getElementById("account-search").addEventListener("input", (e) => {
      state.search = e.target.value;
      redrawAccounts();
    });
    grouped.wire();
    backlog.wire();
    closures.wire();
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
