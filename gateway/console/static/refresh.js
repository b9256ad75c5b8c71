// punchgate console: refresh the overview's tiles in place, without reloading the page.
// The element with data-refresh names a fragment URL; every data-seconds it is fetched and
// swapped in. Keyboard focus stays on the same link (by id); a lapsed session reloads the
// page (which leads to the sign-in); a failed fetch says so and keeps the last state shown.
// A fragment holding [data-final] (a command's outcome with every answer in) ends the refreshing.
(function () {
  "use strict";
  var live = document.querySelector("[data-refresh]");
  if (!live) { return; }
  var url = live.getAttribute("data-refresh");
  var seconds = Math.max(2, parseInt(live.getAttribute("data-seconds"), 10) || 5);
  var status = document.getElementById("refresh-status");
  var lastGood = new Date();
  var busy = false;

  function say(text) { if (status) { status.textContent = text; } }

  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (response) {
        if (response.status === 401 || response.redirected) { window.location.reload(); return null; }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var focused = document.activeElement && live.contains(document.activeElement) ? document.activeElement.id : "";
        live.innerHTML = html;
        if (focused) { var again = document.getElementById(focused); if (again) { again.focus(); } }
        lastGood = new Date();
        say("");
        if (live.querySelector("[data-final]")) { window.clearInterval(timer); }
      })
      .catch(function () {
        var template = status ? status.getAttribute("data-failed") || "" : "";
        say(template.replace("{time}", lastGood.toLocaleTimeString()));
      })
      .then(function () { busy = false; });
  }

  var timer = window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) { refresh(); } });
})();
