// The fleet table, live: every few seconds the same query as the page (filter, sort and
// page number included), as JSON, redrawn with textContent only (no text from the store is
// ever parsed as HTML): the rows, the count, the range shown and the page links.
(function () {
  "use strict";
  var table = document.getElementById("fleet");
  if (!table) { return; }
  var every = 5000;
  var source = table.getAttribute("data-source");
  var link = table.getAttribute("data-link");
  var live = document.getElementById("live");
  var count = document.getElementById("count");
  var range = document.getElementById("range");
  var pager = document.getElementById("pager");

  function drawPager(links) {
    while (pager.firstChild) { pager.removeChild(pager.firstChild); }
    links.forEach(function (l) {
      var el;
      if (l.href) {
        el = document.createElement("a");
        el.href = l.href;
        if (l.rel === "prev" || l.rel === "next") { el.rel = l.rel; }
      } else if (l.rel === "current") {
        el = document.createElement("strong");
        el.setAttribute("aria-current", "page");
      } else {
        el = document.createElement("span");
      }
      el.textContent = l.label;
      pager.appendChild(el);
      pager.appendChild(document.createTextNode("\n"));
    });
  }

  function draw(doc) {
    var body = document.createElement("tbody");
    doc.rows.forEach(function (row) {
      var tr = document.createElement("tr");
      if (row.revoked) { tr.className = "revoked"; }
      doc.columns.forEach(function (c) {
        var td = document.createElement("td");
        if (c === "terminal") {
          var a = document.createElement("a");
          a.href = link + encodeURIComponent(row.terminal);
          a.textContent = row.terminal;
          td.appendChild(a);
        } else {
          if (c === "enrolled" || c === "last_seen") {
            // the date and the time each kept whole, as the page draws them
            td.className = "stamp";
            String(row[c]).split(" ").forEach(function (w, i) {
              if (i) { td.appendChild(document.createTextNode(" ")); }
              var span = document.createElement("span");
              span.textContent = w;
              td.appendChild(span);
            });
          } else {
            td.textContent = row[c];
          }
          if (c === "faults" && row.faulty) { td.className = "fault"; }
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
    count.textContent = doc.count_text;
    if (range) { range.textContent = doc.range_text; }
    if (pager) { drawPager(doc.links); }
  }

  function poll() {
    if (document.hidden) {  // a tab nobody looks at asks nothing of the service
      window.setTimeout(poll, every);
      return;
    }
    fetch(source + window.location.search, {credentials: "same-origin",
                                            headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (doc) { draw(doc); live.hidden = false; })
      .catch(function () { live.hidden = true; })
      .then(function () { window.setTimeout(poll, every); });
  }
  window.setTimeout(poll, every);
}());
