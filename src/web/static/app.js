// strata's status page: live progress of running jobs over Server-Sent
// Events. Everything else is plain HTML; without this script the page
// still works (reload to see progress).
"use strict";
(function () {
  const panel = document.getElementById("live");
  if (!panel || !window.EventSource) return;
  const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";

  function bytes(n) {
    const units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let v = n, u = 0;
    while (v >= 1000 && u + 1 < units.length) { v /= 1000; u++; }
    return u === 0 ? n + " B" : v.toFixed(2) + " " + units[u];
  }
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
    const two = (x) => String(x).padStart(2, "0");
    return h > 0 ? h + ":" + two(m) + ":" + two(r) : m + ":" + two(r);
  }
  function figures(j) {
    let s = bytes(j.bytes);
    if (j.total != null) s += " of " + bytes(j.total);
    s += " · " + bytes(Math.floor(j.rate)) + "/s";
    if (j.eta_seconds != null) s += " · ETA " + duration(j.eta_seconds);
    return s + " · " + j.files + " files · " + duration(j.elapsed_seconds);
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function rowId(name) { return "live-" + encodeURIComponent(name).replace(/%/g, "%25"); }
  function makeRow(j) {
    const row = el("div", "live-job");
    row.id = rowId(j.name);
    row.dataset.job = j.name;
    const head = el("div");
    head.append(el("b", null, j.name), " ", el("span", "phase"), " ", el("span", "state", "running"));
    const form = document.createElement("form");
    form.method = "post";
    form.className = "inline";
    form.action = "/jobs/" + encodeURIComponent(j.name) + "/cancel";
    const hidden = document.createElement("input");
    hidden.type = "hidden"; hidden.name = "csrf"; hidden.value = csrf;
    form.append(hidden, el("button", "cancel", "Cancel"));
    row.append(head, document.createElement("progress"), " ", el("span", "figures"), el("div", "path"), form);
    return row;
  }
  function findRow(name) {
    return Array.from(panel.querySelectorAll(".live-job")).find((r) => r.dataset.job === name);
  }

  const es = new EventSource("/api/events");
  es.addEventListener("jobs", function (ev) {
    const d = JSON.parse(ev.data);
    const empty = document.getElementById("live-empty");
    const live = new Set();
    for (const j of d.running) {
      live.add(j.name);
      let row = findRow(j.name);
      if (!row || row.dataset.state !== "running" || row.dataset.run !== String(j.id)) {
        const fresh = makeRow(j);
        if (row) row.replaceWith(fresh); else panel.append(fresh);
        row = fresh;
      }
      row.dataset.run = String(j.id);
      row.dataset.state = "running";
      if (empty) empty.hidden = true;
      const bar = row.querySelector("progress");
      if (j.total != null && j.total > 0) {
        bar.max = 1000;
        bar.value = Math.floor(Math.min(j.bytes, j.total) * 1000 / j.total);
      } else {
        bar.removeAttribute("value");
      }
      row.querySelector(".phase").textContent = j.phase;
      row.querySelector(".figures").textContent = figures(j);
      row.querySelector(".path").textContent = j.path;
      const b = row.querySelector("button.cancel");
      if (b && j.cancelling) b.textContent = "Stopping…";
    }
    // A job gone from the running list has finished: say how.
    for (const row of panel.querySelectorAll(".live-job")) {
      if (row.dataset.state !== "running" || live.has(row.dataset.job)) continue;
      const done = d.finished.find((f) => String(f.id) === row.dataset.run);
      if (!done) continue;
      row.dataset.state = done.outcome;
      row.querySelector(".state").textContent = "done: " + done.outcome;
      row.querySelector(".figures").textContent = done.summary;
      const bar = row.querySelector("progress");
      bar.max = 1000;
      bar.value = done.outcome === "ok" || done.outcome === "warning" ? 1000 : bar.value || 0;
      const form = row.querySelector("form");
      if (form) form.remove();
      // The jobs table: its outcome cell too.
      const cell = Array.from(document.querySelectorAll("#jobs tr"))
        .find((tr) => tr.dataset.job === done.job);
      const outcome = cell && cell.children[3];
      if (outcome) {
        outcome.textContent = "";
        outcome.append(el("span", "outcome " + done.outcome, done.outcome));
      }
    }
  });
})();
