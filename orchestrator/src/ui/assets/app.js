// cartflow ui: the only script. Pages work without it; it adds the live log tail and the
// reload of pages that show something running, and sizes the Insights page's dashboard.
(function () {
  "use strict";
  var log = document.querySelector("pre[data-stream]");
  if (log && window.EventSource) {
    var url = log.getAttribute("data-stream") + "?offset=" + encodeURIComponent(log.getAttribute("data-offset") || "0");
    var es = new EventSource(url);
    log.classList.add("live");
    es.onmessage = function (e) {
      var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(document.createTextNode(e.data + "\n"));
      if (atEnd) { log.scrollTop = log.scrollHeight; }
    };
    es.addEventListener("end", function () { es.close(); log.classList.remove("live"); setTimeout(function () { location.reload(); }, 500); });
    es.onerror = function () { es.close(); log.classList.remove("live"); };
  }
  // The Insights page's dashboard: as tall as what it holds (same origin, so it can be measured).
  var frame = document.querySelector("iframe.dashboard");
  if (frame) {
    frame.addEventListener("load", function () {
      try { frame.style.height = (frame.contentDocument.documentElement.scrollHeight + 20) + "px"; } catch (e) { }
    });
  }
  var refresh = document.body.getAttribute("data-refresh");
  if (refresh && !log) {
    setTimeout(function () { location.reload(); }, parseInt(refresh, 10) * 1000);
  }
})();
