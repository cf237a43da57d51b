// Ferry board: keeps the page current from the server's event stream (no polling loop).
// The server says which services changed; the page fetches just their rows, rendered by the
// server with the same code as the first page. After a lost connection (EventSource reconnects
// by itself) the whole grid is fetched again, so nothing missed while away stays stale.
(function () {
  "use strict";
  const grid = document.getElementById("grid");
  const story = document.getElementById("story-of");
  const status = document.getElementById("live");
  if (!(grid || story) || !window.EventSource) return;
  const query = grid ? grid.dataset.query || "" : "";
  let wanted = new Set();
  let timer = null;
  let everOpen = false;
  let lost = false;

  function shown(service) {
    return document.getElementById("svc-" + service) !== null;
  }

  function storyOf() {
    const current = document.getElementById("story-of");
    return current ? current.dataset.service : null;
  }

  async function replaceRows(services) {
    const params = new URLSearchParams();
    services.forEach((s) => params.append("service", s));
    const answer = await fetch("/fragments/rows?" + params.toString());
    if (!answer.ok) return;
    const holder = document.createElement("tbody");
    holder.innerHTML = await answer.text();
    holder.querySelectorAll("tr[data-service]").forEach((row) => {
      const old = document.getElementById(row.id);
      if (old) old.replaceWith(row);
    });
    stamp();
  }

  // A service's page: its story is fetched again when news about the service arrives.
  async function replaceStory() {
    const answer = await fetch(location.pathname);
    if (!answer.ok) return;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    story.replaceWith(page.getElementById("story-of"));
    stamp();
  }

  async function replaceGrid() {
    if (!grid) return replaceStory();
    const answer = await fetch("/fragments/grid" + (query ? "?" + query : ""));
    if (!answer.ok) return;
    grid.innerHTML = await answer.text();
    stamp();
  }

  function stamp() {
    document.body.dataset.updated = String(Date.now());
  }

  // One fetch at a time: an older answer arriving after a newer one must not win. News that
  // comes while a fetch runs is fetched right after it.
  let fetching = false;

  async function flush() {
    timer = null;
    if (fetching) return;
    const services = Array.from(wanted).filter(shown);
    wanted = new Set();
    if (!services.length) return;
    fetching = true;
    try {
      await replaceRows(services);
    } finally {
      fetching = false;
      if (wanted.size && timer === null) timer = setTimeout(flush, 0);
    }
  }

  const source = new EventSource("/live");
  source.addEventListener("open", () => {
    if (status) status.textContent = "live";
    if (status) status.className = "live on";
    if (everOpen && lost) replaceGrid();
    everOpen = true;
    lost = false;
  });
  source.addEventListener("error", () => {
    lost = true;
    if (status) status.textContent = "reconnecting";
    if (status) status.className = "live off";
  });
  source.addEventListener("touch", (e) => {
    const data = JSON.parse(e.data);
    if (data.all) {
      replaceGrid();
      return;
    }
    if (!grid) {
      if (data.services.includes(storyOf())) replaceStory();
      return;
    }
    data.services.forEach((s) => wanted.add(s));
    // Several entries come at once for one change (an event, then its decision): one fetch.
    if (timer === null) timer = setTimeout(flush, 50);
  });

  // Copy buttons: the command that would move a waiting gate.
  document.addEventListener("click", (e) => {
    const button = e.target.closest("button[data-copy]");
    if (!button) return;
    navigator.clipboard.writeText(button.dataset.copy).then(() => {
      button.textContent = "copied";
      setTimeout(() => (button.textContent = "copy"), 1500);
    });
  });
})();
