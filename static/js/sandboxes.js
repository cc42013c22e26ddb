// Live sandbox states on the sandboxes page (through live.js): progress bar while starting,
// queue position while waiting, and a fresh table when a sandbox's state changes (the actions
// differ) or after the stream was down (what was sent meanwhile is gone).
(function () {
  "use strict";
  var box = document.getElementById("sandboxes");
  if (!box || !window.PortalLive) return;

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
      })
      .catch(function () {}); // offline for a moment: the next message or reconnect tries again
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

  window.PortalLive.connect(box.dataset.wsPath, {
    handlers: { "sandbox.status": apply, "spawn.progress": apply },
    onResync: refresh,
  });
})();
