// Live sandbox states over the portal's WebSocket: progress bar while starting, queue position
// while waiting, and a fresh table when a sandbox's state changes (the actions differ).
// Reconnects with exponential back-off (1 s doubling to 30 s, with jitter).
(function () {
  "use strict";
  var box = document.getElementById("sandboxes");
  if (!box || !window.WebSocket) return;
  var delay = 1000;

  function row(id) {
    return box.querySelector('tr[data-sandbox="' + id + '"]');
  }

  function field(tr, name) {
    return tr.querySelector('[data-field="' + name + '"]');
  }

  function refresh() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("sandboxes");
        if (fresh) box.innerHTML = fresh.innerHTML;
      });
  }

  function apply(msg) {
    var tr = row(msg.sandbox);
    if (!tr) { refresh(); return; }
    var progress = field(tr, "progress");
    progress.hidden = msg.status !== "starting";
    progress.value = msg.progress;
    progress.textContent = msg.progress + "%";
    field(tr, "message").textContent = msg.message;
    field(tr, "status_label").textContent = msg.status_label;
    var queue = field(tr, "queue");
    queue.hidden = !msg.queue_position;
    field(tr, "queue_position").textContent = msg.queue_position || "";
    if (tr.dataset.status !== msg.status) {
      tr.dataset.status = msg.status;
      refresh();
    }
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + box.dataset.wsPath);
    var missedSome = Boolean(connect.dropped);
    socket.onopen = function () {
      delay = 1000;
      // Messages sent while the socket was down are gone: read the current state once.
      if (missedSome) refresh();
    };
    socket.onmessage = function (event) {
      var msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      if (msg.v === 1 && (msg.type === "sandbox.status" || msg.type === "spawn.progress")) apply(msg);
    };
    socket.onclose = function (event) {
      if (event.code === 4401) return; // signed out: nothing to reconnect to
      connect.dropped = true;
      setTimeout(connect, delay + Math.random() * 500);
      delay = Math.min(delay * 2, 30000);
    };
  }

  connect();
})();
