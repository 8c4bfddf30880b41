// The dashboard's charts: reads the series from the page's JSON island (#dashboard-series) and draws one uPlot
// chart per [data-chart] element. Sizes follow the card's width.
(function () {
  "use strict";
  var island = document.getElementById("dashboard-series");
  if (!island || typeof uPlot === "undefined") return;
  var data = JSON.parse(island.textContent);
  var colours = { requests: "#4338ca", tokens: "#0f766e", spend: "#b45309", error_rate: "#b91c1c" };
  var charts = [];

  function formatX(bucket) {
    return function (self, ticks) {
      return ticks.map(function (t) {
        var d = new Date(t * 1000);
        return bucket === "day"
          ? d.toLocaleDateString(undefined, { month: "short", day: "numeric" })
          : d.toLocaleString(undefined, { weekday: "short", hour: "2-digit" });
      });
    };
  }

  document.querySelectorAll("[data-chart]").forEach(function (el) {
    var name = el.getAttribute("data-chart");
    var colour = colours[name] || "#4338ca";
    var opts = {
      width: Math.max(240, el.clientWidth),
      height: 180,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [
        { values: formatX(data.bucket), stroke: "#5b6470", grid: { stroke: "#eef0f3" } },
        { stroke: "#5b6470", grid: { stroke: "#eef0f3" }, size: 56 },
      ],
      series: [
        {},
        { label: el.getAttribute("data-label") || name, stroke: colour, width: 2, fill: colour + "22",
          points: { show: data.x.length <= 31 } },
      ],
    };
    charts.push({ el: el, plot: new uPlot(opts, [data.x, data[name]], el) });
  });

  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      charts.forEach(function (c) { c.plot.setSize({ width: Math.max(240, c.el.clientWidth), height: 180 }); });
    }, 150);
  });
})();
