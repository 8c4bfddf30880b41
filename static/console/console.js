// Console shell behaviour shared by the dashboard, deployments and playground pages: filter controls marked
// data-autosubmit submit their form when changed; forms marked data-confirm ask first. Plain JS, no build step; every page works without it.
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var control = event.target;
    if (control && control.hasAttribute && control.hasAttribute("data-autosubmit") && control.form) {
      control.form.submit();
    }
  });
  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
