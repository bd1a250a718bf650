// The dashboard's live backlog: GET /v1/backlog (open, unassigned and snoozed conversations
// now, over the conversations the consumer remembers) by a grouping of the metric set. Shown
// where the store's metric set folds the gauges (/v1/metric-set's "gauges": the full set).
// dashboard.js calls `refresh` on every poll, after the metric set is loaded.
"use strict";

window.convmetricsBacklog = function ({ state, getJSON, setText, escape, count, utcFull }) {
  let fetches = 0;
  let group = null;

  function offered() {
    const gs = state.metricSet ? state.metricSet.groupings : [];
    return gs.filter((g) => !state.scoped || g.dimensions.includes("account"));
  }

  function drawControls(groups) {
    const select = document.getElementById("backlog-group");
    const names = groups.map((g) => g.name);
    if (select.dataset.names !== names.join(" ")) {
      select.innerHTML = names.map((n) => `<option value="${escape(n)}">${escape(n)}</option>`).join("");
      select.dataset.names = names.join(" ");
    }
    select.value = group;
  }

  function draw(body, gauges, dims) {
    const head = dims.map((d) => `<th>${escape(d)}</th>`).join("") +
      gauges.map((g) => `<th class="num" title="${escape(g.description)}">${escape(g.name)}</th>`).join("");
    document.querySelector("#backlog thead").innerHTML = `<tr>${head}</tr>`;
    const totals = gauges.map(() => 0);
    const rows = body.rows.map((r) => {
      gauges.forEach((g, i) => { totals[i] += r[g.name]; });
      return "<tr>" + dims.map((d) => `<td>${escape(String(r.key[d]))}</td>`).join("") +
        gauges.map((g) => `<td class="num">${count(r[g.name])}</td>`).join("") + "</tr>";
    });
    document.querySelector("#backlog tbody").innerHTML = rows.join("");
    gauges.forEach((g, i) => setText(`backlog-${g.name}`, count(totals[i])));
    // a token scoped to accounts gets no as_of (the store's newest event may be another tenant's)
    const asOf = state.scoped ? "" : body.as_of === null ? " · no events yet"
      : " · as of " + utcFull(body.as_of) + " (newest event time seen)";
    setText("backlog-note", `${body.rows.length} ${body.group} rows with a non-zero gauge${asOf}`);
  }

  async function refresh() {
    const section = document.getElementById("backlog-card");
    const gauges = (state.metricSet && state.metricSet.gauges) || [];
    const groups = offered();
    section.hidden = gauges.length === 0 || groups.length === 0;
    if (section.hidden) return;
    if (!groups.some((g) => g.name === group)) group = groups[0].name;
    drawControls(groups);
    const mine = ++fetches;
    const query = { group };
    const account = state.grouped && state.grouped.filters && state.grouped.filters.account;
    if (account && groups.find((g) => g.name === group).dimensions.includes("account")) query.account = account;
    try {
      const body = await getJSON("/v1/backlog", query);
      if (mine !== fetches) return; // a newer view overtook it
      draw(body, gauges, groups.find((g) => g.name === group).dimensions);
      state.backlogShown = { group, rows: body.rows.length };
    } catch (err) {
      if (mine === fetches) setText("backlog-note", "Cannot load the backlog: " + (err.message || err));
    }
  }

  function wire() {
    document.getElementById("backlog-group").addEventListener("change", (e) => {
      group = e.target.value;
      refresh();
    });
  }

  return { refresh, wire };
};
