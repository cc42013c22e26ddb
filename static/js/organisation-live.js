// An organisation's live page: each member's live sandbox with its latest usage
// (`usage.sample`), its state (`sandbox.status`), and the organisation's credits
// (`credits.balance`), over /ws/live/organisation/<id>/. A sandbox the table does not know yet,
// or one that stopped, makes it read the table again.
(function () {
  "use strict";
  var root = document.getElementById("organisation-live");
  if (!root || !window.PortalLive) return;
  var live = window.PortalLive;
  var fmt = live.format;
  var cfg = live.config("organisation-live-data");
  if (!cfg) return;
  var DIGITS = { gpu_util_pct: 1, gpu_memory_used_mib: 0, gpu_power_w: 1, cpu_pct: 1 };
  var LIVE_STATUSES = ["requested", "queued", "starting", "running", "stopping"];

  function setText(node, value) {
    if (node && node.textContent !== value) node.textContent = value;
  }

  function row(id) {
    return root.querySelector('#organisation-sandboxes tr[data-sandbox="' + id + '"]');
  }

  var refreshing = false;
  function refresh() {
    if (refreshing) return; // one read at a time: a tick brings a sample per sandbox
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        ["#organisation-sandboxes", "#credit-stats"].forEach(function (selector) {
          var fresh = doc.querySelector(selector);
          var here = root.querySelector(selector);
          if (fresh && here) here.innerHTML = fresh.innerHTML;
        });
      })
      .catch(function () {})
      .then(function () { refreshing = false; });
  }

  function onSample(msg) {
    var tr = row(msg.sandbox);
    if (!tr) { refresh(); return; }
    Object.keys(DIGITS).forEach(function (name) {
      setText(tr.querySelector('[data-reading="' + name + '"]'), fmt.number(msg[name], DIGITS[name]));
    });
  }

  function onStatus(msg) {
    var tr = row(msg.sandbox);
    if (!tr) { if (LIVE_STATUSES.indexOf(msg.status) !== -1) refresh(); return; }
    setText(tr.querySelector('[data-field="status_label"]'), msg.status_label);
    if (tr.dataset.status !== msg.status) {
      tr.dataset.status = msg.status;
      if (LIVE_STATUSES.indexOf(msg.status) === -1) refresh();
    }
  }

  function onBalance(msg) {
    if (!cfg.account || msg.account !== cfg.account) return;
    setText(root.querySelector('[data-stat="balance"]'), msg.balance_gpu_hours);
    setText(root.querySelector('[data-stat="burn"]'), fmt.gpuHours(msg.burn_credit_seconds_per_hour));
    setText(root.querySelector('[data-stat="runway"]'), fmt.runway(msg.runway_seconds, cfg.text));
  }

  live.connect(root.dataset.wsPath, {
    handlers: {
      "usage.sample": onSample,
      "sandbox.status": onStatus,
      "spawn.progress": onStatus,
      "credits.balance": onBalance,
    },
    onResync: refresh,
  });
})();
