// A sandbox's page, live: charts (uPlot) first painted from the page's embedded series, then
// extended by `usage.sample`; other ranges read from /api/v1/usage; balance, burn rate, runway
// and the charge from `credits.balance` and `usage.sample`; the stop countdown from
// `credits.warning`. The numbers beside the charts are their text equivalents.
(function () {
  "use strict";
  var root = document.getElementById("sandbox-live");
  if (!root || !window.PortalLive) return;
  var live = window.PortalLive;
  var fmt = live.format;
  var cfg = live.config("sandbox-live-data");
  if (!cfg) return;
  var text = cfg.text;

  var METRICS = [
    { name: "gpu_util_pct", digits: 1, percent: true },
    { name: "gpu_memory_used_mib", digits: 0 },
    { name: "gpu_power_w", digits: 1 },
    { name: "cpu_pct", digits: 1, percent: true },
    { name: "memory_used_mib", digits: 0 },
  ].filter(function (metric) {
    // only what the page charts: a CPU-only sandbox has no GPU figures
    return root.querySelector('[data-chart="' + metric.name + '"]');
  });
  var LIVE_STATUSES = ["requested", "queued", "starting", "running", "stopping"];
  var range = cfg.range;
  var series = cfg.series;
  var charts = {};
  // The server's clock minus this browser's: the countdown counts to the server's stop time.
  var skewMs = cfg.now ? Date.parse(cfg.now) - Date.now() : 0;

  function $(selector) { return root.querySelector(selector); }

  function setText(node, value) {
    if (node && node.textContent !== value) node.textContent = value;
  }

  // --- Charts ------------------------------------------------------------------------------

  function windowSeconds() { return cfg.ranges[range].seconds; }

  // The window ends now. A sandbox younger than its window is drawn from its first reading
  // (at least five minutes wide), not as a dot at the right edge of an empty hour.
  function xRange(u, dataMin) {
    var now = (Date.now() + skewMs) / 1000;
    var start = now - windowSeconds();
    if (dataMin !== null && isFinite(dataMin)) start = Math.max(start, Math.min(dataMin, now - 300));
    return [start, now];
  }

  function yRange(metric) {
    if (metric.percent) return function () { return [0, 100]; };
    return function (u, min, max) { return [0, max > 0 ? max * 1.15 : 1]; };
  }

  // Time labels in the page's language: hours and minutes, with the day for the week view.
  var lang = document.documentElement.lang || undefined;
  var clockFormat = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  var dayFormat = new Intl.DateTimeFormat(lang, { day: "numeric", month: "short", hour: "2-digit", hourCycle: "h23" });

  function timeLabels(u, splits) {
    var format = windowSeconds() > 2 * 86400 ? dayFormat : clockFormat;
    return splits.map(function (t) { return format.format(new Date(t * 1000)); });
  }

  function chartOptions(metric, width) {
    var axis = { stroke: "#5b6660", grid: { stroke: "#d9e0dc", width: 1 }, ticks: { show: false } };
    return {
      width: width,
      height: 150,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true, range: xRange }, y: { range: yRange(metric) } },
      axes: [
        Object.assign({ values: timeLabels, space: 60 }, axis),
        Object.assign({ size: 56 }, axis),
      ],
      series: [
        {},
        { stroke: "#0b6b35", fill: "rgba(11, 107, 53, 0.12)", width: 2, spanGaps: false },
      ],
    };
  }

  function chartBox(metric) {
    return $('[data-chart="' + metric.name + '"] .chart-canvas');
  }

  function drawCharts() {
    if (!window.uPlot) return;
    METRICS.forEach(function (metric) {
      var box = chartBox(metric);
      box.parentNode.dataset.points = String(series.t.length); // how many points it draws
      var data = [series.t, series[metric.name]];
      if (charts[metric.name]) {
        charts[metric.name].setData(data);
      } else {
        charts[metric.name] = new window.uPlot(
          chartOptions(metric, Math.max(box.clientWidth, 200)), data, box
        );
      }
    });
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      METRICS.forEach(function (metric) {
        var chart = charts[metric.name];
        if (chart) chart.setSize({ width: Math.max(chartBox(metric).clientWidth, 200), height: 150 });
      });
    }, 150);
  });

  function appendSample(msg) {
    // Only the raw range moves with the clock; minute and hour roll-ups are re-read on demand.
    if (range !== "1h") return;
    var t = Math.floor(Date.parse(msg.at) / 1000);
    if (isNaN(t) || (series.t.length && t <= series.t[series.t.length - 1])) return;
    series.t.push(t);
    METRICS.forEach(function (metric) {
      var value = msg[metric.name];
      series[metric.name].push(value === null || value === undefined ? null : value);
    });
    var oldest = t - windowSeconds();
    while (series.t.length && series.t[0] < oldest) {
      series.t.shift();
      METRICS.forEach(function (metric) { series[metric.name].shift(); });
    }
    drawCharts();
  }

  // --- Numbers -----------------------------------------------------------------------------

  function reading(name, value, digits) {
    setText($('[data-reading="' + name + '"]'), fmt.number(value, digits));
  }

  function onSample(msg) {
    if (msg.sandbox !== cfg.sandbox) return;
    if (msg.at) skewMs = Date.parse(msg.at) - Date.now();
    METRICS.forEach(function (metric) { reading(metric.name, msg[metric.name], metric.digits); });
    reading("gpu_memory_total_mib", msg.gpu_memory_total_mib, 0);
    reading("memory_limit_mib", msg.memory_limit_mib, 0);
    if (typeof msg.charged_credit_seconds === "number") {
      setText($('[data-stat="charged"]'), fmt.gpuHours(cfg.charged_before_run + msg.charged_credit_seconds));
    }
    if (msg.simulated && msg.gpus && msg.gpus.length) $("#simulated-badge").hidden = false;
    $("#no-readings").hidden = true;
    appendSample(msg);
  }

  function onBalance(msg) {
    if (msg.account !== cfg.account) return;
    if (msg.at) skewMs = Date.parse(msg.at) - Date.now();
    // Four places (a third of a second of one GPU), so the balance visibly burns.
    setText($('[data-stat="balance"]'), (msg.balance_credit_seconds / 3600).toFixed(4));
    setText($('[data-stat="burn"]'), fmt.gpuHours(msg.burn_credit_seconds_per_hour));
    setText($('[data-stat="runway"]'), fmt.runway(msg.runway_seconds, text));
  }

  // --- The stop countdown ------------------------------------------------------------------

  var banner = $("#countdown");
  var stopAtMs = null;
  var ticker = null;

  function tick() {
    var left = Math.max(0, Math.floor((stopAtMs - (Date.now() + skewMs)) / 1000));
    var clock = banner.querySelector('[data-field="clock"]');
    if (left <= 0) {
      setText(clock, text.stopping_now);
      return;
    }
    var seconds = left % 60;
    setText(clock, Math.floor(left / 60) + ":" + (seconds < 10 ? "0" : "") + seconds);
  }

  function showCountdown(stopAt) {
    var at = Date.parse(stopAt);
    if (isNaN(at)) return;
    var wasHidden = banner.hidden;
    stopAtMs = at;
    var time = banner.querySelector('[data-field="stop_time"]');
    time.setAttribute("datetime", stopAt);
    setText(time, new Date(at - skewMs).toLocaleTimeString(document.documentElement.lang, {
      hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    }));
    tick();
    if (!ticker) ticker = setInterval(tick, 1000);
    if (wasHidden) banner.hidden = false;
  }

  function hideCountdown() {
    banner.hidden = true;
    stopAtMs = null;
    if (ticker) { clearInterval(ticker); ticker = null; }
  }

  function onWarning(msg) {
    var ours = (msg.sandboxes || []).indexOf(cfg.sandbox) !== -1;
    if (!ours && msg.account !== cfg.account) return;
    if (msg.kind === "exhausted" && ours && msg.stop_at) {
      showCountdown(msg.stop_at);
    } else if (msg.kind === "restored") {
      hideCountdown();
      $("#threshold-warning").hidden = true;
    } else if (msg.kind === "threshold" && msg.threshold_percent !== null) {
      var warning = $("#threshold-warning");
      setText(warning, fmt.interpolate(text.threshold, { percent: msg.threshold_percent }));
      warning.hidden = false;
    }
  }

  // --- State -------------------------------------------------------------------------------

  function onStatus(msg) {
    if (msg.sandbox !== cfg.sandbox) return;
    var badge = $("#sandbox-status");
    badge.dataset.status = msg.status;
    setText(badge, msg.status_label);
    if (LIVE_STATUSES.indexOf(msg.status) === -1) hideCountdown();
  }

  function showError(message) {
    var box = $("#usage-error");
    setText(box, message ? text.load_failed + " " + message : text.load_failed);
    box.hidden = false;
  }

  function loadRange(key) {
    if (!cfg.ranges[key]) return;
    var now = Date.now() + skewMs;
    var query = new URLSearchParams({
      sandbox: cfg.sandbox,
      from: new Date(now - cfg.ranges[key].seconds * 1000).toISOString(),
      to: new Date(now).toISOString(),
      step: cfg.ranges[key].step,
    });
    fetch(cfg.usage_url + "?" + query.toString(), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.json().then(
          function (body) { return { ok: response.ok, body: body }; },
          function () { return { ok: false, body: null }; }
        );
      })
      .then(function (result) {
        if (!result.ok || !result.body || !Array.isArray(result.body.t)) {
          var error = result.body && result.body.error;
          showError(error && error.message);
          return;
        }
        $("#usage-error").hidden = true;
        range = key;
        series = { t: result.body.t };
        METRICS.forEach(function (metric) { series[metric.name] = result.body[metric.name] || []; });
        drawCharts();
        var url = new URL(window.location.href);
        url.searchParams.set("range", key);
        window.history.replaceState(null, "", url.toString());
      })
      .catch(function () { showError(""); });
  }

  var form = document.getElementById("range-form");
  form.querySelectorAll("[data-no-js]").forEach(function (node) { node.hidden = true; });
  form.addEventListener("change", function (event) {
    if (event.target.name === "range") loadRange(event.target.value);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var checked = form.querySelector('input[name="range"]:checked');
    if (checked) loadRange(checked.value);
  });

  // After a reconnect (or dropped messages): the page as the server has it now.
  function resync() {
    var url = new URL(window.location.href);
    url.searchParams.set("range", range);
    fetch(url.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("sandbox-live-data");
        if (!fresh) return;
        var next = JSON.parse(fresh.textContent);
        ["#credit-stats", "#sandbox-status"].forEach(function (selector) {
          var node = doc.querySelector(selector);
          if (node) $(selector).innerHTML = node.innerHTML;
        });
        doc.querySelectorAll("[data-reading]").forEach(function (node) {
          setText($('[data-reading="' + node.dataset.reading + '"]'), node.textContent);
        });
        cfg.charged_before_run = next.charged_before_run;
        if (next.now) skewMs = Date.parse(next.now) - Date.now();
        series = next.series;
        drawCharts();
        if (next.stop_at) showCountdown(next.stop_at); else hideCountdown();
      })
      .catch(function () {});
  }

  drawCharts();
  if (cfg.stop_at) showCountdown(cfg.stop_at);
  live.connect(root.dataset.wsPath, {
    handlers: {
      "usage.sample": onSample,
      "credits.balance": onBalance,
      "credits.warning": onWarning,
      "sandbox.status": onStatus,
      "spawn.progress": onStatus,
    },
    onResync: resync,
  });
})();
