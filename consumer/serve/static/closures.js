// The dashboard's closure list: the closures behind a row of the grouped table (an
// account-scoped key: account, account,channel_type, inbox) in the row's window, from
// /v1/closures/conversations, a page at a time. grouped.js opens it on a click.
"use strict";

window.convmetricsClosures = function ({ state, getJSON, HttpError, setText, escape, count, lag, utcFull }) {
  state.closurePage = 100; // closures per page; "more closures" fetches the next
  // the all-time row's span: every closure (event times are unix seconds within JS's exact integers)
  const EVER = [-9007199254740991, 9007199254740991];
  let view = null; // {params, title, rows, next, error, loading}: also state.closures
  let fetches = 0;

  // The closures of a grouped row: its key's account (and channel type or inbox), closed in
  // its window ([window_start, window_end); all time for an all-time row).
  function open(key, windowStart, windowEnd, label) {
    const params = { account: String(key.account), limit: String(state.closurePage) };
    if (key.channel_type !== undefined) params.channel_type = String(key.channel_type);
    if (key.inbox !== undefined) params.inbox = String(key.inbox);
    const [from, to] = windowStart === null || windowStart === undefined ? EVER : [windowStart, windowEnd];
    params.from = String(from);
    params.to = String(to);
    const what = Object.entries(key).map(([d, v]) => `${d.replace(/_/g, " ")} ${v}`).join(", ");
    view = state.closures = { params, title: `Closures of ${what}, ${label}`, rows: [], next: null, error: null,
      loading: true };
    document.getElementById("closure-list").hidden = false;
    draw();
    return more();
  }

  // The next page of the open list (the first, after `open`).
  async function more() {
    if (!view) return;
    const mine = ++fetches;
    const asked = view;
    const query = Object.assign({}, asked.params);
    if (asked.next) query.cursor = asked.next;
    asked.loading = true;
    try {
      const body = await getJSON("/v1/closures/conversations", query);
      if (mine !== fetches || asked !== view) return;
      view.rows = view.rows.concat(body.rows);
      view.next = body.next;
      view.error = null;
    } catch (err) {
      if (err instanceof HttpError && err.status === 401) throw err;
      if (mine !== fetches || asked !== view) return;
      view.error = String(err.message || err);
    }
    view.loading = false;
    draw();
  }

  function close() {
    view = state.closures = null;
    fetches++;
    document.getElementById("closure-list").hidden = true;
  }

  function draw() {
    if (!view) return;
    setText("closure-list-title", view.title);
    document.querySelector("#closures-of-row tbody").innerHTML = view.rows.map((r) =>
      `<tr><td>${escape(r.conversation)}</td><td class="mono">${r.event_id === null ? "–" : escape(r.event_id)}</td>` +
      `<td>${escape(r.channel_type)}</td><td>${r.inbox === null ? "–" : escape(r.inbox)}</td>` +
      `<td>${escape(utcFull(r.closed_at))}</td><td class="num">${r.time_to_close === null ? "–" : lag(r.time_to_close)}</td>` +
      `<td>${r.first_close ? "first" : ""}</td></tr>`).join("");
    document.getElementById("closure-list-more").hidden = !view.next;
    const n = view.rows.length;
    setText("closure-list-note", view.loading ? "Loading…" : view.error ? "Cannot load closures: " + view.error :
      n === 0 ? "No closures" : `${count(n)} ${n === 1 ? "closure" : "closures"}${view.next ? " shown; more in the API" : ""}`);
    document.getElementById("closure-list-note").classList.toggle("error", Boolean(view.error));
  }

  function wire() {
    document.getElementById("closure-list-more").addEventListener("click", () => {
      more().catch((err) => setText("closure-list-note", "Cannot load closures: " + (err.message || err)));
    });
    document.getElementById("closure-list-close").addEventListener("click", close);
  }

  return { open, wire };
};
