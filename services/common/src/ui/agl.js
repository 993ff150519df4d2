// agl dashboards: the little interaction the server-rendered pages need.
//  * [data-live] regions are refreshed in place every few seconds while the tab is visible
//    (the page is fetched again and the regions swapped by id: no reload, no lost scroll);
//  * a click (or Enter) on a waterfall row loads the span's details into #span-detail;
//  * <time datetime> elements are shown in the reader's local time zone.
"use strict";
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.title = el.textContent + " UTC"; el.textContent = d.toLocaleString(); }
    });
  }

  function refresh() {
    var regions = document.querySelectorAll("[data-live][id]");
    if (!regions.length || document.hidden) return;
    fetch(location.href, { headers: { "X-Agl-Live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        regions.forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh && fresh.innerHTML !== el.innerHTML) {
            el.innerHTML = fresh.innerHTML;
            localTimes(el);
          }
          // A region that stopped being live (a rollout finished) is not asked again.
          if (fresh && !fresh.hasAttribute("data-live")) el.removeAttribute("data-live");
        });
        var stamp = document.getElementById("refreshed");
        if (stamp) stamp.textContent = new Date().toLocaleTimeString();
      })
      .catch(function () { /* the next tick tries again */ });
  }

  function showSpan(row) {
    var panel = document.getElementById("span-detail");
    if (!panel || !row.dataset.detail) return;
    document.querySelectorAll(".wf-row.selected").forEach(function (r) { r.classList.remove("selected"); });
    row.classList.add("selected");
    fetch(row.dataset.detail, { credentials: "same-origin" })
      .then(function (r) { return r.text().then(function (t) { return { ok: r.ok, text: t }; }); })
      .then(function (res) {
        var doc = new DOMParser().parseFromString(res.text, "text/html");
        var part = doc.querySelector(".span-attrs") || doc.body;
        panel.innerHTML = "";
        panel.appendChild(document.importNode(part, true));
        localTimes(panel);
      })
      .catch(function (e) { panel.textContent = "Could not load the span: " + e; });
  }

  document.addEventListener("click", function (ev) {
    var row = ev.target.closest && ev.target.closest(".wf-row");
    if (row) showSpan(row);
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter") return;
    var row = ev.target.closest && ev.target.closest(".wf-row");
    if (row) showSpan(row);
  });
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var live = document.querySelector("[data-live]");
    if (live) {
      var seconds = Math.max(1, parseFloat(live.getAttribute("data-live")) || 3);
      setInterval(refresh, seconds * 1000);
    }
  });
})();
