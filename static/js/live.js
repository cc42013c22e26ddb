// The portal's live stream client, shared by every live page: connect to one WebSocket path,
// parse the JSON messages (contract: sandboxes/live/MESSAGES.md), hand each to the handler of
// its `type` (only version 1 is understood), and reconnect with exponential back-off and jitter
// (1 s doubling to 30 s). Close codes 4401 (signed out) and 4403 (not yours) are final.
//
//   PortalLive.connect("/ws/live/", {
//     handlers: { "usage.sample": function (msg) { ... } },
//     onResync: function () { ... },  // read the current state again: after a reconnect, or
//                                      // when the server says it dropped messages
//   });
(function () {
  "use strict";

  var VERSION = 1;
  var FIRST_DELAY_MS = 1000;
  var MAX_DELAY_MS = 30000;
  var FINAL_CODES = { 4401: true, 4403: true };

  function connect(path, options) {
    options = options || {};
    var handlers = options.handlers || {};
    var onResync = options.onResync || function () {};
    var delay = FIRST_DELAY_MS;
    var opened = false;
    var stopped = false;
    var socket = null;
    var timer = null;

    function dispatch(raw) {
      var msg;
      try { msg = JSON.parse(raw); } catch (e) { return; }
      if (!msg || msg.v !== VERSION || typeof msg.type !== "string") return;
      if (msg.type === "live.dropped") { onResync(msg); return; }
      var handler = handlers[msg.type];
      if (handler) handler(msg);
    }

    function schedule() {
      // Jitter (±25 %) so that a restarted server is not hit by every browser at once.
      var wait = delay * (0.75 + Math.random() * 0.5);
      delay = Math.min(delay * 2, MAX_DELAY_MS);
      timer = setTimeout(open, wait);
    }

    function open() {
      timer = null;
      if (stopped) return;
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      socket = new WebSocket(scheme + window.location.host + path);
      socket.onopen = function () {
        delay = FIRST_DELAY_MS;
        // Messages sent while the socket was down are gone: read the current state once.
        if (opened) onResync();
        opened = true;
        if (options.onOpen) options.onOpen();
      };
      socket.onmessage = function (event) { dispatch(event.data); };
      socket.onclose = function (event) {
        socket = null;
        if (options.onClose) options.onClose(event.code);
        if (stopped || FINAL_CODES[event.code]) return;
        schedule();
      };
    }

    if (!window.WebSocket) return null;
    open();
    return {
      close: function () {
        stopped = true;
        if (timer) clearTimeout(timer);
        if (socket) socket.close(1000);
      },
    };
  }

  // A page's data, embedded with Django's json_script (CSP allows no inline script).
  function config(id) {
    var node = document.getElementById(id);
    if (!node) return null;
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  // "%(h)s h %(m)s min" with {h: 3, m: 20}: the format strings come translated from the page.
  function interpolate(format, values) {
    return format.replace(/%\((\w+)\)s/g, function (all, name) {
      return name in values ? String(values[name]) : all;
    });
  }

  // A number as the server's floatformat writes it: fixed digits, no grouping; "—" for none.
  function number(value, digits) {
    if (value === null || value === undefined || isNaN(value)) return "—";
    return Number(value).toFixed(digits || 0);
  }

  // A runway as the server's `runway` filter writes it ("3 h 20 min", "45 min", "none").
  function runway(seconds, words) {
    if (seconds === null || seconds === undefined) return words.unlimited;
    var minutes = Math.floor(seconds / 60);
    if (minutes <= 0) return words.none;
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours >= 48) return interpolate(words.days, { days: Math.floor(hours / 24) });
    if (hours) return interpolate(words.hours_minutes, { h: hours, m: minutes });
    return interpolate(words.minutes, { m: minutes });
  }

  // Credit-seconds as GPU-hours with two decimals (the server rounds half up; so does this).
  function gpuHours(creditSeconds) {
    if (creditSeconds === null || creditSeconds === undefined) return "—";
    return (Math.round(creditSeconds / 36) / 100).toFixed(2);
  }

  window.PortalLive = {
    connect: connect,
    config: config,
    format: { interpolate: interpolate, number: number, runway: runway, gpuHours: gpuHours },
  };
})();
