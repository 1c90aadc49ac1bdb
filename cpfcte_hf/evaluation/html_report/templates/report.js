// The image grid of report.html: reads the page's JSON blob, then filters, sorts and draws one page of cards at a
// time. Every value from the run (file names, tags, class names, reasons) is written with textContent, never as
// markup. The view (order, filters, page) is kept in the address's #fragment, so a view can be linked or reloaded.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var rows = data.rows;
  var names = data.class_names;
  var colors = data.class_colors;
  var STATUS_RANK = { failed: 0, missing: 1, skipped: 2, ok: 3 };

  var controls = {
    sort: document.getElementById("sort"),
    klass: document.getElementById("class-filter"),
    status: document.getElementById("status-filter"),
    size: document.getElementById("page-size"),
  };
  var grid = document.getElementById("grid");
  var shown = document.getElementById("shown");
  var state = { sort: data.sorts[0].value, klass: "", status: "", page: 1, size: data.page_size };

  function option(select, value, label) {
    var element = document.createElement("option");
    element.value = String(value);
    element.textContent = label;
    select.appendChild(element);
  }

  data.sorts.forEach(function (sort) { option(controls.sort, sort.value, sort.label); });
  var classCounts = {};
  rows.forEach(function (row) {
    (row.classes || []).forEach(function (c) { classCounts[c] = (classCounts[c] || 0) + 1; });
  });
  names.forEach(function (name, id) {
    if (classCounts[id]) { option(controls.klass, id, name + " (" + classCounts[id] + ")"); }
  });
  data.page_sizes.forEach(function (size) { option(controls.size, size, String(size)); });

  // ----------------------------------------------------------------------------------------- the view in the #fragment
  function readFragment() {
    var params = new URLSearchParams(window.location.hash.slice(1));
    if (params.has("sort") && data.sorts.some(function (s) { return s.value === params.get("sort"); })) {
      state.sort = params.get("sort");
    }
    if (params.has("class") && classCounts[params.get("class")]) { state.klass = params.get("class"); }
    if (params.has("status")) { state.status = params.get("status"); }
    var size = parseInt(params.get("size"), 10);
    if (size > 0 && size <= 1000) { state.size = size; }
    var page = parseInt(params.get("page"), 10);
    if (page > 0) { state.page = page; }
    if (data.page_sizes.indexOf(state.size) < 0) { option(controls.size, state.size, String(state.size)); }
  }

  function writeFragment() {
    var params = new URLSearchParams();
    params.set("sort", state.sort);
    if (state.klass !== "") { params.set("class", state.klass); }
    if (state.status !== "") { params.set("status", state.status); }
    params.set("size", String(state.size));
    params.set("page", String(state.page));
    try {
      history.replaceState(null, "", "#" + params.toString());
    } catch (error) {
      // Some browsers refuse history changes on file:// pages: the view still works, only the address stays.
    }
  }

  // ----------------------------------------------------------------------------------------------- filter and sort
  var sortedCache = { key: null, order: null };

  function sortValue(row, field, set) {
    if (field === "miou") { return row.miou && row.miou[set] != null ? row.miou[set] : null; }
    if (field === "tag_score") { return row.tag_score != null ? row.tag_score : null; }
    if (field === "status") { return STATUS_RANK[row.status]; }
    if (field === "id") { return row.id; }
    return row.index;
  }

  function sortedRows() {
    if (sortedCache.key === state.sort) { return sortedCache.order; }
    var parts = state.sort.split(":");
    var direction = parts[parts.length - 1] === "desc" ? -1 : 1;
    var field = parts[0];
    var set = parts.slice(1, parts.length - 1).join(":");
    var keyed = rows.map(function (row) { return [sortValue(row, field, set), row]; });
    keyed.sort(function (a, b) {
      // Images without a value (no ground truth, failed, skipped) come last in either direction.
      if (a[0] === null || b[0] === null) {
        if (a[0] === null && b[0] === null) { return a[1].index - b[1].index; }
        return a[0] === null ? 1 : -1;
      }
      if (a[0] < b[0]) { return -direction; }
      if (a[0] > b[0]) { return direction; }
      return a[1].index - b[1].index;
    });
    sortedCache = { key: state.sort, order: keyed.map(function (pair) { return pair[1]; }) };
    return sortedCache.order;
  }

  function visibleRows() {
    var klass = state.klass === "" ? null : parseInt(state.klass, 10);
    return sortedRows().filter(function (row) {
      if (klass !== null && (row.classes || []).indexOf(klass) < 0) { return false; }
      if (state.status === "problem") { return row.status === "failed" || row.status === "missing"; }
      if (state.status !== "") { return row.status === state.status; }
      return true;
    });
  }

  // ---------------------------------------------------------------------------------------------------------- cards
  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function percent(value) { return value == null ? "–" : (100 * value).toFixed(1); }

  function chip(classId, text) {
    var node = element("span", "chip", text);
    node.style.setProperty("--c", colors[classId] || "#888");
    return node;
  }

  function card(row) {
    var node = element("article", "card status-" + row.status);
    node.setAttribute("data-id", row.id);
    var panels = element("div", "panels");
    // Thumbnails are at most `thumbnail_side` px a side; small images are shown at that size too.
    var natural = row.size || [data.thumbnail_side, (3 * data.thumbnail_side) / 4];
    var scale = data.thumbnail_side / Math.max(natural[0], natural[1]);
    var size = [Math.round(natural[0] * scale), Math.round(natural[1] * scale)];
    data.panels.forEach(function (title, k) {
      var figure = element("figure");
      var src = row.thumbnails ? row.thumbnails[k] : null;
      if (src) {
        var image = element("img");
        image.loading = "lazy";
        image.decoding = "async";
        image.width = size[0];
        image.height = size[1];
        image.alt = title + " of " + row.id;
        image.src = src;
        var link = row.links ? row.links[k] : null;
        if (link) {
          var anchor = element("a");
          anchor.href = link;
          anchor.target = "_blank";
          anchor.rel = "noopener";
          anchor.title = "open the full-size file";
          anchor.appendChild(image);
          figure.appendChild(anchor);
        } else {
          figure.appendChild(image);
        }
      } else {
        var empty = element("div", "empty", row.status === "skipped" ? "not loaded" : "none");
        empty.style.width = size[0] + "px";
        empty.style.height = size[1] + "px";
        figure.appendChild(empty);
      }
      figure.appendChild(element("figcaption", null, title));
      panels.appendChild(figure);
    });
    node.appendChild(panels);

    var body = element("div", "body");
    var name = element("h3", "name", row.id);
    name.title = row.id;
    body.appendChild(name);
    if (row.status !== "ok") { body.appendChild(element("p", "status", row.status)); }
    if (row.reason) { body.appendChild(element("p", "reason", row.reason)); }
    if (row.note) { body.appendChild(element("p", "note", row.note)); }
    if (row.miou) {
      var miou = element("p", "miou", "mIoU ");
      data.sets.forEach(function (set, k) {
        if (!(set in row.miou)) { return; }
        var value = element("b", null, percent(row.miou[set]));
        miou.appendChild(document.createTextNode((k ? " · " : "") + set + " "));
        miou.appendChild(value);
      });
      body.appendChild(miou);
    }
    if (row.tags && row.tags.length) {
      var tags = element("p", "tags", "tags ");
      row.tags.forEach(function (c) { tags.appendChild(chip(c, names[c])); });
      body.appendChild(tags);
    }
    if (row.scores && row.scores.length) {
      var scores = element("p", "scores", "scores ");
      row.scores.forEach(function (pair, k) {
        var tagged = !row.tags || !row.tags.length || row.tags.indexOf(pair[0]) >= 0;
        var item = element("span", tagged ? "tagged" : "other", (k ? " · " : "") + names[pair[0]] + " ");
        item.appendChild(element("b", null, pair[1].toFixed(2)));
        scores.appendChild(item);
      });
      body.appendChild(scores);
    }
    node.appendChild(body);
    return node;
  }

  // ---------------------------------------------------------------------------------------------------------- pages
  function render() {
    var visible = visibleRows();
    var pages = Math.max(1, Math.ceil(visible.length / state.size));
    state.page = Math.min(Math.max(1, state.page), pages);
    var start = (state.page - 1) * state.size;
    var slice = visible.slice(start, start + state.size);
    var fragment = document.createDocumentFragment();
    slice.forEach(function (row) { fragment.appendChild(card(row)); });
    grid.replaceChildren(fragment);
    shown.textContent = visible.length
      ? "images " + (start + 1) + "–" + (start + slice.length) + " of " + visible.length +
        (visible.length < rows.length ? " (" + rows.length + " in all)" : "")
      : "no image matches";
    document.querySelectorAll(".pager").forEach(function (pager) {
      pager.querySelector(".page-label").textContent = "page " + state.page + " of " + pages;
      pager.querySelector(".prev").disabled = state.page <= 1;
      pager.querySelector(".next").disabled = state.page >= pages;
    });
    controls.sort.value = state.sort;
    controls.klass.value = state.klass;
    controls.status.value = state.status;
    controls.size.value = String(state.size);
    writeFragment();
  }

  function change(key, parse) {
    return function (event) {
      state[key] = parse ? parse(event.target.value) : event.target.value;
      state.page = 1;
      render();
    };
  }

  controls.sort.addEventListener("change", change("sort"));
  controls.klass.addEventListener("change", change("klass"));
  controls.status.addEventListener("change", change("status"));
  controls.size.addEventListener("change", change("size", function (v) { return parseInt(v, 10); }));
  document.querySelectorAll(".pager .prev").forEach(function (button) {
    button.addEventListener("click", function () { state.page -= 1; render(); });
  });
  document.querySelectorAll(".pager .next").forEach(function (button) {
    button.addEventListener("click", function () { state.page += 1; render(); });
  });

  readFragment();
  render();
  document.body.setAttribute("data-ready", "true");
  if (window.performance && performance.mark) { performance.mark("report-grid-rendered"); }
})();
