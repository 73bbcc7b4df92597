// keypress-ari console: live calls over server-sent events (no library). Each message is
// {"rows": [...]} (the calls up when the stream opened), {"row": {...}} (a call changed) or
// {"gone": call_id} (it ended).
(function () {
  "use strict";
  var body = document.querySelector("#live tbody");
  var template = document.getElementById("row-template");
  if (!body || !template || !window.EventSource) { return; }
  var source = new EventSource("/console/live/stream");
  function show(r) {
    var tr = document.getElementById("call-" + r.call_id);
    if (!tr) {
      tr = template.content.firstElementChild.cloneNode(true);
      tr.id = "call-" + r.call_id;
      tr.dataset.call = r.call_id;
      tr.querySelectorAll("form").forEach(function (form) {
        form.action = "/console/live/" + encodeURIComponent(r.call_id) + "/" + form.dataset.action;
      });
      body.appendChild(tr);
    }
    tr.querySelectorAll("[data-f]").forEach(function (td) {
      td.textContent = r[td.dataset.f] === undefined ? "" : String(r[td.dataset.f]);
    });
  }
  source.onmessage = function (message) {
    var update = JSON.parse(message.data);
    if (update.rows) {  // the calls up now: drop the rows of calls that ended meanwhile
      var up = {};
      update.rows.forEach(function (r) { up["call-" + r.call_id] = true; show(r); });
      Array.prototype.slice.call(body.rows).forEach(function (tr) {
        if (!up[tr.id]) { tr.remove(); }
      });
      return;
    }
    if (update.gone) {
      var gone = document.getElementById("call-" + update.gone);
      if (gone) { gone.remove(); }
      return;
    }
    show(update.row);
  };
})();
