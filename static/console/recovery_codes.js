// The recovery codes page: "Download (.txt)" builds the file here in the browser from the codes already on the page
// (a Blob), so saving them needs no second request that could show them again. Copying is pages.js's
// data-copy-target. Plain JS, no build step; without it the codes stay on the page to copy by hand.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-download-codes]");
    if (!button) return;
    var list = document.querySelector(button.getAttribute("data-download-codes"));
    if (!list) return;
    var codes = Array.prototype.map.call(list.querySelectorAll("code"), function (code) {
      return code.textContent.trim();
    });
    var lines = [
      "Inferia recovery codes" + (button.getAttribute("data-account") ? " for " + button.getAttribute("data-account") : ""),
      "Each code signs you in once if you lose your authenticator app. Keep them somewhere safe.",
      ""
    ].concat(codes, [""]);
    var url = URL.createObjectURL(new Blob([lines.join("\n")], { type: "text/plain;charset=utf-8" }));
    var link = document.createElement("a");
    link.href = url;
    link.download = button.getAttribute("data-filename") || "recovery-codes.txt";
    document.body.appendChild(link);
    link.click();
    document.body.removeChild(link);
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
    var status = document.getElementById(button.getAttribute("aria-controls") || "");
    if (status) status.textContent = "Downloaded " + link.download + ".";
  });
})();
