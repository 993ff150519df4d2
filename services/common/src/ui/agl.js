// agl dashboards: the little interaction the server-rendered pages need.
//  * [data-live] regions are refreshed in place every few seconds while the tab is visible
//    (the page is fetched again and the regions swapped by id: no reload, no lost scroll);
//  * a click (or Enter) on a waterfall row loads the span's details into #span-detail;
//  * a folded row's "+N" button loads the rows below it (and they are opened again after
//    a live refresh); a [data-more] button is replaced by the fragment it names;
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
            reopen(el);
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

  // Span ids whose folded rows the reader opened.
  var opened = {};

  function fragment(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (text) { return new DOMParser().parseFromString(text, "text/html"); });
  }

  function unfold(button) {
    var row = button.closest(".wf-row");
    if (!row || button.disabled) return;
    button.disabled = true;
    fragment(button.dataset.subtree).then(function (doc) {
      var after = row;
      doc.querySelectorAll(".wf-row").forEach(function (r) {
        var fresh = document.importNode(r, true);
        after.after(fresh);
        after = fresh;
      });
      opened[row.dataset.spanId] = true;
      button.remove();
      reopen(row.parentNode);
    }).catch(function () { button.disabled = false; });
  }

  // Opens again, below `root`, the folded rows the reader had opened.
  function reopen(root) {
    if (!root) return;
    root.querySelectorAll(".wf-more").forEach(function (b) {
      var row = b.closest(".wf-row");
      if (row && opened[row.dataset.spanId]) unfold(b);
    });
  }

  function more(button) {
    if (button.disabled) return;
    button.disabled = true;
    fragment(button.dataset.more).then(function (doc) {
      var items = doc.querySelector(".more-items") || doc.body;
      Array.prototype.slice.call(items.childNodes).forEach(function (n) {
        button.parentNode.insertBefore(document.importNode(n, true), button);
      });
      button.remove();
    }).catch(function () { button.disabled = false; });
  }

  document.addEventListener("click", function (ev) {
    if (!ev.target.closest) return;
    var fold = ev.target.closest(".wf-more");
    if (fold) { unfold(fold); return; }
    var button = ev.target.closest("[data-more]");
    if (button) { more(button); return; }
    var row = ev.target.closest(".wf-row");
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
