// The playground: chat with a model through the gateway's POST /models/playground/chat (the
// session and the CSRF token, no API key), reading its server-sent events as they arrive with
// fetch and a ReadableStream (EventSource cannot POST). Each answer ends with its tokens and
// cost. Text goes in with textContent only (a model's output is never HTML) and every message
// has dir="auto", so Urdu reads right to left inside an English page and English inside an
// Urdu one. The words shown come from the page's data-* attributes, translated by Django.
(function () {
  "use strict";
  var root = document.getElementById("playground");
  if (!root) return;
  var form = document.getElementById("playground-form");
  var conversation = document.getElementById("conversation");
  var input = document.getElementById("pg-input");
  var modelSelect = document.getElementById("pg-model");
  var payerSelect = document.getElementById("pg-payer");
  var maxTokensInput = document.getElementById("pg-max-tokens");
  var errorBox = document.getElementById("pg-error");
  var sendButton = document.getElementById("pg-send");
  var stopButton = document.getElementById("pg-stop");
  var clearButton = document.getElementById("pg-clear");
  var history = [];
  var controller = null;

  function words(name) {
    return root.getAttribute(name) || "";
  }

  function format(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (_match, key) {
      return values[key] === undefined || values[key] === null ? "" : String(values[key]);
    });
  }

  function csrfToken() {
    var field = form.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function bubble(role, who, content) {
    var item = document.createElement("div");
    item.className = "message " + role;
    var label = document.createElement("p");
    label.className = "who";
    label.textContent = who;
    var body = document.createElement("div");
    body.className = "text";
    body.setAttribute("dir", "auto");
    body.textContent = content;
    var meta = document.createElement("p");
    meta.className = "meta muted";
    item.appendChild(label);
    item.appendChild(body);
    item.appendChild(meta);
    conversation.appendChild(item);
    item.scrollIntoView({ block: "end" });
    return { item: item, body: body, meta: meta };
  }

  // What went wrong, in the reader's language when we know the code; the gateway's own message
  // (English) otherwise.
  function errorText(payload, response) {
    var error = (payload && payload.error) || {};
    var code = error.code || error.type || "";
    var template = code ? words("data-error-" + code) : "";
    if (template) {
      var retry = response ? response.headers.get("Retry-After") : null;
      return format(template, { seconds: retry || "60" });
    }
    return (words("data-error-generic") + " " + (error.message || "")).trim();
  }

  function busy(on) {
    sendButton.disabled = on;
    stopButton.hidden = !on;
    modelSelect.disabled = on;
    if (payerSelect) payerSelect.disabled = on;
  }

  // One server-sent event: its data lines joined. Returns true at [DONE].
  function handleEvent(raw, turn) {
    var data = raw
      .split("\n")
      .filter(function (line) { return line.indexOf("data:") === 0; })
      .map(function (line) { return line.slice(5).replace(/^ /, ""); })
      .join("\n");
    if (!data) return false; // a comment (": ping") or an empty event
    if (data === "[DONE]") return true;
    var message;
    try {
      message = JSON.parse(data);
    } catch (_e) {
      return false;
    }
    if (message.error) {
      turn.failed = true;
      showError(errorText(message, null));
      return false;
    }
    if (message.choices && message.choices.length) {
      var delta = message.choices[0].delta || {};
      if (typeof delta.content === "string" && delta.content) {
        // Random-weight test models emit NUL and other control bytes: show the rest.
        turn.answer += delta.content.replace(/\u0000/g, "");
        turn.view.body.textContent = turn.answer;
      }
    }
    if (message.usage && message.cost_credit_seconds !== undefined) {
      turn.usage = message;
      turn.view.meta.textContent = format(words("data-text-usage"), {
        prompt: message.usage.prompt_tokens,
        completion: message.usage.completion_tokens,
        cost: message.cost_credit_seconds,
      });
      turn.view.item.dataset.requestId = message.request_id || "";
    }
    return false;
  }

  async function readStream(response, turn) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
      var cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        var raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (handleEvent(raw, turn)) return true;
      }
    }
    return false;
  }

  async function send(text) {
    var model = modelSelect.value;
    var maxTokens = parseInt(maxTokensInput.value, 10) || 256;
    var payload = {
      model: model,
      messages: history.concat([{ role: "user", content: text }]),
      max_tokens: maxTokens,
    };
    if (payerSelect && payerSelect.value) payload.organisation = payerSelect.value;
    bubble("user", words("data-text-you"), text);
    var turn = { answer: "", usage: null, failed: false, view: bubble("assistant", model, "") };
    turn.view.meta.textContent = words("data-text-waiting");
    showError("");
    busy(true);
    controller = new AbortController();
    try {
      var response = await fetch(root.dataset.endpoint, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "text/event-stream",
          "X-CSRFToken": csrfToken(),
        },
        body: JSON.stringify(payload),
        signal: controller.signal,
      });
      if (!response.ok) {
        var body = null;
        try {
          body = await response.json();
        } catch (_e) {
          body = null;
        }
        turn.failed = true;
        showError(errorText(body, response));
      } else {
        var finished = await readStream(response, turn);
        if (!finished && !turn.failed) {
          turn.failed = true;
          showError(errorText(null, null));
        }
      }
    } catch (error) {
      if (error && error.name === "AbortError") {
        turn.view.meta.textContent = words("data-text-stopped");
      } else {
        turn.failed = true;
        showError(words("data-error-network"));
      }
    } finally {
      controller = null;
      busy(false);
    }
    if (!turn.answer && !turn.usage) {
      // Nothing came back (refused, failed, or stopped before the first token): the question
      // goes back to the box, and the conversation stays as it was.
      turn.view.item.remove();
      conversation.lastChild && conversation.lastChild.remove(); // the question, unanswered
      input.value = text;
      return;
    }
    if (!turn.usage && !turn.failed && turn.view.meta.textContent === words("data-text-waiting")) {
      turn.view.meta.textContent = "";
    }
    history.push({ role: "user", content: text });
    history.push({ role: "assistant", content: turn.answer });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text || controller) return;
    input.value = "";
    send(text);
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  stopButton.addEventListener("click", function () {
    if (controller) controller.abort();
  });

  clearButton.addEventListener("click", function () {
    if (controller) controller.abort();
    history = [];
    conversation.textContent = "";
    showError("");
  });

  modelSelect.addEventListener("change", function () {
    // Another model has not seen this conversation's earlier answers as its own.
    history = [];
    conversation.textContent = "";
    showError("");
  });
})();
