// The dashboard's grouped table: /v1/metrics rows of a grouping and window, filtered, with a
// column per metric of the store's metric set (/v1/metric-set), drilling from a row to a
// finer grouping. It names no metric: a metric added to the registry shows up without a
// change here. dashboard.js calls it with the page's state and helpers.
"use strict";

window.convmetricsGrouped = function ({ state, getJSON, HttpError, setText, escape, count, lag, utc, PALETTE,
  openClosures }) {
  const GROUPED_ROWS = 100; // rows per page; "more rows" fetches the next page
  // a sized window shows the newest windows of the data: how many, and how it is named
  const GROUPED_SPAN = { "1m": 60, "1h": 24, "1d": 7 };
  const WINDOW_SIZE = { "1m": 60, "1h": 3600, "1d": 86400 };
  const WINDOW_NAME = { all: "all time", "1d": "per day (7 d)", "1h": "per hour (24 h)", "1m": "per minute (1 h)" };

  // The windows the table offers for a grouping: those it keeps; sized ones only where the
  // newest window is known (/v1/summary's; for a scoped token, its account's own).
  function offeredWindows(name) {
    return grouping(name).windows.filter(
      (w) => w === "all" || (state.newest && GROUPED_SPAN[w] && state.newest[w] !== null && state.newest[w] !== undefined));
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
      const withBuckets = rows.find((r) => r[m.name] && r[m.name].buckets); // the set's, or the rows'
      const buckets = m.buckets || (withBuckets ? Object.keys(withBuckets[m.name].buckets) : null);
      if (buckets) cols.push({ metric: m, stat: "buckets", buckets });
    }
    return cols;
  }

  function groupedQuery(cursor) {
    const g = state.grouped;
    const q = Object.assign({ group: g.group, window: g.window, limit: String(GROUPED_ROWS) }, g.filters);
    const newest = g.window === "all" || !state.newest ? null : state.newest[g.window];
    if (newest !== null && newest !== undefined) {
      q.from = String(newest - (GROUPED_SPAN[g.window] - 1) * WINDOW_SIZE[g.window]);
      // a bounded span: the store reads an account's rows start by start, not every key's
      // rows of the span (consumer.store.base.listed_starts)
      q.to = String(newest + WINDOW_SIZE[g.window]);
    }
    if (cursor) q.cursor = cursor;
    return q;
  }

  // Fetch the pages of the grouped table its view wants (one, or more after "more rows"); an
  // answer a newer view overtook is dropped. An API error (a bad account) is shown in its
  // note, not as the page's error.
  async function fetchGrouped() {
    const mine = ++groupedFetches;
    const g = state.grouped;
    const shown = g.want || GROUPED_ROWS;
    const view = { group: g.group, window: g.window, filters: g.filters, want: g.want };
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

  // "more rows": the view wants a page more, and the next fetch (this one, or a poll's that
  // overtakes it) fetches that many from the start, so no click is lost to a refresh.
  function moreGrouped() {
    state.grouped.want = state.grouped.rows.length + GROUPED_ROWS;
    return fetchGrouped();
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
    state.grouped = { group, window, filters: kept, want: GROUPED_ROWS, rows: [], next: null, error: null,
      loading: true };
    drawGrouped();
    fetchGrouped().catch((err) => setText("grouped-note", "Cannot load rows: " + (err.message || err)));
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
    const listed = dims.includes("account"); // an account-scoped key: its closures are a click away
    if (listed) head.push("<th>conversations</th>");
    document.querySelector("#grouped thead").innerHTML = "<tr>" + head.join("") + "</tr>";
    document.querySelector("#grouped tbody").innerHTML = g.rows.map((r, i) => {
      const key = (sized ? `<td>${utc(r.window_start, g.window !== "1m")}</td>` : "") +
        dims.map((d) => `<td>${escape(r.key[d])}</td>`).join("");
      const links = drills.map((f) => `<button type="button" class="link" data-row="${i}" data-to="${escape(f.name)}">` +
        `${escape(f.name)}</button>`).join(" ");
      const title = drills.length ? `click: by ${escape(drills[0].name)}` : listed ? "click: its closures" : "";
      return `<tr data-row="${i}"${title ? ` class="drill" title="${title}"` : ""}>` +
        key + cols.map((c) => cellOf(c, r)).join("") + (drills.length ? `<td>${links}</td>` : "") +
        (listed ? `<td><button type="button" class="link" data-closures="${i}">list</button></td>` : "") + "</tr>";
    }).join("");
    document.getElementById("grouped-more").hidden = !g.next;
    const n = g.rows.length;
    setText("grouped-note", g.loading ? "Loading…" : g.error ? "Cannot load rows: " + g.error :
      n === 0 ? "No rows" : `${count(n)} ${n === 1 ? "row" : "rows"}${g.next ? " shown; more in the API" : ""}`);
    document.getElementById("grouped-note").classList.toggle("error", Boolean(g.error));
  }

  // The closures behind a row (an account-scoped key), closed in the row's window.
  function listClosures(row) {
    const g = state.grouped;
    const label = g.window === "all" ? "all time" :
      `closed ${utc(row.window_start, true)} to ${utc(row.window_end, true)} UTC`;
    openClosures(row.key, g.window === "all" ? null : row.window_start, row.window_end, label)
      .catch((err) => setText("closure-list-note", "Cannot load closures: " + (err.message || err)));
  }

  // A click on a row (or on one of its "finer" buttons): its numbers in a finer grouping,
  // filtered to the row's key; on its "list" button, or on a row of an account-scoped key
  // with no finer grouping: its closures.
  function drill(e) {
    const tr = e.target.closest("tr[data-row]");
    if (!tr) return;
    const row = state.grouped.rows[Number(tr.dataset.row)];
    const listed = grouping(state.grouped.group).dimensions.includes("account");
    const drills = finer(state.grouped.group);
    if (listed && (e.target.closest("button[data-closures]") || (!drills.length && !e.target.closest("button")))) {
      listClosures(row);
      return;
    }
    const to = e.target.closest("button[data-to]") ? e.target.closest("button[data-to]").dataset.to :
      drills.length ? drills[0].name : null;
    if (!to) return;
    showGrouped(to, Object.assign({}, state.grouped.filters, row.key), true);
  }

  function wire() {
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
  }

  return {
    loadMetricSet,
    fetch: fetchGrouped,
    draw: drawGrouped,
    drawControls: drawGroupedControls,
    metricLabel,
    wire,
  };
};
