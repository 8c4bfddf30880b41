// The playground chat: posts the conversation to the console's chat endpoint and renders the streamed answer
// token by token from its server-sent events, then tokens, latency, finish reason, cost and the guardrails that
// fired (read back from the usage record once the worker has written it). Stop aborts the request: the server sees
// the connection close and ends the gateway request. "Copy as curl" copies the conversation as a /v1 call with the
// key left to $INFERIA_API_KEY. No secrets ever reach the page: the server holds the key.
(function () {
  "use strict";
  var root = document.getElementById("playground");
  var form = document.getElementById("pg-form");
  if (!root || !form) return;
  var log = document.getElementById("pg-log");
  var prompt = document.getElementById("pg-prompt");
  var send = document.getElementById("pg-send");
  var statusEl = document.getElementById("pg-status");
  var stop = document.getElementById("pg-stop");
  var copyCurl = document.getElementById("pg-curl");
  var running = null;  // the AbortController of the request in flight
  var csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  var history = [];

  function bubble(kind, text) {
    var empty = document.getElementById("pg-empty");
    if (empty) empty.remove();
    var div = document.createElement("div");
    div.className = "msg msg-" + kind;
    div.setAttribute("data-testid", "playground-message-" + kind);
    var body = document.createElement("div");
    body.className = "msg-text";
    body.textContent = text || "";
    div.appendChild(body);
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }
  function meta(div, text) {
    var m = div.querySelector(".msg-meta");
    if (!m) { m = document.createElement("div"); m.className = "msg-meta"; m.setAttribute("data-testid", "playground-meta"); div.appendChild(m); }
    m.textContent = text;
  }

  function summarise(div, info, usage) {
    var parts = [];
    if (usage) parts.push(usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens");
    if (info.ttft_ms !== null && info.ttft_ms !== undefined) parts.push("first token " + Math.round(info.ttft_ms) + " ms");
    if (info.latency_ms !== undefined) parts.push("total " + Math.round(info.latency_ms) + " ms");
    parts.push("finish: " + (info.finish_reason || "none"));
    if (info.cost !== undefined) parts.push("cost " + info.cost);
    meta(div, parts.join(" · "));
    div.querySelector(".msg-meta").setAttribute("data-finish-reason", info.finish_reason || "");
  }

  function fetchRecord(div, info, usage, attempt) {
    var url = root.getAttribute("data-request-url").replace("REQUEST_ID", encodeURIComponent(info.request_id));
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.ok ? r.json() : null; }).then(function (rec) {
      if (!rec) {
        if (attempt < 8) setTimeout(function () { fetchRecord(div, info, usage, attempt + 1); }, 1000);
        return;
      }
      info.cost = rec.cost;
      summarise(div, info, { prompt_tokens: rec.prompt_tokens, completion_tokens: rec.completion_tokens });
      var fired = (rec.guardrails || []).map(function (g) { return g.category + " (" + g.action + ")"; });
      var m = div.querySelector(".msg-meta");
      m.textContent += " · guardrails: " + (fired.length ? fired.join(", ") : "none fired");
      m.setAttribute("data-recorded", "true");
    });
  }

  function handleEvent(state, name, data) {
    if (name === "error") {
      state.div.className = "msg msg-error";
      state.text.textContent = (state.text.textContent ? state.text.textContent + "\n\n" : "") + (data.message || "Error") + (data.code ? " (" + data.code + ")" : "");
      state.failed = true;
    } else if (name === "inferia") {
      state.info = data;
    } else if (data && data.error) {
      state.div.className = "msg msg-error";
      state.text.textContent += "\n\n" + (data.error.message || "Error");
      state.failed = true;
    } else if (data && data.choices) {
      data.choices.forEach(function (c) {
        if (c.delta && c.delta.content) { state.answer += c.delta.content; state.text.textContent = state.answer; }
        if (c.finish_reason) state.finishReason = c.finish_reason;
      });
      if (data.usage) state.usage = data.usage;
      log.scrollTop = log.scrollHeight;
    } else if (data && data.usage) {
      state.usage = data.usage;
    }
  }

  function parseBlock(state, block) {
    var name = "message", lines = [];
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) name = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) lines.push(line.slice(5).trim());
    });
    var raw = lines.join("\n");
    if (!raw || raw === "[DONE]") return;
    try { handleEvent(state, name, JSON.parse(raw)); } catch (e) { /* a partial or foreign line: skip it */ }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = prompt.value.trim();
    if (!text) return;
    var variablesText = (document.getElementById("pg-variables") || { value: "" }).value.trim();
    var variables = null;
    if (variablesText) {
      try { variables = JSON.parse(variablesText); } catch (e) { variables = undefined; }
      if (variables === undefined || variables === null || typeof variables !== "object" || Array.isArray(variables)) {
        statusEl.textContent = "Template variables must be a JSON object such as {\"name\": \"value\"}.";
        return;
      }
    }
    history.push({ role: "user", content: text });
    bubble("user", text);
    prompt.value = "";
    var div = bubble("assistant", "");
    var state = { div: div, text: div.querySelector(".msg-text"), answer: "", usage: null, info: null, failed: false,
                  finishReason: null, stopped: false };
    var settings = currentSettings();
    send.disabled = true;
    running = window.AbortController ? new AbortController() : null;
    stop.hidden = false;
    statusEl.textContent = "Streaming…";
    fetch(root.getAttribute("data-chat-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      signal: running ? running.signal : undefined,
      body: JSON.stringify({
        org: root.getAttribute("data-org"),
        model: settings.model,
        template: document.getElementById("pg-template").value,
        variables: variables,
        max_tokens: settings.max_tokens,
        temperature: settings.temperature,
        messages: settings.messages,
      }),
    }).then(function (response) {
      if (!response.ok || !response.body) {
        return response.json().then(function (j) { handleEvent(state, "error", j.error || {}); });
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { if (buffer.trim()) parseBlock(state, buffer); return; }
          buffer += decoder.decode(chunk.value, { stream: true });
          var blocks = buffer.split("\n\n");
          buffer = blocks.pop();
          blocks.forEach(function (b) { parseBlock(state, b); });
          return pump();
        });
      }
      return pump();
    }).catch(function (error) {
      if (error && error.name === "AbortError") { state.stopped = true; return; }
      handleEvent(state, "error", { message: "The connection to the console was lost." });
    }).then(function () {
      running = null;
      stop.hidden = true;
      send.disabled = false;
      statusEl.textContent = state.stopped ? "Stopped." : "";
      if (!state.failed && state.answer) history.push({ role: "assistant", content: state.answer });
      if (state.stopped) {
        // The server ended the gateway request; the answer so far stays, marked as cut short.
        meta(div, "stopped by you · finish: stopped");
        div.querySelector(".msg-meta").setAttribute("data-finish-reason", "stopped");
      } else if (state.info) {
        state.info.finish_reason = state.finishReason;
        summarise(div, state.info, state.usage);
        fetchRecord(div, state.info, state.usage, 0);
      }
      prompt.focus();
    });
  });

  function currentSettings() {
    var messages = history.slice();
    var system = document.getElementById("pg-system").value.trim();
    if (system) messages.unshift({ role: "system", content: system });
    var temperature = parseFloat(document.getElementById("pg-temperature").value);
    return {
      model: document.getElementById("pg-model").value,
      max_tokens: parseInt(document.getElementById("pg-max-tokens").value, 10) || null,
      temperature: isNaN(temperature) ? null : temperature,
      messages: messages,
    };
  }

  // A shell word that holds exactly `text`: single quotes, each inner one written '\''.
  function shellQuote(text) { return "'" + String(text).replace(/'/g, "'\\''") + "'"; }

  function curlCommand() {
    var settings = currentSettings();
    var pending = prompt.value.trim();
    if (pending) settings.messages.push({ role: "user", content: pending });
    var body = { model: settings.model, messages: settings.messages };
    if (settings.max_tokens) body.max_tokens = settings.max_tokens;
    if (settings.temperature !== null) body.temperature = settings.temperature;
    var template = document.getElementById("pg-template").value;
    if (template) {
      // The fields the gateway reads: the template by name, its variables as an object.
      body.template = template;
      try {
        var variables = JSON.parse(document.getElementById("pg-variables").value || "{}");
        if (variables && typeof variables === "object" && !Array.isArray(variables)) body.template_variables = variables;
      } catch (e) { /* left out: sending the chat says what is wrong with them */ }
    }
    return "curl " + shellQuote(root.getAttribute("data-v1-url")) + " \\\n" +
      '  -H "Authorization: Bearer $INFERIA_API_KEY" \\\n' +
      '  -H "Content-Type: application/json" \\\n' +
      "  -d " + shellQuote(JSON.stringify(body));
  }

  stop.addEventListener("click", function () { if (running) running.abort(); });

  copyCurl.addEventListener("click", function () {
    var text = curlCommand();
    copyCurl.setAttribute("data-curl", text);
    var done = function () { statusEl.textContent = "curl command copied."; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { statusEl.textContent = "Copying was refused by the browser."; });
    } else {
      statusEl.textContent = "Copying needs a secure context (https or localhost).";
    }
  });
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  document.getElementById("pg-clear").addEventListener("click", function () {
    history = [];
    log.replaceChildren();
    prompt.focus();
  });
})();
