// The programme managers' cluster view, live: each `cluster.gpus` message (over
// /ws/live/cluster/) redraws the tiles in its order, adding tiles for new GPUs (from the
// page's <template>) and removing those no longer listed.
(function () {
  "use strict";
  var root = document.getElementById("cluster-live");
  if (!root || !window.PortalLive) return;
  var live = window.PortalLive;
  var fmt = live.format;
  var cfg = live.config("cluster-live-data");
  if (!cfg) return;
  var list = document.getElementById("gpu-tiles");
  var template = document.getElementById("gpu-tile-template");

  function setText(node, value) {
    if (node && node.textContent !== value) node.textContent = value;
  }

  function field(tile, name) {
    return tile.querySelector('[data-field="' + name + '"]');
  }

  function tileFor(uuid) {
    var tiles = list.querySelectorAll("[data-gpu]");
    for (var i = 0; i < tiles.length; i++) {
      if (tiles[i].dataset.gpu === uuid) return tiles[i];
    }
    var tile = template.content.firstElementChild.cloneNode(true);
    tile.dataset.gpu = uuid;
    return tile;
  }

  function holderText(holder) {
    if (!holder) return cfg.text.free;
    return holder.organisation ? holder.user + " · " + holder.organisation : holder.user;
  }

  function render(gpu) {
    var tile = tileFor(gpu.uuid);
    tile.dataset.health = gpu.health;
    tile.dataset.held = gpu.holder ? "yes" : "no";
    setText(field(tile, "index"), String(gpu.index));
    setText(field(tile, "model"), gpu.model || "");
    setText(field(tile, "mig_profile"), gpu.mig_profile || "");
    setText(field(tile, "health"), cfg.text.health[gpu.health] || gpu.health);
    field(tile, "simulated").hidden = !gpu.simulated;
    setText(field(tile, "holder"), holderText(gpu.holder));
    field(tile, "util_meter").value = gpu.util_pct || 0;
    setText(field(tile, "util_pct"), fmt.number(gpu.util_pct, 1));
    setText(field(tile, "memory_used_mib"), fmt.number(gpu.memory_used_mib, 0));
    setText(field(tile, "memory_total_mib"), fmt.number(gpu.memory_total_mib, 0));
    setText(field(tile, "power_w"), fmt.number(gpu.power_w, 1));
    setText(field(tile, "temperature_c"), fmt.number(gpu.temperature_c, 0));
    return tile;
  }

  function onGpus(msg) {
    var keep = {};
    (msg.gpus || []).forEach(function (gpu) {
      keep[gpu.uuid] = true;
      list.appendChild(render(gpu)); // appending an existing tile moves it into message order
    });
    list.querySelectorAll("[data-gpu]").forEach(function (tile) {
      if (!keep[tile.dataset.gpu]) tile.remove();
    });
    var empty = document.getElementById("no-gpus");
    if (empty) empty.hidden = msg.gpus && msg.gpus.length > 0;
  }

  function refresh() {
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("gpu-tiles");
        if (fresh) list.innerHTML = fresh.innerHTML;
      })
      .catch(function () {});
  }

  live.connect(root.dataset.wsPath, { handlers: { "cluster.gpus": onGpus }, onResync: refresh });
})();
