/* The basemap admin page (/admin/basemaps): edit the layer list in a table (add, remove, move up/down), preview it
 * on a map as it is being edited, save it (PUT /v1/basemaps with the revision read: someone else's save in between
 * is a 409, said in words) or return to the settings' default (DELETE). Values go in with .value / textContent.
 */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var page = window.gaBasemaps = {layers: [], revision: 0, saved: null, previewLayers: []};
  var KINDS = [["base", "底图"], ["labels", "注记"]];
  var SYSTEMS = [["wgs84", "WGS-84"], ["cgcs2000", "CGCS2000（天地图）"], ["gcj02", "GCJ-02（高德、腾讯）"],
                 ["bd09", "BD-09（百度）"]];
  var FIELDS = ["name", "kind", "url", "subdomains", "coordsys", "max_native_zoom", "attribution"];

  var map = L.map("bm-map", {minZoom: 3, maxZoom: 20});
  map.attributionControl.setPrefix(false);
  map.setView([29.37, 113.1], 12);
  fetch("/tiles/streets.json", {credentials: "same-origin"}).then(function (r) { return r.ok ? r.json() : null; })
    .then(function (tj) {
      if (!tj || !tj.bounds) { return; }
      var b = tj.bounds, box = L.latLngBounds([b[1], b[0]], [b[3], b[2]]);
      map.fitBounds(box);
      L.rectangle(box, {color: "#0d47a1", weight: 1.5, fill: false, dashArray: "6 4", interactive: false}).addTo(map);
    }).catch(function () { /* no district yet: the default view */ });

  function status(text, cls) { var s = $("bm-status"); s.textContent = text; s.className = cls || ""; }
  function blank() {
    return {name: "底图", kind: "base", url: "", subdomains: "", coordsys: "wgs84", max_native_zoom: 18, attribution: ""};
  }
  function select(options, value) {
    var s = document.createElement("select");
    options.forEach(function (o) {
      var opt = document.createElement("option"); opt.value = o[0]; opt.textContent = o[1]; s.appendChild(opt);
    });
    s.value = value;
    return s;
  }
  function input(value, cls, type) {
    var i = document.createElement("input"); i.type = type || "text"; i.value = value === null ? "" : value;
    if (cls) { i.className = cls; }
    return i;
  }
  function button(text, title, fn) {
    var b = document.createElement("button"); b.type = "button"; b.textContent = text; b.title = title;
    b.addEventListener("click", fn);
    return b;
  }
  function render() {
    var body = $("bm-table").tBodies[0];
    body.textContent = "";
    page.layers.forEach(function (l, i) {
      var tr = body.insertRow();
      tr.dataset.index = String(i);
      tr.insertCell().textContent = String(i + 1);
      var controls = {name: input(l.name), kind: select(KINDS, l.kind), url: input(l.url, "url"),
                      subdomains: input(l.subdomains, "sub"), coordsys: select(SYSTEMS, l.coordsys),
                      max_native_zoom: input(l.max_native_zoom, "num", "number"), attribution: input(l.attribution)};
      controls.url.placeholder = "http://t{s}.tiles.intra/vec/{z}/{x}/{y}";
      controls.max_native_zoom.min = "0"; controls.max_native_zoom.max = "22";
      FIELDS.forEach(function (f) {
        var c = controls[f];
        c.name = f; c.setAttribute("aria-label", f + " " + (i + 1));
        c.addEventListener(c.tagName === "SELECT" ? "change" : "input", function () {
          l[f] = f === "max_native_zoom" ? parseInt(c.value, 10) : c.value;
          preview();
        });
        tr.insertCell().appendChild(c);
      });
      var ops = tr.insertCell(); ops.className = "ops";
      ops.appendChild(button("↑", "上移（更靠下绘制）", function () { move(i, -1); }));
      ops.appendChild(button("↓", "下移（更靠上绘制）", function () { move(i, 1); }));
      ops.appendChild(button("删除", "删除此图层", function () { page.layers.splice(i, 1); render(); }));
    });
    if (!page.layers.length) {
      var tr = body.insertRow(), td = tr.insertCell();
      td.colSpan = 9; td.className = "muted"; td.textContent = "没有底图：页面将以街道、社区轮廓和名称定位。";
    }
    preview();
  }
  function move(i, d) {
    var j = i + d;
    if (j < 0 || j >= page.layers.length) { return; }
    var t = page.layers[i]; page.layers[i] = page.layers[j]; page.layers[j] = t;
    render();
  }
  var previewTimer = null;
  function preview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(function () {
      page.previewLayers.forEach(function (l) { map.removeLayer(l); });
      page.previewLayers = [];
      page.layers.forEach(function (l) {
        if (!/^https?:\/\/.+\{z\}.*\{x\}.*\{-?y\}/.test(l.url)) { return; }
        var opts = {maxNativeZoom: l.max_native_zoom, maxZoom: 20, attribution: l.attribution || ""};
        if (l.subdomains) { opts.subdomains = l.subdomains; }
        page.previewLayers.push(L.tileLayer(l.url, opts).addTo(map));
      });
    }, 250);
  }
  function show(d) {
    page.saved = d; page.revision = d.revision;
    page.layers = d.layers.map(function (l) { var o = {}; FIELDS.forEach(function (f) { o[f] = l[f]; }); return o; });
    $("bm-source").textContent = d.source === "database"
      ? "当前使用已保存的设置（第 " + d.revision + " 版，" + (d.updated_by || "—") + " 于 " +
        new Date(d.updated_at).toLocaleString("zh-CN") + " 保存）。"
      : "当前使用部署设置（GRIDATLAS_BASEMAPS）中的默认底图，尚未在此保存。";
    render();
  }
  function problem(r) {
    return r.json().then(function (p) { throw new Error(p.detail || p.title || String(r.status)); },
                         function () { throw new Error(String(r.status)); });
  }
  function load() {
    return fetch("/v1/basemaps", {credentials: "same-origin"}).then(function (r) {
      return r.ok ? r.json() : problem(r);
    }).then(show).catch(function (e) { status("读取失败：" + e.message, "bad"); });
  }
  $("bm-add").addEventListener("click", function () { page.layers.push(blank()); render(); });
  $("bm-save").addEventListener("click", function () {
    status("正在保存…");
    fetch("/v1/basemaps", {method: "PUT", credentials: "same-origin", headers: {"Content-Type": "application/json"},
                           body: JSON.stringify({layers: page.layers, revision: page.revision})})
      .then(function (r) { return r.ok ? r.json() : problem(r); })
      .then(function (d) { show(d); status("已保存，各地图页面下次打开即使用新底图。", "ok"); })
      .catch(function (e) { status("未保存：" + e.message, "bad"); });
  });
  $("bm-reset").addEventListener("click", function () {
    if (!window.confirm("删除已保存的底图设置，恢复为部署设置中的默认底图？")) { return; }
    fetch("/v1/basemaps", {method: "DELETE", credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : problem(r); })
      .then(function (d) { show(d); status("已恢复默认底图。", "ok"); })
      .catch(function (e) { status("未恢复：" + e.message, "bad"); });
  });
  page.ready = load();
})();
