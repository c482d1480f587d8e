// The jobs list: molecule thumbnails, and the first page refreshes itself when one of its
// jobs changes: a watch (POST /api/v1/jobs/watch, a long-poll) over the pending and running
// jobs it shows, not a timer re-reading the page. At most one refresh per MIN_REFRESH_MS
// while many jobs change; every IDLE_MS when none is shown running, for new submissions.
"use strict";

(() => {
  const WATCH_SECONDS = 25;
  const MIN_REFRESH_MS = 3000;
  const IDLE_MS = 15000;
  const RETRY_MS = 5000;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function thumbnails(root) {
    const data = JSON.parse(root.querySelector("#previews")?.textContent || "{}");
    for (const canvas of root.querySelectorAll("canvas.thumb")) {
      Molecule2D.draw(canvas, data[canvas.dataset.jobId]);
    }
  }

  // The shown jobs that can still change, by state (a watch answers when one differs).
  function activeJobs(live) {
    const jobs = {};
    for (const row of live.querySelectorAll("tr[data-job-id]")) {
      const s = row.querySelector("[data-state]")?.dataset.state;
      if (s === "pending" || s === "running") jobs[row.dataset.jobId] = s;
    }
    return jobs;
  }

  async function follow() {
    let lastRefresh = Date.now();
    for (;;) {
      const live = document.getElementById("jobs-live");
      if (!live || live.dataset.firstPage !== "yes") return;
      const jobs = activeJobs(live);
      try {
        if (Object.keys(jobs).length && document.visibilityState === "visible") {
          await Atomiverse.api("POST", "/api/v1/jobs/watch",
                               { jobs, timeout_seconds: WATCH_SECONDS });
        } else {
          await sleep(IDLE_MS);
        }
      } catch (e) {
        await sleep(RETRY_MS); // the server is restarting, or a job was deleted
      }
      await sleep(Math.max(0, lastRefresh + MIN_REFRESH_MS - Date.now()));
      if (document.visibilityState !== "visible") continue;
      try {
        const fresh = await Atomiverse.refreshFragment("jobs-live");
        if (fresh) thumbnails(fresh);
      } catch (e) { await sleep(RETRY_MS); }
      lastRefresh = Date.now();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const live = document.getElementById("jobs-live");
    if (!live) return;
    thumbnails(live);
    follow();
  });
})();
