// tidegate console: progressive enhancement only; every page works without it.
"use strict";
(function () {
  // Catalog: filter rows while typing (the server search still answers on submit).
  const search = document.querySelector("#catalog-search input[type=search]");
  if (search) {
    search.addEventListener("input", function () {
      const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      document.querySelectorAll("#catalog tr.product").forEach(function (row) {
        const text = row.dataset.search || row.textContent.toLowerCase();
        row.hidden = !words.every(function (w) { return text.includes(w); });
      });
    });
  }

  // Erasure and sync runs: ask before acting.
  const erase = document.getElementById("erase-form");
  if (erase) {
    erase.addEventListener("submit", function (event) {
      if (!window.confirm("Erase this subject everywhere? This cannot be undone.")) event.preventDefault();
    });
  }

  // Lineage: click a relation for its columns and their upstream columns.
  const graph = document.getElementById("lineage");
  const data = document.getElementById("lineage-columns");
  const panel = document.getElementById("columns");
  if (!graph || !data || !panel) return;
  const columns = JSON.parse(data.textContent);
  const labels = JSON.parse(document.getElementById("lineage-labels").textContent);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function show(relation) {
    graph.querySelectorAll(".node").forEach(function (n) {
      n.classList.toggle("selected", n.dataset.relation === relation);
    });
    graph.querySelectorAll(".edge").forEach(function (e) {
      e.classList.toggle("hot", e.dataset.from === relation || e.dataset.to === relation);
    });
    panel.replaceChildren();
    panel.appendChild(el("h2", relation));
    const table = el("table", undefined, "grid");
    table.id = "column-lineage";
    const head = el("tr");
    ["column", "comes from (how)"].forEach(function (h) { head.appendChild(el("th", h)); });
    table.appendChild(head);
    const cols = columns[relation] || {};
    Object.keys(cols).sort().forEach(function (col) {
      const parents = cols[col];
      const row = el("tr");
      row.dataset.column = col;
      const name = relation + "." + col;
      row.appendChild(el("td", labels[name] ? col + " (" + labels[name] + ")" : col));
      row.appendChild(el("td", parents.map(function (p) {
        return p[0] + " (" + p[1] + ")";
      }).join(", ") || "—"));
      table.appendChild(row);
    });
    panel.appendChild(table);
  }

  graph.querySelectorAll(".node").forEach(function (node) {
    node.addEventListener("click", function () { show(node.dataset.relation); });
    node.addEventListener("keydown", function (event) {
      if (event.key === "Enter") show(node.dataset.relation);
    });
  });
  if (panel.dataset.focus) show(panel.dataset.focus);
})();
