// The top bar's organisation switcher submits as soon as another organisation is picked (its button stays for
// keyboards and for pages without scripts).
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-submit-on-change]");
    if (select && select.form) select.form.submit();
  });
})();
