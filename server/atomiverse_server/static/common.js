// Shared by the dashboard pages: API calls with the CSRF token, local times, live refresh.
"use strict";

const Atomiverse = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // Calls the JSON API with the session cookie; state changes carry the CSRF token.
  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = csrf();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    if (resp.status !== 204) {
      try { data = await resp.json(); } catch (e) { data = null; }
    }
    if (resp.status === 401) {
      window.location.assign("/signin?next=" + encodeURIComponent(location.pathname + location.search));
    }
    if (!resp.ok) {
      const detail = data && typeof data.detail === "string" ? data.detail : `HTTP ${resp.status}`;
      const err = new Error(detail);
      err.status = resp.status;
      throw err;
    }
    return data;
  }

  function ago(ms) {
    const s = Math.round(ms / 1000);
    if (s < 5) return "just now";
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  // <time datetime="...Z"> in the reader's time zone: the time of day for today's, the date
  // too for older ones, and "x min ago" for the last day.
  function localTimes(root) {
    const now = new Date();
    for (const el of root.querySelectorAll("time[datetime]")) {
      const t = new Date(el.getAttribute("datetime"));
      if (isNaN(t)) continue;
      const clock = t.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
      const sameDay = t.toDateString() === now.toDateString();
      const date = t.toLocaleDateString(undefined, {
        month: "short", day: "numeric",
        year: t.getFullYear() === now.getFullYear() ? undefined : "numeric",
      });
      const age = now.getTime() - t.getTime();
      el.textContent = (sameDay ? clock : `${date}, ${clock}`) +
        (age >= 0 && age < 86400e3 ? ` · ${ago(age)}` : "");
      el.title = t.toString();
    }
  }

  // Fetches this page again and swaps the element with the given id: our own server's
  // escaped HTML, parsed without running any script in it.
  async function refreshFragment(id) {
    const resp = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
    if (resp.status === 401 || resp.redirected && new URL(resp.url).pathname === "/signin") {
      window.location.reload();
      return null;
    }
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    const fresh = doc.getElementById(id);
    const current = document.getElementById(id);
    if (!fresh || !current) return null;
    current.replaceWith(document.adoptNode(fresh));
    localTimes(fresh);
    return fresh;
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    setInterval(() => localTimes(document), 20000);
  });
  return { api, csrf, localTimes, refreshFragment };
})();
