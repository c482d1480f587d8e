// The jobs list: molecule thumbnails, and the first page follows its jobs: a watch
// (POST /api/v1/jobs/watch, a long-poll, brief answers) over the pending and running jobs it
// shows, whose answers update those rows' states and the counts in place. The same watch
// names the newest job shown and answers newer=true once a later one is submitted: only then
// is the whole page fetched again. Nothing runs on a timer (issue 22): a page re-rendered
// with its thumbnails every few seconds cost the browser half a core.
"use strict";

(() => {
  const WATCH_SECONDS = 25;
  const COALESCE_SECONDS = 1;
  const RETRY_MS = 5000;
  const ACTIVE = new Set(["pending", "running"]);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function thumbnails(root) {
    const data = JSON.parse(root.querySelector("#previews")?.textContent || "{}");
    for (const canvas of root.querySelectorAll("canvas.thumb")) {
      Molecule2D.draw(canvas, data[canvas.dataset.jobId]);
    }
  }

  // The shown jobs that can still change, by version (or state, until one is known).
  function activeJobs(live) {
    const jobs = {};
    for (const row of live.querySelectorAll("tr[data-job-id]")) {
      const badge = row.querySelector("[data-state]");
      if (badge && ACTIVE.has(badge.dataset.state)) {
        jobs[row.dataset.jobId] = row.dataset.version || badge.dataset.state;
      }
    }
    return jobs;
  }

  function setBadge(badge, state) {
    badge.className = `badge state-${state}`;
    badge.dataset.state = state;
    badge.textContent = state;
    if (ACTIVE.has(state)) {
      const pulse = document.createElement("span");
      pulse.className = "pulse";
      pulse.setAttribute("aria-hidden", "true");
      badge.prepend(pulse);
    }
  }

  function bumpCount(live, state, by) {
    const n = live.querySelector(`[data-count-state="${state}"] .count-n`);
    if (n) n.textContent = String(Math.max(0, Number(n.textContent) + by));
  }

  // A watch's answer: each changed job's new state, written into its row and the counts.
  function apply(live, records) {
    for (const rec of records) {
      const row = live.querySelector(`tr[data-job-id="${CSS.escape(rec.job_id)}"]`);
      const badge = row?.querySelector("[data-state]");
      if (!badge) continue;
      row.dataset.version = rec.version;
      if (badge.dataset.state !== rec.state) {
        bumpCount(live, badge.dataset.state, -1);
        bumpCount(live, rec.state, +1);
        setBadge(badge, rec.state);
      }
      const billed = row.querySelector("td.num");
      if (billed) billed.textContent = Number(rec.billed_core_seconds).toFixed(2);
    }
  }

  function newestShown(live) {
    return live.querySelector("tr[data-job-id]")?.dataset.jobId || ""; // "": none shown
  }

  async function refresh() {
    const fresh = await Atomiverse.refreshFragment("jobs-live");
    if (fresh) thumbnails(fresh);
  }

  async function follow() {
    let stale = false; // hidden meanwhile: fetch the page again when shown
    for (;;) {
      const live = document.getElementById("jobs-live");
      if (!live || live.dataset.firstPage !== "yes") return;
      if (document.visibilityState !== "visible") {
        stale = true;
        await new Promise((r) => document.addEventListener("visibilitychange", r, { once: true }));
        continue;
      }
      try {
        if (stale) { stale = false; await refresh(); continue; }
        const out = await Atomiverse.api("POST", "/api/v1/jobs/watch", {
          jobs: activeJobs(live), newest_seen: newestShown(live), timeout_seconds: WATCH_SECONDS,
          coalesce_seconds: COALESCE_SECONDS, brief: true });
        apply(live, out.jobs);
        if (out.newer) await refresh();
      } catch (e) {
        await sleep(RETRY_MS); // the server is restarting, or a shown job was deleted
        stale = true;
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const live = document.getElementById("jobs-live");
    if (!live) return;
    thumbnails(live);
    follow();
  });
})();
