// Sort every <table class="sortable"> by a column when its header button is clicked.
// Cells may carry data-value (the raw number or text to sort by); empty values always sort
// last, ties keep the table's original order. No dependencies, no network.
(function () {
  "use strict";

  function sortValue(row, index, type) {
    var cell = row.cells[index];
    if (!cell) {
      return null;
    }
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (raw === "") {
      return null;
    }
    if (type === "number") {
      var number = parseFloat(raw);
      return isNaN(number) ? null : number;
    }
    return raw.toLocaleLowerCase();
  }

  function compare(a, b, descending) {
    if (a.value === null || b.value === null) {
      if (a.value === b.value) {
        return a.order - b.order;
      }
      return a.value === null ? 1 : -1;
    }
    var result = a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
    if (descending) {
      result = -result;
    }
    return result !== 0 ? result : a.order - b.order;
  }

  function firstDirectionIsDescending(header) {
    // Numbers start with the best first: higher-is-better columns descending.
    return header.getAttribute("data-type") === "number" &&
      header.getAttribute("data-higher-is-better") !== "false";
  }

  function sortBy(table, header) {
    var headers = Array.prototype.slice.call(header.parentNode.children);
    var index = headers.indexOf(header);
    var type = header.getAttribute("data-type") || "text";
    var current = header.getAttribute("aria-sort");
    var descending = current === "ascending" ? true :
      current === "descending" ? false : firstDirectionIsDescending(header);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row) {
      return { row: row, value: sortValue(row, index, type), order: Number(row.getAttribute("data-order")) };
    });
    rows.sort(function (a, b) { return compare(a, b, descending); });
    rows.forEach(function (item) { body.appendChild(item.row); });
    headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }

  function setUp(table) {
    var body = table.tBodies[0];
    if (!body || !table.tHead) {
      return;
    }
    Array.prototype.forEach.call(body.rows, function (row, i) {
      row.setAttribute("data-order", String(i));
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header) {
      var button = header.querySelector("button");
      if (button) {
        button.addEventListener("click", function () { sortBy(table, header); });
      }
    });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), setUp);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
