// bulk dashboard: the one script. Pages work without it; it only makes a running
// job's page live (polls the page's live part and swaps it in), counts the download's
// expiry down, and updates the credit estimate as max pages (or a URL list) is typed.
(() => {
  "use strict";
  const POLL_MS = 1500;
  const TERMINAL = new Set(["completed", "failed", "expired"]);

  const duration = (seconds) => {
    let left = Math.max(0, Math.floor(seconds));
    const days = Math.floor(left / 86400);
    left -= days * 86400;
    const hours = Math.floor(left / 3600);
    left -= hours * 3600;
    const parts = days ? [days + " d"] : [];
    if (hours || days) parts.push(hours + " h");
    parts.push(Math.floor(left / 60) + " min");
    return parts.join(" ");
  };

  const countdown = () => {
    const el = document.getElementById("expires-in");
    if (!el) return;
    const end = Date.parse(el.dataset.expires || "");
    if (Number.isNaN(end)) return;
    el.textContent = duration((end - Date.now()) / 1000);
  };

  // New thumbnails are added in sequence order; the ones already shown stay (no
  // reload, no lost focus). Every other live section is replaced.
  const mergeGallery = (fresh) => {
    const freshList = fresh.querySelector("#gallery");
    const list = document.getElementById("gallery");
    if (!freshList || !list) return false;
    for (const item of freshList.children) {
      if (document.getElementById(item.id)) continue;
      const seq = Number(item.dataset.seq);
      const after = Array.from(list.children).find((el) => Number(el.dataset.seq) > seq);
      list.insertBefore(document.importNode(item, true), after || null);
    }
    return true;
  };

  const poll = (live) => {
    const url = live.dataset.liveUrl;
    const step = async () => {
      let status = "";
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (!response.ok) return; // signed out or gone: stop
        const template = document.createElement("template");
        template.innerHTML = await response.text();
        const fresh = template.content;
        const progress = fresh.querySelector("[data-status]");
        status = progress ? progress.dataset.status : "";
        if (!mergeGallery(fresh)) {
          live.replaceChildren(fresh);
        } else {
          for (const section of Array.from(fresh.children)) {
            const heading = section.getAttribute("aria-labelledby");
            const old = heading && live.querySelector(`[aria-labelledby="${heading}"]`);
            if (heading === "gallery-h") {
              const title = section.querySelector("#gallery-h");
              if (old && title) old.querySelector("#gallery-h").textContent = title.textContent;
            } else if (old) {
              old.replaceWith(section);
            } else {
              live.appendChild(section);
            }
          }
        }
        countdown();
      } catch (error) {
        // A network hiccup: try again at the next tick.
      }
      if (!TERMINAL.has(status)) setTimeout(step, POLL_MS);
    };
    setTimeout(step, POLL_MS);
  };

  const estimate = () => {
    const input = document.getElementById("max_pages");
    const out = document.getElementById("estimate-credits");
    const box = document.getElementById("estimate");
    const warning = document.getElementById("estimate-warning");
    const urls = document.getElementById("urls");
    if (!input || !out || !box) return;
    const update = () => {
      // A pasted list: one credit per URL line (the server drops repeats later).
      const listed = urls
        ? urls.value.split("\n").filter((l) => l.trim() && !l.trim().startsWith("#")).length
        : 0;
      const pages = Number.parseInt(input.value, 10);
      const max = Number.parseInt(input.max, 10);
      const fromPages = Number.isInteger(pages) && pages >= 1 && pages <= max ? pages : max;
      const value = listed > 0 ? listed : fromPages;
      out.textContent = String(value);
      if (warning) warning.hidden = value <= Number(box.dataset.balance);
    };
    input.addEventListener("input", update);
    if (urls) urls.addEventListener("input", update);
    update();
  };

  const start = () => {
    const live = document.getElementById("live");
    if (live && live.dataset.running === "true") poll(live);
    countdown();
    if (document.getElementById("expires-in")) setInterval(countdown, 30000);
    estimate();
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
