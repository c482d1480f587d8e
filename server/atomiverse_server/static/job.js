// The job page: the 3D viewer (3Dmol.js) with the optimisation path and a frequencies job's
// animated normal modes, live state while the job is pending or running, and the rename /
// cancel / delete buttons (JSON API + CSRF token).
"use strict";

(() => {
  const WATCH_SECONDS = 25; // one long-poll at a time while the job can still change
  const RETRY_MS = 3000;
  const ACTIVE = new Set(["pending", "running"]);
  const INTERPOLATED_FRAMES = 40;
  const PLAY_SECONDS = 3;
  const PLAY_MIN_MS = 40;
  const LARGE = 250; // atoms: above this, cheaper styles so the page stays responsive
  const MODE_FRAMES = 24; // one period of a normal mode
  const MODE_PERIOD_MS = 1200;
  const MODE_SWING = 0.3; // Angstrom: the largest displacement of any atom in the animation

  const STYLES = {
    ballstick: (n) => ({ stick: { radius: 0.13, colorscheme: "Jmol" },
                         sphere: { scale: 0.24, colorscheme: "Jmol" } }),
    stick: (n) => ({ stick: { radius: n > LARGE ? 0.16 : 0.18, colorscheme: "Jmol" } }),
    sphere: (n) => ({ sphere: { colorscheme: "Jmol" } }),
  };

  let state = { viewer: null, frames: [], frame: 0, timer: null, data: null, polling: false,
                mode: null };

  const $ = (sel, root = document) => root.querySelector(sel);

  function showMessage(el, text) {
    let msg = $(".viewer-msg", el);
    if (!msg) { msg = document.createElement("div"); msg.className = "viewer-msg"; el.appendChild(msg); }
    msg.textContent = text;
  }

  // WebGL drawn by the CPU (no GPU, e.g. a remote desktop or a headless test): antialiasing
  // there costs ten times the drawing, so it goes.
  function softwareGL() {
    try {
      const gl = document.createElement("canvas").getContext("webgl");
      const info = gl && gl.getExtension("WEBGL_debug_renderer_info");
      const name = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
      return /swiftshader|llvmpipe|softpipe|software/i.test(name);
    } catch (e) {
      return false;
    }
  }

  function toXYZ(symbols, positions) {
    const lines = [String(positions.length), "atomiverse"];
    positions.forEach((p, i) => lines.push(`${symbols[i] || "X"} ${p[0]} ${p[1]} ${p[2]}`));
    return lines.join("\n") + "\n";
  }

  // The frames of the path: the optimiser's own geometries when the result has them,
  // otherwise an eased interpolation from the input to the final geometry.
  function buildFrames(d) {
    if (!d.final || d.final.length !== d.input.length) return [d.input];
    const traj = d.trajectory;
    if (Array.isArray(traj) && traj.length >= 2 && traj.every((f) => f.length === d.input.length)) {
      return traj;
    }
    const frames = [];
    for (let k = 0; k < INTERPOLATED_FRAMES; k++) {
      const t = k / (INTERPOLATED_FRAMES - 1);
      const s = t * t * (3 - 2 * t);
      frames.push(d.input.map((a, i) => [0, 1, 2].map((c) => a[c] + (d.final[i][c] - a[c]) * s)));
    }
    return frames;
  }

  function applyStyle(draw = true) {
    const { viewer, data } = state;
    if (!viewer) return;
    const kind = $("#viewer-style")?.value || "ballstick";
    viewer.setStyle({}, STYLES[kind](data.input.length));
    if (draw) viewer.render();
  }

  function frameLabel(i) {
    const n = state.frames.length;
    if (state.data.frame_noun && n > 1) return `${state.data.frame_noun} ${i + 1} of ${n}`;
    if (state.data.trajectory && n > 1) return `step ${i} of ${n - 1}`;
    if (n > 1) return i === 0 ? "input" : i === n - 1 ? "final" : `${Math.round((100 * i) / (n - 1))} %`;
    return "";
  }

  async function showFrame(i) {
    const { viewer, frames } = state;
    if (!viewer || frames.length < 2) return;
    state.frame = Math.max(0, Math.min(frames.length - 1, i));
    await viewer.setFrame(state.frame);
    viewer.render();
    const slider = $("#frame-slider");
    if (slider) slider.value = String(state.frame);
    const label = $("#frame-label");
    if (label) label.textContent = frameLabel(state.frame);
    for (const b of document.querySelectorAll("[data-goto]")) {
      const target = b.dataset.goto === "first" ? 0 : frames.length - 1;
      b.classList.toggle("active", target === state.frame);
    }
    if (state.data.trajectory) {
      for (const c of document.querySelectorAll("#energy-plot .step-point")) {
        c.classList.toggle("current", Number(c.dataset.step) === state.frame);
      }
    }
  }

  function stop() {
    if (state.timer) cancelAnimationFrame(state.timer);
    state.timer = null;
    const btn = $("#play-btn");
    if (btn) btn.textContent = "▶ Play";
  }

  // Plays the path in about PLAY_SECONDS whatever the machine: a slow renderer skips frames.
  function play() {
    if (state.timer) { stop(); return; }
    const btn = $("#play-btn");
    if (btn) btn.textContent = "❚❚ Pause";
    const last = state.frames.length - 1;
    const from = state.frame >= last ? 0 : state.frame;
    const started = performance.now();
    const msPerFrame = Math.max(PLAY_MIN_MS, (PLAY_SECONDS * 1000) / last);
    const step = async () => {
      const target = Math.min(last, from + Math.floor((performance.now() - started) / msPerFrame));
      await showFrame(target);
      if (!state.timer) return;
      if (target >= last) { stop(); return; }
      state.timer = requestAnimationFrame(step);
    };
    state.timer = requestAnimationFrame(step);
  }

  // ----- normal modes ----------------------------------------------------------------------
  // One period of mode k about the geometry the frequencies were computed at: sin-shaped
  // displacements along the stored (unit-length) mode, scaled to MODE_SWING at its largest.
  function modeFrames(base, mode) {
    let largest = 0;
    for (const d of mode) largest = Math.max(largest, Math.hypot(d[0], d[1], d[2]));
    const scale = largest > 0 ? MODE_SWING / largest : 0;
    const frames = [];
    for (let k = 0; k < MODE_FRAMES; k++) {
      const s = scale * Math.sin((2 * Math.PI * k) / MODE_FRAMES);
      frames.push(base.map((p, i) => [0, 1, 2].map((c) => p[c] + s * mode[i][c])));
    }
    return frames;
  }

  function markMode(k) {
    for (const el of document.querySelectorAll("#modes-table tr[data-mode], #ir-spectrum .ir-stick")) {
      el.classList.toggle("current", Number(el.dataset.mode) === k);
    }
    const bar = $("#mode-bar");
    if (bar) bar.hidden = k === null;
    const label = $("#mode-label");
    const f = k === null ? null : state.data.frequencies[k];
    if (label && f !== null) label.textContent = `${k + 1}: ${f < 0 ? `${(-f).toFixed(1)}i` : f.toFixed(1)} cm⁻¹`;
  }

  function animateMode(k) {
    const { viewer, data } = state;
    if (!viewer || !Array.isArray(data.modes) || !data.modes[k]) return;
    stop();
    stopMode(false);
    const base = data.final && data.final.length === data.input.length ? data.final : data.input;
    viewer.getModel().setCoordinates(modeFrames(base, data.modes[k]), "array");
    const mode = { index: k, frame: 0, started: performance.now(), timer: null };
    state.mode = mode;
    window.atomiverseMode = mode; // for the tests and the curious
    markMode(k);
    const tick = async () => {
      if (state.mode !== mode) return;
      const elapsed = (performance.now() - mode.started) / MODE_PERIOD_MS;
      mode.frame = Math.floor(elapsed * MODE_FRAMES) % MODE_FRAMES;
      await viewer.setFrame(mode.frame);
      viewer.render();
      if (state.mode === mode) mode.timer = requestAnimationFrame(tick);
    };
    mode.timer = requestAnimationFrame(tick);
  }

  // Back to the path (or the single geometry) the viewer showed before the mode.
  function stopMode(restore = true) {
    const mode = state.mode;
    if (!mode) return;
    cancelAnimationFrame(mode.timer);
    state.mode = null;
    window.atomiverseMode = null;
    markMode(null);
    if (restore && state.viewer) {
      state.viewer.getModel().setCoordinates(state.frames, "array");
      if (state.frames.length > 1) { showFrame(state.frame); return; }
      Promise.resolve(state.viewer.setFrame(0)).then(() => state.viewer.render());
    }
  }

  function bindModeControls(root) {
    for (const el of root.querySelectorAll("#modes-table tr[data-mode], #ir-spectrum .ir-stick")) {
      el.addEventListener("click", () => {
        const k = Number(el.dataset.mode);
        if (state.mode && state.mode.index === k) stopMode(); else animateMode(k);
      });
    }
    $("#mode-stop", root)?.addEventListener("click", () => stopMode());
  }

  async function initViewer(root) {
    const el = $("#viewer", root);
    const dataEl = $("#viewer-data", root);
    if (!el || !dataEl) return;
    const data = JSON.parse(dataEl.textContent);
    state.data = data;
    if (!data.input || !data.input.length) { showMessage(el, "No geometry in this job."); return; }
    if (typeof $3Dmol === "undefined") { showMessage(el, "The 3D viewer could not be loaded."); return; }
    // Let the page paint its text first: the viewer is the slowest part.
    await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
    const n = data.input.length;
    const viewer = $3Dmol.createViewer(el, {
      backgroundColor: "white", backgroundAlpha: 0, antialias: n <= LARGE && !softwareGL(),
    });
    const model = viewer.addModel(toXYZ(data.symbols, data.input), "xyz");
    state.frames = buildFrames(data);
    if (state.frames.length > 1) model.setCoordinates(state.frames, "array");
    state.viewer = viewer;
    applyStyle(false); // drawn once, below: with software WebGL each draw is a tenth of a second
    viewer.zoomTo();
    if (state.frames.length > 1) {
      const slider = $("#frame-slider", root);
      slider.max = String(state.frames.length - 1);
      // A finished optimisation opens on its result; an ensemble on its lowest conformer.
      await showFrame(state.data.frame_noun ? 0 : state.frames.length - 1);
    }
    viewer.render();
    $(".viewer-msg", el)?.remove();
    el.dataset.ready = "yes";
    window.atomiverseViewer = viewer; // for the tests and the curious
  }

  function bindViewerControls(root) {
    $("#viewer-style", root)?.addEventListener("change", applyStyle);
    $("#viewer-reset", root)?.addEventListener("click", () => {
      if (state.viewer) { state.viewer.zoomTo(); state.viewer.render(); }
    });
    $("#play-btn", root)?.addEventListener("click", () => { stopMode(); play(); });
    $("#frame-slider", root)?.addEventListener("input", (e) => { stopMode(); stop(); showFrame(Number(e.target.value)); });
    for (const b of root.querySelectorAll("[data-goto]")) {
      b.addEventListener("click", () => { stopMode(); stop(); showFrame(b.dataset.goto === "first" ? 0 : state.frames.length - 1); });
    }
    if (state.data && state.data.trajectory) {
      for (const c of root.querySelectorAll("#energy-plot .step-point")) {
        c.addEventListener("click", () => { stopMode(); stop(); showFrame(Number(c.dataset.step)); });
      }
    }
    bindModeControls(root);
  }

  // ----- actions -----------------------------------------------------------------------
  function showError(text) {
    const el = $("#action-error");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  function bindActions(root) {
    const id = root.dataset.jobId;
    const path = `/api/v1/jobs/${encodeURIComponent(id)}`;
    const form = $("#rename-form", root);
    $("#rename-btn", root)?.addEventListener("click", () => {
      form.hidden = !form.hidden;
      if (!form.hidden) { const input = $("#rename-input", form); input.focus(); input.select(); }
    });
    $("#rename-cancel", root)?.addEventListener("click", () => { form.hidden = true; showError(""); });
    form?.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await Atomiverse.api("PATCH", path, { name: $("#rename-input", form).value });
        showError("");
        await refresh(true);
      } catch (err) { showError(`Rename failed: ${err.message}`); }
    });
    $("#cancel-btn", root)?.addEventListener("click", async (e) => {
      e.currentTarget.disabled = true;
      try {
        await Atomiverse.api("POST", `${path}/cancel`);
        showError("");
        await refresh(true);
      } catch (err) { e.currentTarget.disabled = false; showError(`Cancel failed: ${err.message}`); }
    });
    const del = $("#delete-btn", root);
    let armed = null;
    del?.addEventListener("click", async () => {
      if (!armed) {
        del.classList.add("confirming");
        del.textContent = "Confirm delete";
        armed = setTimeout(() => { armed = null; del.classList.remove("confirming"); del.textContent = "Delete"; }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      try {
        await Atomiverse.api("DELETE", path);
        window.location.assign("/jobs");
      } catch (err) {
        del.classList.remove("confirming");
        del.textContent = "Delete";
        showError(`Delete failed: ${err.message}`);
      }
    });
  }

  // ----- live state ----------------------------------------------------------------------
  async function refresh(keepFrame) {
    const current = document.getElementById("job-main");
    const oldData = $("#viewer-data", current)?.textContent;
    const resp = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
    if (resp.redirected && new URL(resp.url).pathname === "/signin") { location.reload(); return; }
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    const fresh = doc.getElementById("job-main");
    if (!fresh) { showError(resp.status === 404 ? "This job no longer exists." : `HTTP ${resp.status}`); return; }
    const sameGeometry = $("#viewer-data", fresh)?.textContent === oldData && state.viewer;
    if (sameGeometry) {
      // Keep the live WebGL view (and where the user turned it) across the swap.
      $("#viewer", fresh).replaceWith($("#viewer", current));
      const style = $("#viewer-style", current)?.value;
      if (style) $("#viewer-style", fresh).value = style;
    } else {
      stop();
      state.viewer = null;
    }
    current.replaceWith(document.adoptNode(fresh));
    document.title = `${$("#job-name", fresh).textContent} · Atomiverse`;
    Atomiverse.localTimes(fresh);
    await init(fresh, sameGeometry);
    if (sameGeometry && keepFrame && state.frames.length > 1) await showFrame(state.frame);
  }

  // Pushed, not polled: a watch on this job answers when its version changes.
  async function poll() {
    const main = document.getElementById("job-main");
    if (!main || !ACTIVE.has(main.dataset.state)) { state.polling = false; return; }
    let wait = 0;
    try {
      const out = await Atomiverse.api("POST", "/api/v1/jobs/watch", {
        jobs: { [main.dataset.jobId]: main.dataset.version || main.dataset.state },
        timeout_seconds: WATCH_SECONDS });
      if (out.jobs.length) await refresh(false);
    } catch (err) {
      if (err.status === 404) { showError("This job no longer exists."); state.polling = false; return; }
      wait = RETRY_MS; // the server is restarting or the network blinked
    }
    setTimeout(poll, wait);
  }

  async function init(root, keepViewer) {
    bindActions(root);
    if (!keepViewer) {
      try { await initViewer(root); } catch (err) {
        showMessage($("#viewer", root), `The 3D view failed: ${err.message}`);
      }
    } else {
      state.data = JSON.parse($("#viewer-data", root).textContent);
    }
    bindViewerControls(root);
    if (ACTIVE.has(root.dataset.state) && !state.polling) {
      state.polling = true;
      setTimeout(poll, 0);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("job-main");
    if (root) init(root, false);
  });
})();
