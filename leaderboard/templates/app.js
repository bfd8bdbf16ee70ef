/* Sort and filter the leaderboard tables. Works offline, no libraries. It only moves and
   hides existing rows and cells: it never builds HTML from data, so text from model output
   stays text. */
(function () {
  "use strict";

  function sortValue(row, index, type) {
    var cell = row.cells[index];
    if (!cell) { return null; }
    var raw = cell.getAttribute("data-value");
    if (raw === null) { raw = cell.textContent.trim(); }
    if (type === "num") {
      var n = parseFloat(raw);
      return raw === "" || isNaN(n) ? null : n;
    }
    return raw.toLowerCase();
  }

  function sortBy(table, th) {
    var headers = th.parentNode.children;
    var index = Array.prototype.indexOf.call(headers, th);
    var type = th.getAttribute("data-type") || "text";
    var current = th.getAttribute("aria-sort");
    // First click: numbers best (largest) first, text A to Z; later clicks flip.
    var dir = current ? (current === "ascending" ? "descending" : "ascending")
                      : (type === "num" ? "descending" : "ascending");
    for (var i = 0; i < headers.length; i++) { headers[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortValue(a, index, type), y = sortValue(b, index, type);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }  // blanks last
      var c = x < y ? -1 : (x > y ? 1 : 0);
      return dir === "ascending" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function filterRows(query) {
    var q = query.trim().toLowerCase(), shown = 0, total = 0;
    document.querySelectorAll("table.filterable tbody tr").forEach(function (tr) {
      var hit = (tr.getAttribute("data-name") || "").indexOf(q) !== -1;
      tr.hidden = !hit;
      if (tr.closest("table").id === "ranking") { total++; if (hit) { shown++; } }
    });
    var out = document.getElementById("shown");
    if (out) { out.textContent = q ? shown + " of " + total + " models" : ""; }
  }

  function filterColumns(query) {
    var q = query.trim().toLowerCase();
    document.querySelectorAll("table.filterable").forEach(function (table) {
      var headers = table.tHead.rows[0].cells;
      for (var i = 0; i < headers.length; i++) {
        var key = headers[i].getAttribute("data-col");
        if (key === null || key === "model") { continue; }
        var hide = q !== "" && key.indexOf(q) === -1;
        headers[i].hidden = hide;
        Array.prototype.forEach.call(table.tBodies[0].rows, function (tr) {
          if (tr.cells[i]) { tr.cells[i].hidden = hide; }
        });
      }
    });
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.addEventListener("click", function () { sortBy(table, th); });
    });
  });
  var models = document.getElementById("filter-models");
  if (models) { models.addEventListener("input", function () { filterRows(models.value); }); }
  var columns = document.getElementById("filter-columns");
  if (columns) { columns.addEventListener("input", function () { filterColumns(columns.value); }); }
}());
