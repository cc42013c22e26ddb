// The programme overview's charts (uPlot), drawn from the series the page embeds with
// json_script (#overview-charts-data; the CSP allows no inline script): the cluster hour by
// hour over the last 7 days (average utilisation, share of GPU time held, share held while
// idle) and the GPU-hours used per day this month. The figures beside and below the charts
// are their text equivalents; the colours match the legend's swatches (css/programme.css).
(function () {
  "use strict";
  var root = document.getElementById("overview-charts");
  var node = document.getElementById("overview-charts-data");
  if (!root || !node || !window.uPlot) return;
  var cfg;
  try { cfg = JSON.parse(node.textContent); } catch (e) { return; }
  var text = cfg.text || {};

  var COLOURS = { util: "#0b6b35", held: "#7fb897", idle: "#a31d1d" };
  var lang = document.documentElement.lang || undefined;
  var dayFormat = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short" });
  var axis = { stroke: "#5b6660", grid: { stroke: "#d9e0dc", width: 1 }, ticks: { show: false } };

  // Ticks on whole days (or every 2, 7 days when narrow), so no day is written twice.
  var DAY_INCRS = [86400, 2 * 86400, 7 * 86400, 14 * 86400];

  function dayLabels(u, splits) {
    return splits.map(function (t) { return dayFormat.format(new Date(t * 1000)); });
  }

  function box(name) {
    return root.querySelector('[data-chart="' + name + '"] .chart-canvas');
  }

  function widthOf(el) { return Math.max(el.clientWidth, 240); }

  var charts = [];

  function draw(name, options, data) {
    var el = box(name);
    if (!el) return;
    el.parentNode.dataset.points = String(data[0].length); // how many points it draws
    options.width = widthOf(el);
    charts.push({ el: el, chart: new window.uPlot(options, data, el), height: options.height });
  }

  function utilisation() {
    var s = cfg.utilisation;
    draw("utilisation", {
      height: 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: [0, 100] } },
      axes: [
        Object.assign({ values: dayLabels, incrs: DAY_INCRS, space: 70 }, axis),
        Object.assign({ size: 48 }, axis),
      ],
      series: [
        {},
        { label: text.held_pct, stroke: COLOURS.held, fill: "rgba(127, 184, 151, 0.25)", width: 1, spanGaps: false },
        { label: text.idle_held_pct, stroke: COLOURS.idle, fill: "rgba(163, 29, 29, 0.15)", width: 1, spanGaps: false },
        { label: text.util_pct, stroke: COLOURS.util, width: 2, spanGaps: false },
      ],
    }, [s.t, s.held_pct, s.idle_held_pct, s.util_pct]);
  }

  function usage() {
    var s = cfg.usage;
    var bars = window.uPlot.paths && window.uPlot.paths.bars
      ? window.uPlot.paths.bars({ size: [0.7, 40] }) : undefined;
    draw("usage", {
      height: 180,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        // Half a day either side, so the first and the last bar are drawn whole.
        x: { time: true, range: function (u, min, max) { return [min - 43200, max + 43200]; } },
        y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; } },
      },
      axes: [
        Object.assign({ values: dayLabels, incrs: DAY_INCRS, space: 50 }, axis),
        Object.assign({ size: 56 }, axis),
      ],
      series: [
        {},
        { label: text.gpu_hours, stroke: COLOURS.util, fill: "rgba(11, 107, 53, 0.55)", width: 1, paths: bars, points: { show: false } },
      ],
    }, [s.t, s.gpu_hours]);
  }

  utilisation();
  usage();

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (c) { c.chart.setSize({ width: widthOf(c.el), height: c.height }); });
    }, 150);
  });
})();
