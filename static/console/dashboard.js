// The dashboard's charts: reads the series from the page's JSON island (#dashboard-series) and draws one uPlot
// chart per [data-chart] element. Sizes follow the card's width; the time axis picks its tick step from the width.
(function () {
  "use strict";
  var island = document.getElementById("dashboard-series");
  if (!island || typeof uPlot === "undefined") return;
  var data = JSON.parse(island.textContent);
  var colours = { requests: "#4338ca", tokens: "#0f766e", spend: "#b45309", error_rate: "#b91c1c" };
  var charts = [];

  var DAY = 86400;
  var dateLabel = { month: "short", day: "numeric" };
  var timeLabel = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };

  // One short label per tick, by the step uPlot chose for the width: dates when ticks are a day or more apart (7d,
  // 30d), times of day otherwise (24h), with the date at midnight so the day change is visible.
  function formatX(self, ticks, axisIdx, foundSpace, foundIncr) {
    return ticks.map(function (t) {
      var d = new Date(t * 1000);
      var midnight = d.getHours() === 0 && d.getMinutes() === 0;
      return foundIncr >= DAY || midnight
        ? d.toLocaleDateString(undefined, dateLabel)
        : d.toLocaleTimeString(undefined, timeLabel);
    });
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
        // `space`: the least pixels between two ticks, wider than the longest label ("Nov 30", "23:00") plus a gap.
        { values: formatX, space: 64, stroke: "#5b6470", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" } },
        { label: el.getAttribute("data-unit") || "", labelSize: 18, stroke: "#5b6470", grid: { stroke: "#eef0f3" },
          size: 56 },
      ],
      series: [
        {},
        { label: el.getAttribute("data-label") || name, stroke: colour, width: 2, fill: colour + "22",
          points: { show: data.x.length <= 31 } },
      ],
    };
    var plot = new uPlot(opts, [data.x, data[name]], el);
    el.uplot = plot;  // the chart behind the element, for the console's browser tests
    charts.push({ el: el, plot: plot });
  });

  var pending = null;
  window.addEventListener("resize", function () {
    clearTimeout(pending);
    pending = setTimeout(function () {
      charts.forEach(function (c) { c.plot.setSize({ width: Math.max(240, c.el.clientWidth), height: 180 }); });
    }, 150);
  });
})();
