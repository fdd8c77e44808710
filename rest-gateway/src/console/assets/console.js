// The console's only script: it enhances pages that work without it.
// - <time datetime="..."> (UTC) is shown in the viewer's time zone;
// - <time data-countdown datetime="..."> counts down to that instant.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });
  function localTimes() {
    document.querySelectorAll("time[datetime]:not([data-countdown])").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) {
        el.title = el.textContent;
        el.textContent = format.format(at);
      }
    });
  }
  function countdowns() {
    var els = document.querySelectorAll("time[data-countdown]");
    if (!els.length) return;
    function tick() {
      els.forEach(function (el) {
        var left = Math.round((new Date(el.getAttribute("datetime")) - Date.now()) / 1000);
        if (isNaN(left)) return;
        if (left <= 0) {
          el.textContent = "closed";
          return;
        }
        var m = Math.floor(left / 60), s = left % 60;
        el.textContent = m + ":" + (s < 10 ? "0" : "") + s + " left";
      });
    }
    tick();
    setInterval(tick, 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    countdowns();
  });
})();
