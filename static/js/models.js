// The model page: copy an example to the clipboard. Where the browser offers no clipboard (a
// page served over plain http from another host), the example is selected instead, ready for
// Ctrl+C.
(function () {
  "use strict";
  function select(source) {
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.selectAllChildren(source);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.dataset.copy);
    if (!source) return;
    if (!navigator.clipboard || !window.isSecureContext) {
      select(source);
      return;
    }
    navigator.clipboard.writeText(source.textContent).then(
      function () {
        button.classList.add("copied");
        window.setTimeout(function () { button.classList.remove("copied"); }, 1500);
      },
      function () { select(source); }
    );
  });
})();
