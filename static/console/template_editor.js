// The prompt template editor: adds message rows (from the formset's empty row in a <template>), hides the ones
// marked for removal, and lists the variables the messages' {{name}} placeholders use as they are typed, keeping
// any default already entered. The server detects and validates the same again; the form posts without this file
// (rows are then added by saving and editing again).
(function () {
  "use strict";
  var PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}/g;

  function setUp(form) {
    var rows = form.querySelector("[data-message-rows]");
    var empty = form.querySelector("template[data-message-empty]");
    var total = form.querySelector("input[name$='-TOTAL_FORMS']");
    var maxForms = form.querySelector("input[name$='-MAX_NUM_FORMS']");
    var addButton = form.querySelector("[data-message-add]");
    var variableList = form.querySelector("[data-variable-rows]");
    var noVariables = form.querySelector("[data-variables-empty]");
    if (!rows || !empty || !total || !variableList) return;
    var remembered = {};

    function live(row) {
      var remove = row.querySelector("[data-message-remove]");
      return !(remove && remove.checked);
    }

    function detected() {
      var names = [];
      rows.querySelectorAll("[data-message-row]").forEach(function (row) {
        if (!live(row)) return;
        var text = row.querySelector("[data-message-content]").value;
        var match;
        PLACEHOLDER.lastIndex = 0;
        while ((match = PLACEHOLDER.exec(text)) !== null) {
          if (names.indexOf(match[1]) === -1) names.push(match[1]);
        }
      });
      return names;
    }

    function variableRow(name) {
      var li = document.createElement("li");
      li.className = "field";
      li.setAttribute("data-variable", name);
      li.setAttribute("data-testid", "template-variable");
      var label = document.createElement("label");
      label.htmlFor = "var-" + name;
      var code = document.createElement("code");
      code.textContent = "{{" + name + "}}";
      label.appendChild(code);
      label.appendChild(document.createTextNode(" default"));
      var input = document.createElement("input");
      input.type = "text";
      input.id = "var-" + name;
      input.name = "var-" + name;
      input.maxLength = 10000;
      input.placeholder = "(none: required)";
      input.value = remembered[name] || "";
      li.appendChild(label);
      li.appendChild(input);
      return li;
    }

    function refreshVariables() {
      var names = detected();
      var existing = {};
      variableList.querySelectorAll("[data-variable]").forEach(function (li) {
        var name = li.getAttribute("data-variable");
        var input = li.querySelector("input");
        if (input) remembered[name] = input.value;
        existing[name] = li;
      });
      names.forEach(function (name) {
        // Appending an element that is already in the list moves it: the list ends up in detection order.
        variableList.appendChild(existing[name] || variableRow(name));
        delete existing[name];
      });
      Object.keys(existing).forEach(function (name) { existing[name].remove(); });
      if (noVariables) noVariables.hidden = names.length > 0;
    }

    function markRemoved(row) {
      row.classList.toggle("is-removed", !live(row));
    }

    addButton && addButton.addEventListener("click", function () {
      var index = parseInt(total.value, 10) || 0;
      if (maxForms && index >= parseInt(maxForms.value, 10)) return;
      var html = empty.innerHTML.replace(/__prefix__/g, String(index));
      rows.insertAdjacentHTML("beforeend", html);
      total.value = String(index + 1);
      var added = rows.lastElementChild;
      var content = added && added.querySelector("[data-message-content]");
      if (content) content.focus();
    });
    rows.addEventListener("input", function (event) {
      if (event.target.matches("[data-message-content]")) refreshVariables();
    });
    rows.addEventListener("change", function (event) {
      if (!event.target.matches("[data-message-remove]")) return;
      markRemoved(event.target.closest("[data-message-row]"));
      refreshVariables();
    });
    rows.querySelectorAll("[data-message-row]").forEach(markRemoved);
  }

  document.querySelectorAll("form[data-template-editor]").forEach(setUp);
})();
