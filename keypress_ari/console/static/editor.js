// The flow editor: "continue call routing" excludes a disposition and call control actions.
// Turning it on clears and disables them (disabled fields are not posted); turning it off
// enables them again. Without JavaScript the server refuses the mix with the same message.
(function () {
  "use strict";
  function apply(box) {
    var flow = box.closest("fieldset.flow");
    if (!flow) { return; }
    flow.querySelectorAll(".excl").forEach(function (el) {
      if (box.checked) {
        if (el.tagName === "SELECT") { el.selectedIndex = 0; } else { el.value = ""; }
      }
      el.disabled = box.checked;
    });
  }
  document.querySelectorAll("input.continue-routing").forEach(function (box) {
    box.addEventListener("change", function () { apply(box); });
    apply(box);
  });
})();
