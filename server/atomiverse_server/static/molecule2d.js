// Small 2D drawings of a molecule on a canvas (the jobs list's thumbnails): the view down the
// molecule's smallest principal axis, bonds by covalent radii, atoms back to front.
"use strict";

const Molecule2D = (() => {
  const COLORS = {
    H: "#d9dde3", C: "#4a4f57", N: "#3a5bd9", O: "#e0382f", F: "#5fbf3f", Cl: "#3fae3f",
    Br: "#a52a2a", I: "#7a3fa0", S: "#e2b321", P: "#f08c1a", B: "#f5a78f", Si: "#c9a77a",
  };
  const RADII = {
    H: 0.31, B: 0.84, C: 0.76, N: 0.71, O: 0.66, F: 0.57, Si: 1.11, P: 1.07, S: 1.05,
    Cl: 1.02, Br: 1.20, I: 1.39,
  };

  function principalAxes(pts) {
    const c = [0, 0, 0];
    for (const p of pts) for (let k = 0; k < 3; k++) c[k] += p[k] / pts.length;
    const q = pts.map((p) => [p[0] - c[0], p[1] - c[1], p[2] - c[2]]);
    const m = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
    for (const p of q) for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) m[i][j] += p[i] * p[j];
    const mul = (v) => [0, 1, 2].map((i) => m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2]);
    const norm = (v) => { const n = Math.hypot(...v) || 1; return v.map((x) => x / n); };
    const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let a = norm([1, 0.3, 0.1]);
    for (let i = 0; i < 40; i++) a = norm(mul(a));
    let b = norm([0.2, 1, 0.4]);
    for (let i = 0; i < 40; i++) {
      b = mul(b);
      const d = dot(a, b);
      b = norm(b.map((x, k) => x - d * a[k]));
    }
    const z = [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
    return q.map((p) => [dot(p, a), dot(p, b), dot(p, z)]);
  }

  function draw(canvas, preview) {
    const ctx = canvas.getContext("2d");
    const { width: w, height: h } = canvas;
    ctx.clearRect(0, 0, w, h);
    if (!preview || !preview.positions.length) return;
    const syms = preview.symbols;
    const raw = preview.positions;
    const pts = raw.length > 1 ? principalAxes(raw) : [[0, 0, 0]];
    let span = 1e-6;
    for (const p of pts) span = Math.max(span, Math.abs(p[0]), Math.abs(p[1]));
    const scale = (Math.min(w, h) / 2 - 8) / Math.max(span, 1.2);
    const xy = pts.map((p) => [w / 2 + p[0] * scale, h / 2 - p[1] * scale]);
    ctx.lineCap = "round";
    ctx.strokeStyle = "#8a929d";
    ctx.lineWidth = Math.max(1, Math.min(3, scale * 0.14));
    ctx.beginPath();
    for (let i = 0; i < raw.length; i++) {
      const ri = RADII[syms[i]] || 0.8;
      for (let j = i + 1; j < raw.length; j++) {
        const d = Math.hypot(raw[i][0] - raw[j][0], raw[i][1] - raw[j][1], raw[i][2] - raw[j][2]);
        if (d < 1.2 * (ri + (RADII[syms[j]] || 0.8))) {
          ctx.moveTo(xy[i][0], xy[i][1]);
          ctx.lineTo(xy[j][0], xy[j][1]);
        }
      }
    }
    ctx.stroke();
    const order = pts.map((p, i) => i).sort((i, j) => pts[i][2] - pts[j][2]);
    for (const i of order) {
      const r = Math.max(1.2, (syms[i] === "H" ? 0.22 : 0.34) * scale);
      ctx.beginPath();
      ctx.arc(xy[i][0], xy[i][1], r, 0, 2 * Math.PI);
      ctx.fillStyle = COLORS[syms[i]] || "#b07ad6";
      ctx.fill();
      if (r > 2) { ctx.lineWidth = 1; ctx.strokeStyle = "rgba(0,0,0,.25)"; ctx.stroke(); }
    }
  }

  return { draw };
})();
