// The cluster page's history chart (uPlot): GPU-hours held per day over the last days, with the
// part held while idle drawn over it, from the series the page embeds with json_script
// (#cluster-history-data; the CSP allows no inline script). The table below the chart is its
// text equivalent; the colours match the legend's swatches (css/programme.css).
(function () {
  "use strict";
  var root = document.getElementById("cluster-history");
  var node = document.getElementById("cluster-history-data");
  if (!root || !node || !window.uPlot) return;
  var cfg;
  try { cfg = JSON.parse(node.textContent); } catch (e) { return; }
  var series = cfg.series;
  var text = cfg.text || {};
  var el = root.querySelector('[data-chart="days"] .chart-canvas');
  if (!el || !series || !series.t.length) return;

  var lang = document.documentElement.lang || undefined;
  var dayFormat = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short" });
  var axis = { stroke: "#5b6660", grid: { stroke: "#d9e0dc", width: 1 }, ticks: { show: false } };
  var bars = window.uPlot.paths && window.uPlot.paths.bars;

  function widthOf() { return Math.max(el.clientWidth, 240); }

  el.parentNode.dataset.points = String(series.t.length); // how many points it draws
  var chart = new window.uPlot({
    width: widthOf(),
    height: 200,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    scales: {
      // Half a day either side, so the first and the last bar are drawn whole.
      x: { time: true, range: function (u, min, max) { return [min - 43200, max + 43200]; } },
      y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; } },
    },
    axes: [
      Object.assign({
        values: function (u, splits) {
          return splits.map(function (t) { return dayFormat.format(new Date(t * 1000)); });
        },
        incrs: [86400, 2 * 86400, 7 * 86400], // whole days: no day written twice
        space: 50,
      }, axis),
      Object.assign({ size: 56 }, axis),
    ],
    series: [
      {},
      // Idle time is part of held time: its bar is drawn over the held bar, narrower.
      { label: text.held_hours, stroke: "#7fb897", fill: "rgba(127, 184, 151, 0.8)", width: 1, paths: bars ? bars({ size: [0.7, 48] }) : undefined, points: { show: false } },
      { label: text.idle_held_hours, stroke: "#a31d1d", fill: "rgba(163, 29, 29, 0.75)", width: 1, paths: bars ? bars({ size: [0.4, 28] }) : undefined, points: { show: false } },
    ],
  }, [series.t, series.held_hours, series.idle_held_hours], el);

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { chart.setSize({ width: widthOf(), height: 200 }); }, 150);
  });
})();
