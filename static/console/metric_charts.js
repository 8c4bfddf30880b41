// The latency and load charts (templates/console/metrics/_panels.html): each [data-metric-chart] element draws, with
// the vendored uPlot, the series its JSON island (data-source) holds under its name: {x, unit, series: [{label,
// colour, values}]}. Gaps (null) are buckets without data. Hovering shows the bucket's values with their unit in the
// card's tooltip; the y axis carries the unit too.
(function () {
  "use strict";
  if (typeof uPlot === "undefined") return;
  var DAY = 86400;
  var dateLabel = { month: "short", day: "numeric" };
  var timeLabel = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  var islands = {};
  var charts = [];

  function island(id) {
    if (!(id in islands)) {
      var el = document.getElementById(id);
      islands[id] = el ? JSON.parse(el.textContent) : null;
    }
    return islands[id];
  }

  // As the dashboard's charts: dates when ticks are a day or more apart, times of day otherwise.
  function formatX(self, ticks, axisIdx, foundSpace, foundIncr) {
    return ticks.map(function (t) {
      var d = new Date(t * 1000);
      var midnight = d.getHours() === 0 && d.getMinutes() === 0;
      return foundIncr >= DAY || midnight
        ? d.toLocaleDateString(undefined, dateLabel)
        : d.toLocaleTimeString(undefined, timeLabel);
    });
  }

  function formatValue(value, unit) {
    if (value === null || value === undefined) return "no data";
    if (unit === "ms") return value >= 10000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
    if (unit === "%") return value.toFixed(1) + "%";
    if (unit === "tokens/s") return (value >= 10 ? value.toFixed(1) : value.toPrecision(3)) + " tokens/s";
    return value.toLocaleString() + " " + unit;
  }

  function formatTick(unit) {
    return function (self, ticks) {
      return ticks.map(function (v) {
        if (unit === "ms" && v >= 10000) return (v / 1000) + " s";
        return v.toLocaleString() + (unit === "%" ? "%" : "");
      });
    };
  }

  function showTooltip(tip, spec, u) {
    var idx = u.cursor.idx;
    if (idx === null || idx === undefined || u.cursor.left < 0) {
      tip.hidden = true;
      return;
    }
    var when = new Date(spec.x[idx] * 1000);
    tip.textContent = "";
    var head = document.createElement("strong");
    head.textContent = when.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit",
                                                         minute: "2-digit", hourCycle: "h23" });
    tip.appendChild(head);
    spec.series.forEach(function (s) {
      var line = document.createElement("span");
      line.setAttribute("data-series", s.label);
      var swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = s.colour;
      line.appendChild(document.createTextNode(" · "));
      line.appendChild(swatch);
      line.appendChild(document.createTextNode(s.label + " " + formatValue(s.values[idx], spec.unit)));
      tip.appendChild(line);
    });
    tip.hidden = false;
    var card = tip.parentElement.getBoundingClientRect();
    var over = u.over.getBoundingClientRect();
    var left = over.left - card.left + u.cursor.left + 12;
    var maxLeft = card.width - tip.offsetWidth - 4;
    tip.style.left = Math.max(4, Math.min(left, maxLeft)) + "px";
    tip.style.top = (over.top - card.top + Math.max(0, u.cursor.top - 36)) + "px";
  }

  document.querySelectorAll("[data-metric-chart]").forEach(function (el) {
    var data = island(el.getAttribute("data-source"));
    var spec = data && data[el.getAttribute("data-metric-chart")];
    if (!spec) return;
    var tip = el.parentElement.querySelector(".chart-tooltip");
    var opts = {
      width: Math.max(240, el.clientWidth),
      height: 180,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [
        { values: formatX, space: 64, stroke: "#5b6470", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" } },
        { label: spec.unit, labelSize: 18, values: formatTick(spec.unit), stroke: "#5b6470",
          grid: { stroke: "#eef0f3" }, size: 60 },
      ],
      series: [{}].concat(spec.series.map(function (s) {
        // Points where few values are drawn: a value between two gaps is a point, not a line.
        var drawn = s.values.filter(function (v) { return v !== null; }).length;
        return { label: s.label, stroke: s.colour, width: 2, spanGaps: false,
                 points: { show: spec.x.length <= 31 || drawn <= 31 } };
      })),
      hooks: tip ? {
        setCursor: [function (u) { showTooltip(tip, spec, u); }],
      } : {},
    };
    var plot = new uPlot(opts, [spec.x].concat(spec.series.map(function (s) { return s.values; })), el);
    el.uplot = plot;  // the chart behind the element, for the console's browser tests
    if (tip) el.addEventListener("mouseleave", function () { tip.hidden = true; });
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
