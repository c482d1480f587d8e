// The jobs list: molecule thumbnails, and the first page refreshes itself while jobs run.
"use strict";

(() => {
  const ACTIVE_MS = 3000;
  const IDLE_MS = 15000;

  function thumbnails(root) {
    const data = JSON.parse(root.querySelector("#previews")?.textContent || "{}");
    for (const canvas of root.querySelectorAll("canvas.thumb")) {
      Molecule2D.draw(canvas, data[canvas.dataset.jobId]);
    }
  }

  async function tick() {
    let live = document.getElementById("jobs-live");
    if (live && live.dataset.firstPage === "yes" && document.visibilityState === "visible") {
      try {
        const fresh = await Atomiverse.refreshFragment("jobs-live");
        if (fresh) { thumbnails(fresh); live = fresh; }
      } catch (e) { /* the server is restarting or the network blinked: try again later */ }
    }
    setTimeout(tick, live && live.dataset.live === "active" ? ACTIVE_MS : IDLE_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const live = document.getElementById("jobs-live");
    if (!live) return;
    thumbnails(live);
    setTimeout(tick, live.dataset.live === "active" ? ACTIVE_MS : IDLE_MS);
  });
})();
