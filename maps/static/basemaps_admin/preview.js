/* The basemap preview's outlines (/admin/basemaps): the district's streets, communities and grids drawn over the
 * layers being edited, placed for the coordinate system of the bottom base layer (as every leader's page places its
 * overlays), so an admin sees at once whether a basemap lines up. Loaded before basemaps_admin.js: a Leaflet init
 * hook keeps the preview map; outlines come from /v1/basemaps/outlines?coordsys= (shifted by the server with the
 * same formulas as the pages) and are fetched again when the base layer's coordinate system changes.
 */
(function () {
  "use strict";
  var STYLE = {street: {color: "#0d47a1", weight: 3, opacity: 0.95},
               community: {color: "#6a1b9a", weight: 2, opacity: 0.9, dashArray: "6 4"},
               grid: {color: "#e65100", weight: 1, opacity: 0.85}};
  var state = window.gaBasemapOutlines = {map: null, coordsys: null, layer: null, features: 0, loads: 0, cache: {}};
  L.Map.addInitHook(function () {
    if (this.getContainer().id === "bm-map") { state.map = this; }
  });

  /** The coordinate system of the layers as edited now: the first base layer's (else the first layer's), as the pages. */
  function coordsys() {
    var layers = (window.gaBasemaps && window.gaBasemaps.layers) || [];
    var base = layers.filter(function (l) { return l.kind === "base"; })[0] || layers[0];
    var sys = base ? base.coordsys : "wgs84";
    return sys === "cgcs2000" ? "wgs84" : sys;  // the two agree to centimetres: one drawing serves both
  }
  function draw(sys, collection) {
    var map = state.map;
    if (!map.getPane("gaOutlines")) { map.createPane("gaOutlines").style.zIndex = 450; }
    if (state.layer) { map.removeLayer(state.layer); }
    var order = {grid: 0, community: 1, street: 2};  // streets on top
    var features = collection.features.slice().sort(function (a, b) {
      return order[a.properties.level] - order[b.properties.level];
    });
    state.layer = L.geoJSON({type: "FeatureCollection", features: features}, {
      pane: "gaOutlines", interactive: false,
      style: function (f) { return Object.assign({fill: false}, STYLE[f.properties.level]); }
    }).addTo(map);
    state.coordsys = sys; state.features = features.length; state.loads += 1;
    var legend = document.getElementById("bm-outline-note");
    if (legend) {
      legend.textContent = features.length ? "叠加本区街道（蓝）、社区（紫虚线）、网格（橙）边界，按" +
        ({wgs84: "WGS-84/CGCS2000", gcj02: "GCJ-02", bd09: "BD-09"})[sys] + "坐标放置：边界应与底图道路、河流吻合。"
        : "尚无边界数据。";
    }
  }
  function refresh() {
    if (!state.map) { return; }
    var sys = coordsys();
    if (sys === state.coordsys) { return; }
    state.coordsys = sys;
    var cached = state.cache[sys];
    var got = cached ? Promise.resolve(cached)
      : fetch("/v1/basemaps/outlines?coordsys=" + sys, {credentials: "same-origin"})
        .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); });
    state.pending = got.then(function (fc) {
      state.cache[sys] = fc;
      if (state.coordsys === sys) { draw(sys, fc); }
    }).catch(function (e) {
      state.coordsys = null;
      var legend = document.getElementById("bm-outline-note");
      if (legend) { legend.textContent = "边界读取失败：" + e.message; }
    });
  }
  state.refresh = refresh;
  // the table is redrawn on every edit (basemaps_admin.js); its inputs and buttons bubble up to the document
  ["input", "change", "click"].forEach(function (type) {
    document.addEventListener(type, function () { setTimeout(refresh, 0); });
  });
  window.addEventListener("load", function () {
    var ready = window.gaBasemaps && window.gaBasemaps.ready;
    (ready || Promise.resolve()).then(refresh);
  });
})();
