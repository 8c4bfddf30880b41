// Live progress of one deployment: a WebSocket to the console's consumer, which pushes a snapshot (state, replicas,
// history, and the engine output captured so far) on connect and after every change, and new output lines as the
// worker reads them. The log panel keeps its newest lines only. Reconnects with a growing delay; the page is
// complete without it.
(function () {
  "use strict";
  var holder = document.getElementById("deployment-live");
  if (!holder || !window.WebSocket) return;
  var statusEl = document.getElementById("live-status");
  var badge = document.getElementById("state-badge");
  var reason = document.getElementById("state-reason");
  var replicaRows = document.getElementById("replica-rows");
  var eventRows = document.getElementById("event-rows");
  var logPanel = document.getElementById("log-lines");
  var rolloutState = document.getElementById("rollout-state");
  var rolloutReason = document.getElementById("rollout-reason");
  var rolloutNew = document.getElementById("rollout-new");
  var rolloutOld = document.getElementById("rollout-old");
  var maxLines = logPanel ? parseInt(logPanel.getAttribute("data-max-lines"), 10) || 300 : 0;
  var delay = 1000;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function dash(v) { return v === null || v === undefined ? "—" : v; }
  function counts(byState) {
    var parts = Object.keys(byState || {}).map(function (state) { return byState[state] + " " + state; });
    return parts.length ? parts.join(", ") : "none";
  }

  function renderRollout(rollout) {
    if (!rollout || !rolloutState) return;
    rolloutState.textContent = rollout.state_label;
    rolloutReason.textContent = rollout.reason ? "(" + rollout.reason + ")" : "";
    rolloutNew.textContent = counts(rollout.new_replicas);
    rolloutOld.textContent = counts(rollout.old_replicas);
  }

  function render(snap) {
    badge.textContent = snap.state_label;
    badge.className = "badge badge-" + snap.state;
    badge.setAttribute("data-state", snap.state);
    reason.textContent = snap.state_reason || "";
    renderRollout(snap.rollout);
    statusEl.textContent = snap.at_rest ? "Live · up to date" : "Live · " + snap.state_label.toLowerCase() + "…";
    replicaRows.replaceChildren();
    if (!snap.replicas.length) {
      var empty = el("tr");
      empty.appendChild(el("td", { colspan: "8", "class": "muted" }, "No replicas yet: the worker creates them as it reconciles."));
      replicaRows.appendChild(empty);
    }
    snap.replicas.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("th", { scope: "row" }, "#" + r.id));
      var state = el("td");
      state.appendChild(el("span", { "class": "badge badge-" + r.state }, r.state_label));
      tr.appendChild(state);
      tr.appendChild(el("td", {}, r.pool || "—"));
      tr.appendChild(el("td", { "class": "mono" }, r.endpoint || "—"));
      tr.appendChild(el("td", { "class": "num" }, dash(r.running)));
      tr.appendChild(el("td", { "class": "num" }, dash(r.waiting)));
      tr.appendChild(el("td", { "class": "num" }, r.kv_cache === null || r.kv_cache === undefined ? "—" : Math.round(r.kv_cache * 100) + "%"));
      var err = el("td");
      if (r.last_error) err.appendChild(el("span", { "class": "error-text" }, r.last_error)); else err.textContent = "—";
      tr.appendChild(err);
      replicaRows.appendChild(tr);
    });
    eventRows.replaceChildren();
    snap.events.forEach(function (e) {
      var li = el("li");
      li.appendChild(el("span", { "class": "badge badge-" + e.to_state }, e.to_state));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", { "class": "muted" }, "from " + e.from_state));
      li.appendChild(document.createTextNode(" — " + e.reason));
      li.appendChild(el("br"));
      li.appendChild(el("time", { "class": "hint", datetime: e.created_at }, new Date(e.created_at).toLocaleString()));
      eventRows.appendChild(li);
    });
  }

  function logLine(replica, text, extraClass) {
    return el("span", { "class": "log-line" + (extraClass ? " " + extraClass : ""), "data-replica": String(replica) },
      "#" + replica + " | " + text + "\n");
  }

  function renderLogs(entries, replace) {
    if (!logPanel) return;
    var following = logPanel.scrollTop + logPanel.clientHeight >= logPanel.scrollHeight - 4;
    if (replace) logPanel.replaceChildren();
    (entries || []).forEach(function (entry) {
      if (entry.skipped) logPanel.appendChild(logLine(entry.replica, "… " + entry.skipped + " earlier lines not shown", "muted"));
      entry.lines.forEach(function (line) { logPanel.appendChild(logLine(entry.replica, line)); });
    });
    var lines = logPanel.querySelectorAll(".log-line");
    for (var i = 0; i < lines.length - maxLines; i++) lines[i].remove();
    var empty = document.getElementById("log-empty");
    if (lines.length && empty) empty.remove();
    if (!lines.length && !empty) logPanel.appendChild(el("span", { "class": "muted", id: "log-empty" }, "No output captured yet."));
    if (following) logPanel.scrollTop = logPanel.scrollHeight;
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + holder.getAttribute("data-ws-path"));
    socket.onopen = function () { delay = 1000; };
    socket.onmessage = function (message) {
      var data = JSON.parse(message.data);
      if (data.type === "snapshot") {
        render(data.deployment);
        if (data.logs) renderLogs(data.logs, true);
      } else if (data.type === "logs") {
        renderLogs(data.entries, false);
      }
    };
    socket.onclose = function (event) {
      if (event.code === 4403 || event.code === 4404) { statusEl.textContent = "Live updates unavailable."; return; }
      statusEl.textContent = "Reconnecting…";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
