// The web view's only script. It never builds markup from data: it swaps in fragments the
// server rendered (and escaped), via an inert <template>, and the CSP blocks inline scripts.
"use strict";

(function () {
  function swap(el, html) {
    const tpl = document.createElement("template");
    tpl.innerHTML = html;
    el.replaceChildren(tpl.content);
  }

  async function fetchText(url) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) { throw new Error("HTTP " + r.status); }
    return r.text();
  }

  // A running run: the server says when its log changes; then fetch the live fragment.
  function follow(el) {
    const stream = new EventSource(el.dataset.liveStream);
    let busy = false;
    stream.addEventListener("change", async function () {
      if (busy) { return; }
      busy = true;
      try {
        const html = await fetchText(el.dataset.liveSrc);
        swap(el, html);
        const state = el.querySelector(".live-state");
        if (state && state.dataset.final === "1") { stream.close(); }
      } catch (e) {
        // The next change message retries.
      } finally {
        busy = false;
      }
    });
  }

  // The runs table: poll while the page is open, replace only when it changed.
  function poll(el) {
    let last = el.innerHTML;
    const ms = parseInt(el.dataset.pollMs || "3000", 10);
    setInterval(async function () {
      try {
        const html = await fetchText(el.dataset.pollSrc);
        if (html !== last) { swap(el, html); last = el.innerHTML; }
      } catch (e) {
        // Server gone or restarted: keep the last table.
      }
    }, ms);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live-stream]").forEach(follow);
    document.querySelectorAll("[data-poll-src]").forEach(poll);
  });
})();
