// Live parts: the element with data-refresh-ms is fetched again from this page's own URL (so the
// filters stay as they are) every data-refresh-ms while its content says data-active="1" (a job
// is queued, running or retrying), and replaced in place (so the scroll position stays).  It stops
// at the first answer that says the trees are complete.  Open <details> stay open.
(function () {
  "use strict";
  var box = document.querySelector("[data-refresh-ms]");
  if (!box) { return; }
  var interval = parseInt(box.getAttribute("data-refresh-ms"), 10) || 2000;

  function active() {
    var part = box.querySelector(".live-part");
    return part !== null && part.getAttribute("data-active") === "1";
  }

  function openDetails() {
    var keys = [];
    box.querySelectorAll("details[open][data-key]").forEach(function (d) { keys.push(d.getAttribute("data-key")); });
    return keys;
  }

  function replace(html) {
    var keys = openDetails();
    box.innerHTML = html;  // server-rendered, every stored text escaped there
    keys.forEach(function (key) {
      box.querySelectorAll("details[data-key]").forEach(function (d) {
        if (d.getAttribute("data-key") === key) { d.open = true; }
      });
    });
  }

  function poll() {
    fetch(window.location.href, { headers: { "X-Dashboard-Partial": "1" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        replace(html);
        var more = active();
        box.setAttribute("data-live", more ? "on" : "done");
        if (more) { window.setTimeout(poll, interval); }
      })
      .catch(function () { window.setTimeout(poll, interval * 3); });  // the server is restarting: keep trying, slower
  }

  if (active()) {
    box.setAttribute("data-live", "on");
    window.setTimeout(poll, interval);
  } else {
    box.setAttribute("data-live", "done");
  }
})();
