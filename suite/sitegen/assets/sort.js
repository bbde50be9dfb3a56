// Click a column header of a .sb-sortable table to sort by it; click again to reverse.
// Cells carry data-sort; numeric columns (th[data-type=num]) sort numerically, empty last.
(function () {
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    var numeric = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    function key(row) {
      var cell = row.cells[col];
      var v = cell ? (cell.getAttribute("data-sort") || "") : "";
      return numeric ? (v === "" ? null : parseFloat(v)) : v.toLowerCase();
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
      return x < y ? -dir : x > y ? dir : 0;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  }
  function init() {
    document.querySelectorAll("table.sb-sortable").forEach(function (table) {
      if (table.dataset.sbSortable) return;
      table.dataset.sbSortable = "1";
      var head = table.tHead && table.tHead.rows[0];
      if (!head) return;
      Array.prototype.forEach.call(head.cells, function (th, i) {
        th.classList.add("sb-sort-header");
        th.tabIndex = 0;
        th.addEventListener("click", function () { sortBy(table, i, th); });
        th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(table, i, th); });
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
