// A vector store's page. The upload form also takes files dropped onto it: the dropped files go into the form's file
// input and the form is submitted as it would be by its button (a plain multipart post; without this script the
// input and button do the same). The files table follows ingestion live: a WebSocket to the console's consumer
// pushes the store's files on connect and after every step a worker announces. Reconnects with a growing delay.
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (form && window.DataTransfer) {
    var input = document.getElementById("upload-files");
    var hint = document.getElementById("drop-hint");
    var maxFiles = parseInt(form.getAttribute("data-max-files"), 10) || 20;
    var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10) || 0;
    var depth = 0;
    form.addEventListener("dragenter", function (event) {
      event.preventDefault();
      depth += 1;
      form.classList.add("drag-over");
    });
    form.addEventListener("dragover", function (event) {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = "copy";
    });
    form.addEventListener("dragleave", function () {
      depth = Math.max(0, depth - 1);
      if (!depth) form.classList.remove("drag-over");
    });
    form.addEventListener("drop", function (event) {
      event.preventDefault();
      depth = 0;
      form.classList.remove("drag-over");
      var files = event.dataTransfer ? event.dataTransfer.files : null;
      if (!files || !files.length) return;
      if (files.length > maxFiles) { hint.textContent = "Drop at most " + maxFiles + " files at once."; return; }
      for (var i = 0; i < files.length; i++) {
        if (maxBytes && files[i].size > maxBytes) { hint.textContent = files[i].name + " is too large."; return; }
      }
      input.files = files;
      hint.textContent = "Uploading " + files.length + " file" + (files.length > 1 ? "s" : "") + "…";
      if (form.requestSubmit) form.requestSubmit(); else form.submit();
    });
  }

  var holder = document.getElementById("store-live");
  if (!holder || !window.WebSocket) return;
  var statusEl = document.getElementById("live-status");
  var rows = document.getElementById("file-rows");
  var usage = document.getElementById("store-usage");
  var chunksUrl = holder.getAttribute("data-chunks-url");
  var delay = 1000;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function size(bytes) {
    var units = ["bytes", "KB", "MB", "GB", "TB"];
    var value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit ? value.toFixed(1) : String(value)) + " " + units[unit];
  }

  // Rows the server rendered keep their remove forms (with the CSRF token): only the cells that change are updated,
  // and a page reload shows a file the page has no row for.
  function render(store) {
    if (usage) usage.textContent = size(store.usage_bytes);
    statusEl.textContent = store.in_progress ? "Live · " + store.in_progress + " file" + (store.in_progress > 1 ? "s" : "") + " in progress…" : "Live · up to date";
    var missing = false;
    store.files.forEach(function (f) {
      var row = rows.querySelector('tr[data-file="' + f.id + '"]');
      if (!row) { missing = true; return; }
      row.setAttribute("data-status", f.status);
      var badge = row.querySelector("[data-testid=store-file-status]");
      badge.textContent = f.status_label;
      badge.className = "badge badge-" + f.status;
      row.querySelector("[data-testid=store-file-chunk-count]").textContent =
        f.chunks_done + (f.chunks_total === null ? "" : " / " + f.chunks_total);
      var cells = row.children;
      var progress = cells[3];
      progress.replaceChildren();
      if (f.progress === null) {
        progress.appendChild(el("span", { "class": "muted" }, "—"));
      } else {
        progress.appendChild(el("progress", { max: "100", value: String(f.progress) }, f.progress + "%"));
        progress.appendChild(document.createTextNode(" " + f.progress + "%"));
      }
      var error = cells[4];
      error.replaceChildren();
      if (f.error_message) error.appendChild(el("span", { "class": "error-text", title: f.error_code }, f.error_message));
      else error.appendChild(el("span", { "class": "muted" }, "—"));
      var link = row.querySelector("[data-testid=store-file-chunks]");
      if (link && chunksUrl) link.setAttribute("href", chunksUrl.replace("/0/chunks/", "/" + f.id + "/chunks/"));
    });
    if (missing) statusEl.textContent += " · reload the page to see new files";
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + holder.getAttribute("data-ws-path"));
    socket.onopen = function () { delay = 1000; };
    socket.onmessage = function (message) {
      var data = JSON.parse(message.data);
      if (data.type === "snapshot") render(data.store);
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
