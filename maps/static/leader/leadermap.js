/* Leaders' maps (coverage /maps/coverage, classification /maps/classification, heatmap /maps/heatmap) drawn from
 * vector tiles; the heatmap's own part (its data cube, hexagons, hot spots, click-through) is heatlayer.js, whose
 * hooks (HEAT) this file calls where the pages differ.
 *
 * Shapes come from /tiles/{layer}/{z}/{x}/{y}.mvt (decoded by the vendored Leaflet.VectorGrid's pbf reader) and
 * are painted on one canvas per tile; what colours them comes from the page's small JSON (cfg.data). A filter
 * (role, status/class toggles, search) repaints the canvases from the decoded features already held: no request,
 * no reload, the view stays. Exports: the current view as PNG (tiles, labels, title, legend drawn on a canvas) and
 * the visible list as CSV. With a GCJ-02 or BD-09 basemap every tile is placed where the basemap draws its centre
 * (the offset is constant within a tile to far below a pixel), labels likewise, clicks are mapped back.
 * Names are inserted with textContent only.
 */
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("ga-config").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var TILE = 256;

  // ---------------------------------------------------------------- WGS-84 -> GCJ-02 / BD-09 (geo/spatial/coords.py)
  var KA = 6378245.0, KEE = 0.00669342162296594323, XPI = Math.PI * 3000.0 / 180.0;
  function outOfChina(lon, lat) { return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271; }
  function tLat(x, y) {
    var r = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
    r += (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
    r += (20 * Math.sin(y * Math.PI) + 40 * Math.sin(y / 3 * Math.PI)) * 2 / 3;
    r += (160 * Math.sin(y / 12 * Math.PI) + 320 * Math.sin(y * Math.PI / 30)) * 2 / 3;
    return r;
  }
  function tLon(x, y) {
    var r = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
    r += (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
    r += (20 * Math.sin(x * Math.PI) + 40 * Math.sin(x / 3 * Math.PI)) * 2 / 3;
    r += (150 * Math.sin(x / 12 * Math.PI) + 300 * Math.sin(x / 30 * Math.PI)) * 2 / 3;
    return r;
  }
  function wgsToGcj(lon, lat) {
    if (outOfChina(lon, lat)) { return [lon, lat]; }
    var dLat = tLat(lon - 105, lat - 35), dLon = tLon(lon - 105, lat - 35);
    var rad = lat / 180 * Math.PI, magic = 1 - KEE * Math.sin(rad) * Math.sin(rad), sq = Math.sqrt(magic);
    dLat = (dLat * 180) / ((KA * (1 - KEE)) / (magic * sq) * Math.PI);
    dLon = (dLon * 180) / (KA / sq * Math.cos(rad) * Math.PI);
    return [lon + dLon, lat + dLat];
  }
  function gcjToBd(lon, lat) {
    var z = Math.sqrt(lon * lon + lat * lat) + 0.00002 * Math.sin(lat * XPI);
    var th = Math.atan2(lat, lon) + 0.000003 * Math.cos(lon * XPI);
    return [z * Math.cos(th) + 0.0065, z * Math.sin(th) + 0.006];
  }
  var base = (cfg.basemaps || []).filter(function (b) { return b.kind === "base"; })[0] || (cfg.basemaps || [])[0];
  var SYS = base ? base.coordsys : "wgs84";
  /** Where the basemap draws the WGS-84 point (lon, lat). */
  function toMap(lon, lat) {
    if (SYS === "gcj02") { return wgsToGcj(lon, lat); }
    if (SYS === "bd09") { var g = wgsToGcj(lon, lat); return gcjToBd(g[0], g[1]); }
    return [lon, lat];
  }
  function ll(lon, lat) { var p = toMap(lon, lat); return L.latLng(p[1], p[0]); }
  /** The WGS-84 point the basemap shows at `latlng` (two fixed-point steps: the shift varies slowly). */
  function fromMap(latlng) {
    var lon = latlng.lng, lat = latlng.lat;
    for (var i = 0; i < 3; i++) {
      var p = toMap(lon, lat);
      lon += latlng.lng - p[0]; lat += latlng.lat - p[1];
    }
    return L.latLng(lat, lon);
  }

  // ---------------------------------------------------------------- map
  var map = L.map("ga-map", {zoomSnap: 1, minZoom: 3, maxZoom: 20, preferCanvas: true, attributionControl: true});
  map.attributionControl.setPrefix(false);
  map.createPane("gaOverlay").style.zIndex = 350;
  map.createPane("gaBaseLabels").style.zIndex = 380;
  (cfg.basemaps || []).forEach(function (b) {
    var opts = {maxNativeZoom: b.max_native_zoom, maxZoom: 20, attribution: b.attribution || ""};
    if (b.subdomains) { opts.subdomains = b.subdomains; }
    if (b.kind === "labels") { opts.pane = "gaBaseLabels"; }
    L.tileLayer(b.url, opts).addTo(map);
  });
  var ga = window.gaMap = {map: map, cfg: cfg, data: null, paints: 0, ready: false, tilesLoaded: 0,
                           lastFilterMs: null, coordsys: SYS, toMap: toMap};

  // what each page draws, bottom first; minzoom as the tiles' own (TileJSON)
  var LAYERS = cfg.kind === "heatmap" ? [{id: "streets", min: 0}, {id: "communities", min: 8}, {id: "grids", min: 10}]
    : cfg.kind === "coverage"
    ? [{id: "streets", min: 0}, {id: "communities", min: 8}, {id: "grids", min: 10}, {id: "buildings", min: 14}]
    : [{id: "streets", min: 0}, {id: "communities", min: 8}, {id: "grids", min: 10},
       {id: "micro_grids", min: 13, only: "micro_grid"}, {id: "compounds", min: 12}];

  var state = {role: new URLSearchParams(location.search).get("role") || "", hidden: {}, search: "", level: "grid", selected: null};
  ga.state = state;
  var lookup = {grid: {}, building: {}, compound: {}, unit: {}};

  function tileUrl(layer, c) {
    return cfg.tiles.replace("{layer}", layer).replace("{z}", c.z).replace("{x}", c.x).replace("{y}", c.y);
  }
  var fetcher = {options: {subdomains: "abc", fetchOptions: {credentials: "same-origin"}},
                 _getSubdomain: L.TileLayer.prototype._getSubdomain, _map: null};
  function loadLayer(layer, c) {
    var ctx = L.extend({}, fetcher, {_url: tileUrl(layer, c)});
    return L.VectorGrid.Protobuf.prototype._getVectorTilePromise.call(ctx, c).then(function (vt) {
      var l = vt.layers && vt.layers[layer];
      return l ? {extent: l.extent, features: l.features} : {extent: 4096, features: []};
    }, function () { return {extent: 4096, features: []}; });
  }

  // ---------------------------------------------------------------- styles
  function colourOf(key) {
    var item = (ga.data.legend || []).filter(function (l) { return l.key === key; })[0];
    return item ? item.colour : "#9e9e9e";
  }
  var PROBLEM = {m: true, o: true, u: true, straddling: true, outside: true};
  function statusOf(layer, props) {
    var d = ga.data;
    if (!d) { return null; }
    if (cfg.kind === "coverage") {
      if (layer === "grids") { var g = lookup.grid[props.code]; return g ? g.status[state.role] : null; }
      if (layer === "buildings") {
        var i = lookup.building[props.id];
        return i === undefined ? null : d.buildings.status[state.role].charAt(i);
      }
      return null;
    }
    if (layer === "compounds") { var k = lookup.compound[props.id]; return k ? k["class"] : null; }
    return null;
  }
  /** {fill, alpha, stroke, width, dash, problem} or null (not drawn). */
  function styleOf(layer, props, z) {
    if (HEAT) { return HEAT.style(layer, props, z); }
    if (layer === "streets") { return {stroke: "#37474f", width: 2.5, dash: [8, 4]}; }
    if (layer === "communities") { return {stroke: "#0d47a1", width: z >= 14 ? 2.5 : 1.8}; }
    if (cfg.kind === "classification" && (layer === "grids" || layer === "micro_grids")) {
      var mine = (state.level === "grid") === (layer === "grids");
      return {stroke: mine ? "#333" : "#111", width: mine ? 1.2 : 2.2, dash: mine ? [4, 3] : null};
    }
    var s = statusOf(layer, props);
    if (s === null || s === undefined) { return layer === "grids" ? {stroke: "#777", width: 0.6} : null; }
    var hidden = state.hidden[s];
    var colour = colourOf(s);
    if (layer === "grids") {
      return {fill: hidden ? null : colour, alpha: z >= 14 ? 0.28 : 0.62, stroke: "#ffffff", width: 0.8,
              problem: !hidden && PROBLEM[s] ? colour : null};
    }
    if (hidden) { return null; }
    return {fill: colour, alpha: 0.85, stroke: layer === "compounds" ? colour : "#ffffff",
            width: layer === "compounds" ? 1.2 : 0.5, problem: PROBLEM[s] ? (layer === "buildings" ? "#7f0000" : colour) : null};
  }

  // ---------------------------------------------------------------- the tile layer
  function path(ctx, feat, k) {
    ctx.beginPath();
    var rings = feat.geometry;
    for (var r = 0; r < rings.length; r++) {
      var ring = rings[r];
      for (var i = 0; i < ring.length; i++) {
        if (i === 0) { ctx.moveTo(ring[i].x * k, ring[i].y * k); } else { ctx.lineTo(ring[i].x * k, ring[i].y * k); }
      }
      ctx.closePath();
    }
  }
  function keyOf(layer, props) { return layer + ":" + (props.code || props.id); }
  function paint(rec) {
    var canvas = rec.canvas, dpr = rec.dpr, ctx = canvas.getContext("2d"), z = rec.coords.z;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.lineJoin = "round";
    var passes = [[], [], []];  // fills, outlines, problems and the selection (always on top)
    var selected = HEAT ? HEAT.selectedKey() : state.selected;
    LAYERS.forEach(function (spec) {
      var data = rec.layers[spec.id];
      if (!data) { return; }
      var k = TILE * dpr / data.extent;
      for (var i = 0; i < data.features.length; i++) {
        var f = data.features[i];
        if (f.type !== 3) { continue; }
        var st = styleOf(spec.id, f.properties, z);
        if (!st) { continue; }
        var item = {f: f, k: k, st: st, layer: spec.id};
        if (st.fill) { passes[0].push(item); }
        if (spec.id === "streets" || spec.id === "communities") { passes[2].unshift(item); } else { passes[1].push(item); }
        if (st.problem) { passes[2].push({f: f, k: k, st: {stroke: st.problem, width: spec.id === "grids" ? 2.6 : 1.6}}); }
        if (selected && selected === keyOf(spec.id, f.properties)) {
          passes[2].push({f: f, k: k, st: {stroke: "#00e5ff", width: 4}});
        }
      }
    });
    passes[0].forEach(function (it) {
      path(ctx, it.f, it.k); ctx.globalAlpha = it.st.alpha; ctx.fillStyle = it.st.fill; ctx.fill("evenodd");
    });
    ctx.globalAlpha = 1;
    if (HEAT) { HEAT.paintUnder(ctx, rec); }
    [passes[1], passes[2]].forEach(function (items) {
      items.forEach(function (it) {
        if (!it.st.stroke) { return; }
        path(ctx, it.f, it.k); ctx.strokeStyle = it.st.stroke; ctx.lineWidth = it.st.width * dpr;
        ctx.setLineDash(it.st.dash ? it.st.dash.map(function (v) { return v * dpr; }) : []);
        ctx.stroke();
      });
    });
    if (HEAT) { HEAT.paintOver(ctx, rec); }
    if (cfg.kind === "classification" && z < COMPOUNDS_FROM) { paintCompoundDots(ctx, rec); }
    ga.paints += 1;
  }

  // Below the compounds' tiles (zoom 12) each compound is a dot at its label point, in its class colour, the
  // problem classes on top: the whole district's classes at a glance from the page's data, no tile needed.
  var dots = null, COMPOUNDS_FROM = 12, DOT_ORDER = {same: 0, smaller: 1, larger: 2, outside: 3, straddling: 4};
  function paintCompoundDots(ctx, rec) {
    var d = ga.data, z = rec.coords.z, dpr = rec.dpr;
    if (!d || !d.compounds) { return; }
    var x0 = rec.coords.x * TILE, y0 = rec.coords.y * TILE, r = z >= 11 ? 2.2 : 1.6, pad = 4;
    if (!dots || dots.data !== d || dots.z !== z) {  // projected once per zoom (tile space is WGS-84)
      dots = {data: d, z: z, x: new Float64Array(d.compounds.length), y: new Float64Array(d.compounds.length)};
      d.compounds.forEach(function (k, i) {
        var p = k.lon === null || k.lon === undefined ? {x: NaN, y: NaN} : map.project(L.latLng(k.lat, k.lon), z);
        dots.x[i] = p.x; dots.y[i] = p.y;
      });
    }
    var items = [];
    d.compounds.forEach(function (k, i) {
      var x = dots.x[i] - x0, y = dots.y[i] - y0;
      if (x > -pad && y > -pad && x < TILE + pad && y < TILE + pad && !state.hidden[k["class"]]) {
        items.push([DOT_ORDER[k["class"]] || 0, x, y, k]);
      }
    });
    items.sort(function (a, b) { return a[0] - b[0]; });
    items.forEach(function (it) {
      ctx.beginPath();
      ctx.arc(it[1] * dpr, it[2] * dpr, (it[0] >= 3 ? r + 0.8 : r) * dpr, 0, 2 * Math.PI);
      ctx.fillStyle = colourOf(it[3]["class"]); ctx.fill();
      if (it[0] >= 3) { ctx.lineWidth = dpr; ctx.strokeStyle = "#ffffff"; ctx.stroke(); }
    });
  }

  var tileOffsets = {};
  var Overlay = L.GridLayer.extend({
    initialize: function (options) { L.GridLayer.prototype.initialize.call(this, options); this._recs = {}; },
    createTile: function (coords, done) {
      var dpr = Math.min(window.devicePixelRatio || 1, 2);
      var canvas = L.DomUtil.create("canvas", "ga-tile");
      canvas.width = TILE * dpr; canvas.height = TILE * dpr;
      var rec = {canvas: canvas, coords: {x: coords.x, y: coords.y, z: coords.z}, dpr: dpr, layers: {}};
      var key = this._tileCoordsToKey(coords), self = this;
      var wanted = LAYERS.filter(function (s) { return coords.z >= s.min && (!s.only || s.only === state.level); });
      Promise.all(wanted.map(function (s) { return loadLayer(s.id, coords); })).then(function (res) {
        res.forEach(function (r, i) { rec.layers[wanted[i].id] = r; });
        self._recs[key] = rec;
        paint(rec);
        ga.tilesLoaded += 1;
        done(null, canvas);
      });
      return canvas;
    },
    // Placed where the basemap draws the tile's centre (GCJ-02 / BD-09 basemaps): one offset per tile.
    _getTilePos: function (coords) {
      var pos = L.GridLayer.prototype._getTilePos.call(this, coords);
      if (SYS === "wgs84" || SYS === "cgcs2000") { return pos; }
      var key = coords.z + "/" + coords.x + "/" + coords.y, d = tileOffsets[key];
      if (!d) {
        var centre = map.unproject(coords.scaleBy(L.point(TILE, TILE)).add([TILE / 2, TILE / 2]), coords.z);
        var shifted = ll(centre.lng, centre.lat);
        // whole pixels: fractional tile positions leave hairline seams between neighbours (error <= 0.5 px)
        d = tileOffsets[key] = map.project(shifted, coords.z).subtract(map.project(centre, coords.z)).round();
      }
      return pos.add(d);
    },
    // ... and so the tiles to load are those around the WGS-84 point the basemap shows at the centre.
    _getTiledPixelBounds: function (center) {
      var c = SYS === "wgs84" || SYS === "cgcs2000" ? center : fromMap(L.latLng(center));
      return L.GridLayer.prototype._getTiledPixelBounds.call(this, c);
    },
    repaint: function () {
      for (var key in this._recs) {
        if (this._tiles[key]) { paint(this._recs[key]); } else { delete this._recs[key]; }
      }
    },
    recordAt: function (latlng) {
      var z = this._tileZoom, p = map.project(fromMap(latlng), z);
      var c = {x: Math.floor(p.x / TILE), y: Math.floor(p.y / TILE), z: z};
      var rec = this._recs[c.x + ":" + c.y + ":" + c.z];
      return rec ? {rec: rec, x: p.x - c.x * TILE, y: p.y - c.y * TILE} : null;
    }
  });
  var overlay = new Overlay({pane: "gaOverlay", tileSize: TILE, maxNativeZoom: 18, maxZoom: 20,
                             updateWhenZooming: false, keepBuffer: 1});
  ga.overlay = overlay;
  var HEAT = cfg.kind === "heatmap" ? window.GaHeat({map: map, cfg: cfg, state: state, TILE: TILE, $: $, ll: ll,
                                                     fromMap: fromMap, overlay: overlay, refresh: applyFilters}) : null;
  ga.heat = HEAT;

  function inside(feat, x, y) {
    var hit = false, rings = feat.geometry;
    for (var r = 0; r < rings.length; r++) {
      var ring = rings[r];
      for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
        var a = ring[i], b = ring[j];
        if ((a.y > y) !== (b.y > y) && x < (b.x - a.x) * (y - a.y) / (b.y - a.y) + a.x) { hit = !hit; }
      }
    }
    return hit;
  }
  function featureAt(latlng) {
    var at = overlay.recordAt(latlng);
    if (!at) { return null; }
    var order = cfg.kind === "heatmap" ? ["grids"] : cfg.kind === "coverage" ? ["buildings", "grids"] : ["compounds", state.level === "grid" ? "grids" : "micro_grids"];
    for (var o = 0; o < order.length; o++) {
      var data = at.rec.layers[order[o]];
      if (!data) { continue; }
      var s = data.extent / TILE, x = at.x * s, y = at.y * s;
      for (var i = data.features.length - 1; i >= 0; i--) {
        var f = data.features[i];
        if (f.type === 3 && inside(f, x, y) && styleOf(order[o], f.properties, at.rec.coords.z)) {
          return {layer: order[o], props: f.properties};
        }
      }
    }
    return null;
  }

  // ---------------------------------------------------------------- labels by zoom
  var labels = L.layerGroup().addTo(map);
  function label(lon, lat, text, sub, cls) {
    var span = document.createElement("span");
    span.textContent = text;
    if (sub) { var s = document.createElement("small"); s.textContent = sub; span.appendChild(s); }
    return L.marker(ll(lon, lat), {icon: L.divIcon({className: "ga-label " + cls, html: span, iconSize: null}),
                                   interactive: false, keyboard: false});
  }
  function refreshLabels() {
    labels.clearLayers();
    var d = ga.data;
    if (!d) { return; }
    var z = map.getZoom(), b = map.getBounds().pad(0.1), items = [];
    if (z <= 12) {
      (d.streets || []).forEach(function (s) { items.push([s, s.name, null, "street"]); });
    }
    if (z >= 12 && z <= 14) {
      d.communities.forEach(function (c) { items.push([c, c.name, null, "community"]); });
    }
    if (z >= 15) {
      if (HEAT) {
        d.grids.forEach(function (g) { items.push([g, g.name, HEAT.gridLabel(g, z), "grid"]); });
      } else if (cfg.kind === "coverage") {
        d.grids.forEach(function (g) { items.push([g, g.name, z >= 16 ? g.households + "户" : null, "grid"]); });
      } else {
        d.units.forEach(function (u) { items.push([u, u.name || u.code, null, "grid"]); });
        if (z >= 17) { d.compounds.forEach(function (c) { items.push([c, c.name, null, "compound"]); }); }
      }
    }
    var n = 0, taken = [];
    items.forEach(function (it) {
      var p = it[0];
      if (p.lon === null || p.lon === undefined || n > 400 || !it[1]) { return; }
      var at = ll(p.lon, p.lat);
      if (!b.contains(at)) { return; }
      // greedy: a label that would overlap one already placed is left out (zoom in to see it)
      var c = map.latLngToContainerPoint(at), w = it[1].length * 7 + 6, h = it[2] ? 17 : 9;
      for (var i = 0; i < taken.length; i++) {
        var o = taken[i];
        if (Math.abs(o[0] - c.x) < o[2] + w && Math.abs(o[1] - c.y) < o[3] + h) { return; }
      }
      taken.push([c.x, c.y, w, h]);
      labels.addLayer(label(p.lon, p.lat, it[1], it[2], it[3]));
      n += 1;
    });
  }
  map.on("moveend zoomend", refreshLabels);

  // ---------------------------------------------------------------- legend, list, info
  function counts() {
    var out = {}, d = ga.data;
    if (cfg.kind === "coverage") {
      d.grids.forEach(function (g) { var s = g.status[state.role]; out[s] = out[s] || {g: 0, b: 0}; out[s].g += 1; });
      var str = d.buildings.status[state.role];
      for (var i = 0; i < str.length; i++) { var c = str.charAt(i); out[c] = out[c] || {g: 0, b: 0}; out[c].b += 1; }
    } else {
      d.compounds.forEach(function (k) { out[k["class"]] = out[k["class"]] || {n: 0}; out[k["class"]].n += 1; });
    }
    return out;
  }
  function legendText(l, n) {
    if (cfg.kind === "coverage") { return l.label + "：网格 " + (n ? n.g : 0) + "，楼栋 " + (n ? n.b : 0); }
    return l.label + "：" + (n ? n.n : 0);
  }
  function renderHeatLegend() {
    var ul = $("ga-legend");
    ul.textContent = "";
    HEAT.legend().forEach(function (l) {
      var li = document.createElement("li");
      if (l.note) { li.title = l.note; }
      if (l.head) {
        li.className = "ga-legend-sub"; li.textContent = l.head;
        if (l.note) { var help = document.createElement("span"); help.className = "ga-help"; help.textContent = "？"; li.appendChild(help); }
        ul.appendChild(li);
        return;
      }
      li.dataset.key = l.key;
      if (state.hidden[l.key]) { li.className = "off"; }
      var sw = document.createElement("span"); sw.className = "sw"; sw.style.background = l.colour;
      var t = document.createElement("span"); t.textContent = l.label;
      li.appendChild(sw); li.appendChild(t);
      li.addEventListener("click", function () { state.hidden[l.key] = !state.hidden[l.key]; applyFilters(); });
      ul.appendChild(li);
    });
    $("ga-legend-title").textContent = HEAT.legendTitle();
  }
  function renderLegend() {
    if (HEAT) { renderHeatLegend(); return; }
    var ul = $("ga-legend"), n = counts();
    ul.textContent = "";
    ga.data.legend.forEach(function (l) {
      var li = document.createElement("li");
      li.dataset.key = l.key;
      li.title = l.note;
      if (state.hidden[l.key]) { li.className = "off"; }
      var sw = document.createElement("span"); sw.className = "sw"; sw.style.background = l.colour;
      var t = document.createElement("span"); t.textContent = legendText(l, n[l.key]);
      li.appendChild(sw); li.appendChild(t);
      li.addEventListener("click", function () {
        state.hidden[l.key] = !state.hidden[l.key];
        applyFilters();
      });
      ul.appendChild(li);
    });
    var filterLabel = cfg.kind === "coverage" ? (ga.data.filters.filter(function (f) { return f.key === state.role; })[0] || {}).label : ga.data.unit;
    $("ga-legend-title").textContent = (cfg.kind === "coverage" ? "覆盖状态 · " + filterLabel : "小区对比" + filterLabel) +
      "（" + ga.data.at + "）";
  }

  var BUILDING_GAP = {building_head: "栋楼缺楼栋长", unit_head: "栋楼有单元缺单元长", steward: "栋楼有住户无管家或管家超/不足额"};
  function coverageRows() {
    var d = ga.data, role = state.role, perGrid = {};
    if (BUILDING_GAP[role]) {
      var str = d.buildings.status[role];
      for (var i = 0; i < str.length; i++) {
        var c = str.charAt(i);
        if (PROBLEM[c] && !state.hidden[c]) { var g = d.buildings.grid[i]; perGrid[g] = (perGrid[g] || 0) + 1; }
      }
    }
    var rows = [];
    d.grids.forEach(function (g) {
      var s = g.status[role], what;
      if (BUILDING_GAP[role]) {
        if (!perGrid[g.code]) { return; }
        what = perGrid[g.code] + BUILDING_GAP[role];
      } else {
        if (!PROBLEM[s] || state.hidden[s]) { return; }
        what = g.issues.join("；") || colourLabel(s);
      }
      rows.push({item: g, key: "grids:" + g.code, cells: [g.name, g.code, g.community, what,
        g.contacts.map(function (p) { return p.name + "（" + p.role + (p.phone ? " " + p.phone : "") + "）"; }).join("、")]});
    });
    return rows;
  }
  function colourLabel(key) { var l = ga.data.legend.filter(function (x) { return x.key === key; })[0]; return l ? l.label : key; }
  var ORDER = {straddling: 0, outside: 1, larger: 2, smaller: 3, same: 4};
  function classificationRows() {
    var rows = [];
    ga.data.compounds.forEach(function (k) {
      if (state.hidden[k["class"]]) { return; }
      var units = k.units.map(function (u) { return (u[1] || u[0]) + " " + u[0] + " " + Math.round(u[2] * 100) + "%"; }).join("；");
      rows.push({item: k, key: "compounds:" + k.id, cells: [k.name, String(k.id), k.community || "", colourLabel(k["class"]), units]});
    });
    rows.sort(function (a, b) { return ORDER[a.item["class"]] - ORDER[b.item["class"]]; });
    return rows;
  }
  var HEAD = HEAT ? HEAT.head : cfg.kind === "coverage" ? ["网格", "编码", "社区", "缺什么", "联系谁"] : ["小区", "编号", "社区", "类型", "所在网格（面积占比）"];
  var visibleRows = [];
  var MAX_ROWS = 300;
  function renderList() {
    var q = state.search.trim().toLowerCase();
    var rows = HEAT ? HEAT.rows() : cfg.kind === "coverage" ? coverageRows() : classificationRows();
    if (q) { rows = rows.filter(function (r) { return (r.cells[0] + " " + r.cells[1]).toLowerCase().indexOf(q) >= 0; }); }
    visibleRows = rows;
    $("ga-list-title").textContent = HEAT ? HEAT.listTitle : cfg.kind === "coverage" ? "缺口清单" : "小区清单";
    $("ga-list-count").textContent = rows.length + " 条" + (rows.length > MAX_ROWS ? "（显示前 " + MAX_ROWS + " 条，导出含全部）" : "");
    var table = $("ga-table"), thead = table.tHead, tbody = table.tBodies[0];
    thead.textContent = ""; tbody.textContent = "";
    var hr = thead.insertRow();
    [HEAD[0], HEAD[3], HEAD[4], ""].forEach(function (h) { var th = document.createElement("th"); th.textContent = h; hr.appendChild(th); });
    var frag = document.createDocumentFragment();
    rows.slice(0, MAX_ROWS).forEach(function (r) {
      var tr = document.createElement("tr");
      var c0 = document.createElement("td"); c0.textContent = r.cells[0];
      var small = document.createElement("div"); small.className = "muted"; small.textContent = r.cells[1] + (r.cells[2] ? " · " + r.cells[2] : "");
      c0.appendChild(small);
      var c1 = document.createElement("td"); c1.textContent = r.cells[3]; c1.className = HEAT ? "" : "bad";
      var c2 = document.createElement("td"); c2.textContent = r.cells[4];
      var c3 = document.createElement("td");
      var btn = document.createElement("button"); btn.type = "button"; btn.textContent = "定位"; btn.className = "ga-zoom";
      btn.addEventListener("click", function () { zoomTo(r); });
      c3.appendChild(btn);
      tr.appendChild(c0); tr.appendChild(c1); tr.appendChild(c2); tr.appendChild(c3);
      frag.appendChild(tr);
    });
    tbody.appendChild(frag);
  }
  function zoomTo(r) {
    if (HEAT) { HEAT.zoomTo(r); return; }
    var bb = r.item.bbox;
    if (!bb) { return; }
    state.selected = r.key;
    map.fitBounds(L.latLngBounds(ll(bb[0], bb[1]), ll(bb[2], bb[3])), {maxZoom: 18, padding: [30, 30]});
    overlay.repaint();
    showInfo(r.key.split(":")[0], r.key.slice(r.key.indexOf(":") + 1));
  }
  function infoRows(title, rows) {
    var box = $("ga-info");
    box.hidden = false; box.textContent = "";
    var h = document.createElement("h3"); h.textContent = title; box.appendChild(h);
    var t = document.createElement("table");
    rows.forEach(function (r) {
      var tr = t.insertRow(), th = document.createElement("th"), td = tr.insertCell();
      th.textContent = r[0]; tr.insertBefore(th, td); td.textContent = r[1];
    });
    box.appendChild(t);
  }
  function showInfo(layer, id, props) {
    var d = ga.data;
    if (layer === "grids" && cfg.kind === "coverage") {
      var g = lookup.grid[id];
      if (!g) { return; }
      if (g.more && !g.detailed) { fetchStaff(g); }
      infoRows(g.name, [["编码", g.code], ["社区", g.community], ["状态", colourLabel(g.status[state.role])],
        ["户数", String(g.households)], ["网格长", g.staff.grid_chief.join("、") || (g.more ? "…" : "—")],
        ["专职网格员", g.staff.grid_worker_fulltime.join("、") || (g.more ? "…" : "—")],
        ["兼职网格员", g.staff.grid_worker_parttime.join("、") || (g.more ? "…" : "—")],
        ["缺什么", g.issues.join("；") || "无"],
        ["联系谁", g.contacts.map(function (p) { return p.name + "（" + p.role + (p.phone ? " " + p.phone : "") + "）"; }).join("、")]]);
    } else if (layer === "buildings") {
      var i = lookup.building[id], st = i === undefined ? "e" : d.buildings.status[state.role].charAt(i);
      var lacks = [];
      ["building_head", "unit_head", "steward"].forEach(function (role) {
        if (i !== undefined && PROBLEM[d.buildings.status[role].charAt(i)]) { lacks.push(BUILDING_GAP[role].replace("栋楼", "")); }
      });
      infoRows((props && (props.name || props.code)) || ("楼栋 " + id), [["编码", (props && props.code) || "—"],
        ["网格", i === undefined ? "—" : d.buildings.grid[i]], ["状态", colourLabel(st)], ["户数", props && props.households !== undefined ? String(props.households) : "—"],
        ["缺什么", lacks.join("；") || "无"]]);
    } else if (layer === "compounds") {
      var k = lookup.compound[id];
      if (!k) { return; }
      var pct = function (v) { return v === null ? "—" : (v * 100).toFixed(1) + "%"; };
      infoRows(k.name, [["类型", colourLabel(k["class"])], ["社区", k.community || "—"],
        ["主" + d.unit, k.main_code ? k.main_name + " " + k.main_code : "—"],
        ["涉及" + d.unit, k.units.map(function (u) { return (u[1] || u[0]) + " " + u[0] + "（" + Math.round(u[2] * 100) + "%）"; }).join("；") || "—"],
        ["小区面积", k.area_m2 === null ? "—" : k.area_m2.toLocaleString("zh-CN") + " m²"],
        ["位于主" + d.unit + "内", pct(k.coverage)], ["占主" + d.unit + "面积", pct(k.fill)],
        ["交并比 IoU", k.iou === null ? "—" : k.iou.toFixed(3)], ["最大偏离", k.hausdorff_m === null ? "—" : k.hausdorff_m + " m"]]);
    } else if (props) {  // tiles below zoom 14 carry only the code: the name comes with the page's data
      var u = lookup.unit[props.code];
      infoRows((props.name || (u && u.name) || "") + " " + (props.code || ""), [["类型", layer === "micro_grids" ? "微网格" : "网格"]]);
    }
  }
  // 一页纸概况 (/summary/{code}): under the panel, links to the printable page of the selected unit's street,
  // community and grid (the units of the page's data whose code the selected grid's code starts with)
  var showInfoBare = showInfo;
  showInfo = function (layer, id, props) {
    showInfoBare(layer, id, props);
    var box = $("ga-info"), d = ga.data;
    var code = layer === "grids" && cfg.kind === "coverage" ? id
      : layer === "compounds" ? (lookup.compound[id] || {}).main_code : props && props.code;
    if (HEAT || box.hidden || !code || layer === "buildings") { return; }
    var units = (d.streets || []).concat(d.communities || []).filter(function (u) { return code.indexOf(u.code) === 0; });
    if (lookup.grid[code] || layer === "grids") { units.push({code: code, name: (lookup.grid[code] || props || {}).name || code}); }
    if (!units.length) { return; }
    var p = document.createElement("p"); p.className = "ga-summary-links"; p.textContent = "一页纸概况：";
    units.forEach(function (u, i) {
      var a = document.createElement("a"); a.href = "/summary/" + encodeURIComponent(u.code); a.target = "_blank";
      a.textContent = u.name || u.code; if (i) { p.appendChild(document.createTextNode(" · ")); } p.appendChild(a);
    });
    box.appendChild(p);
  };
  map.on("click", function (e) {
    if (HEAT) { HEAT.click(e.latlng, featureAt); return; }
    var hit = featureAt(e.latlng);
    if (!hit) { state.selected = null; overlay.repaint(); $("ga-info").hidden = true; return; }
    state.selected = keyOf(hit.layer, hit.props);
    overlay.repaint();
    showInfo(hit.layer, hit.layer === "grids" && cfg.kind === "coverage" ? hit.props.code : hit.props.id, hit.props);
  });

  function applyFilters() {
    var t0 = performance.now();
    overlay.repaint();
    renderLegend();
    renderList();
    if (HEAT) { refreshLabels(); }
    ga.lastFilterMs = performance.now() - t0;
  }
  ga.applyFilters = applyFilters;
  $("ga-search").addEventListener("input", function (e) { state.search = e.target.value; renderList(); });

  // ---------------------------------------------------------------- exports
  function download(name, blob) {
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = name;
    document.body.appendChild(a); a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  function stamp() { return new Date().toISOString().slice(0, 10); }
  function listTitle() { return HEAT ? HEAT.listTitle : cfg.kind === "coverage" ? "缺口清单" : "小区清单"; }
  $("ga-csv").addEventListener("click", function () {
    var esc = function (v) { v = String(v === null || v === undefined ? "" : v); return /[",\n\r]/.test(v) || /^[=+\-@]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; };
    var lines = [HEAD.map(esc).join(",")].concat(visibleRows.map(function (r) { return r.cells.map(esc).join(","); }));
    download(listTitle() + "-" + stamp() + ".csv",
             new Blob(["\ufeff" + lines.join("\r\n") + "\r\n"], {type: "text/csv;charset=utf-8"}));
  });
  // 导出清单 ▸ Excel: the same visible rows and columns as the CSV, written in the browser by the vendored
  // write-excel-file, which is fetched on the first click only so the first view carries none of its weight.
  /** Columns holding quantities (Excel numbers, with their format); codes stay text so leading digits survive. */
  var XLSX_NUMBERS = {"事件数": "0", "编号": "0", "经度": "0.000000", "纬度": "0.000000"};
  var xlsxLib = null;
  function loadXlsxLib(src) {
    if (!xlsxLib) {
      xlsxLib = new Promise(function (resolve, reject) {
        var s = document.createElement("script");
        s.src = src; s.async = true;
        s.onload = function () { if (window.writeXlsxFile) { resolve(window.writeXlsxFile); } else { reject(new Error("write-excel-file")); } };
        s.onerror = function () { xlsxLib = null; s.remove(); reject(new Error("无法加载 Excel 组件")); };
        document.head.appendChild(s);
      });
    }
    return xlsxLib;
  }
  /** Display width of a text in Excel "characters": CJK and full-width forms take two. */
  function textWidth(v) {
    var w = 0, t = String(v);
    for (var i = 0; i < t.length; i++) { w += /[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]/.test(t[i]) ? 2 : 1; }
    return w;
  }
  function xlsxSheet() {
    var numeric = HEAD.map(function (h) { return XLSX_NUMBERS[h]; });
    var widths = HEAD.map(function (h) { return textWidth(h); });
    var body = visibleRows.map(function (r) {
      return r.cells.map(function (v, i) {
        var text = v === null || v === undefined ? "" : String(v);
        widths[i] = Math.max(widths[i], textWidth(text));
        if (numeric[i] && /^-?\d+(\.\d+)?$/.test(text)) { return {value: Number(text), type: Number, format: numeric[i]}; }
        return text === "" ? null : {value: text, type: String};
      });
    });
    var title = listTitle() + " · " + (ga.data.scope || "") + " · " + ($("ga-legend-title").textContent || "") +
      " · 导出于 " + new Date().toLocaleString("zh-CN");
    var titleRow = HEAD.map(function (h, i) { return i ? null : {value: title, fontWeight: "bold", fontSize: 13, columnSpan: HEAD.length}; });
    var headRow = HEAD.map(function (h) { return {value: h, fontWeight: "bold", backgroundColor: "#E3ECFA", bottomBorderStyle: "thin"}; });
    return {data: [titleRow, headRow].concat(body),
            options: {sheet: listTitle().replace(/[\[\]:*?\/\\]/g, "").slice(0, 31),
                      columns: widths.map(function (w) { return {width: Math.min(Math.max(w + 2, 8), 60)}; }),
                      stickyRowsCount: 2}};
  }
  $("ga-xlsx").addEventListener("click", function () {
    var btn = this, label = "Excel", hint = btn.getAttribute("data-title") || btn.title;
    btn.setAttribute("data-title", hint);
    if (btn.getAttribute("aria-busy") === "true") { return; }
    btn.setAttribute("aria-busy", "true");
    var sheet = xlsxSheet();  // the rows as they are at the click, not after the library arrives
    loadXlsxLib(btn.getAttribute("data-lib")).then(function (write) {
      // a compression worker the page may not start never answers: give up rather than stay busy for ever
      var late = new Promise(function (resolve, reject) { setTimeout(function () { reject(new Error("超时")); }, 60000); });
      return Promise.race([write(sheet.data, sheet.options).toBlob(), late]);
    }).then(function (blob) {
      download(listTitle() + "-" + stamp() + ".xlsx", blob);
      btn.textContent = label; btn.title = hint;
    }).catch(function (e) {
      btn.textContent = label + "（失败）"; btn.title = "导出 Excel 失败：" + e.message;
    }).then(function () { btn.removeAttribute("aria-busy"); });
  });
  /** The current view on one canvas: overlay tiles where they sit, labels, then a title band and the legend. */
  function viewCanvas(opts) {
    opts = opts || {};
    var size = map.getSize(), dpr = Math.min(window.devicePixelRatio || 1, 2), head = 44;
    var out = document.createElement("canvas");
    out.width = size.x * dpr; out.height = (size.y + head) * dpr;
    var ctx = out.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.fillStyle = "#eef1f4"; ctx.fillRect(0, 0, size.x, size.y + head);
    var origin = map.getContainer().getBoundingClientRect();
    map.getContainer().querySelectorAll("canvas.ga-tile").forEach(function (c) {
      var r = c.getBoundingClientRect();
      if (r.width && r.right > origin.left && r.left < origin.right && r.bottom > origin.top && r.top < origin.bottom) {
        ctx.drawImage(c, r.left - origin.left, r.top - origin.top + head, r.width, r.height);
      }
    });
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    map.getContainer().querySelectorAll(opts.labels === false ? ".ga-none" : ".ga-label span").forEach(function (s) {
      var r = s.getBoundingClientRect();
      ctx.font = getComputedStyle(s).font;
      ctx.lineWidth = 3; ctx.strokeStyle = "#fff"; ctx.fillStyle = getComputedStyle(s).color;
      var text = s.firstChild ? s.firstChild.textContent : s.textContent;
      var x = r.left + r.width / 2 - origin.left, y = r.top + r.height / 2 - origin.top + head;
      ctx.strokeText(text, x, y); ctx.fillText(text, x, y);
    });
    ctx.textAlign = "left";
    ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, size.x, head);
    ctx.fillStyle = "#1f2328"; ctx.font = "bold 18px sans-serif";
    ctx.fillText($("ga-title").textContent + " · " + ga.data.scope, 10, 16);
    ctx.font = "12px sans-serif"; ctx.fillStyle = "#555";
    ctx.fillText($("ga-legend-title").textContent + " · 导出于 " + new Date().toLocaleString("zh-CN"), 10, 34);
    // legend, bottom right
    var items = Array.prototype.map.call(document.querySelectorAll("#ga-legend li"), function (li) {
      var sw = li.querySelector(".sw"), help = li.querySelector(".ga-help");
      var text = help ? li.firstChild.textContent : li.textContent;
      return {colour: sw ? sw.style.background : null, text: text, off: li.classList.contains("off")};
    });
    ctx.font = "13px sans-serif";
    var w = 40 + Math.max.apply(null, items.map(function (i) { return ctx.measureText(i.text).width; }).concat([80]));
    var h = 26 + items.length * 18, x0 = size.x - w - 10, y0 = size.y + head - h - 10;
    ctx.fillStyle = "rgba(255,255,255,0.92)"; ctx.fillRect(x0, y0, w, h);
    ctx.strokeStyle = "#999"; ctx.lineWidth = 1; ctx.strokeRect(x0, y0, w, h);
    ctx.fillStyle = "#1f2328"; ctx.font = "bold 13px sans-serif"; ctx.fillText("图例", x0 + 8, y0 + 13);
    ctx.font = "13px sans-serif";
    items.forEach(function (it, i) {
      var y = y0 + 22 + i * 18;
      ctx.globalAlpha = it.off ? 0.35 : 1;
      if (it.colour) {
        ctx.fillStyle = it.colour; ctx.fillRect(x0 + 8, y + 3, 14, 12);
        ctx.fillStyle = "#1f2328"; ctx.fillText(it.text, x0 + 28, y + 9);
      } else {  // a section's heading (heatmap: heat, hot spots)
        ctx.font = "bold 13px sans-serif"; ctx.fillStyle = "#1f2328"; ctx.fillText(it.text, x0 + 8, y + 9);
        ctx.font = "13px sans-serif";
      }
    });
    ctx.globalAlpha = 1;
    return out;
  }
  ga.viewCanvas = viewCanvas;
  $("ga-png").addEventListener("click", function () {
    viewCanvas().toBlob(function (blob) { download(cfg.title + "-" + stamp() + ".png", blob); }, "image/png");
  });

  // ---------------------------------------------------------------- compact JSON (maps/leader_pack.py)
  var STEP = 1e-5;
  /** A box sent as offsets in 1e-5 degrees from the label point, back to [west, south, east, north]. */
  function unbox(p) {
    if (p && p.box && p.lon !== null && p.lon !== undefined) {
      p.bbox = [p.lon + p.box[0] * STEP, p.lat + p.box[1] * STEP, p.lon + p.box[2] * STEP, p.lat + p.box[3] * STEP];
    }
    return p;
  }
  function staffFrom(g, gridRoles) {
    g.staff = {};
    gridRoles.forEach(function (r) { g.staff[r] = []; });
    g.people.forEach(function (p) { g.staff[p[1]].push(p[0]); });
  }
  /** The whole staff of a grid whose district data named only whom to call: asked for once, when its panel opens. */
  function fetchStaff(g) {
    g.detailed = true;
    var url = new URL(cfg.data, location.href);
    ["street", "community"].forEach(function (k) { url.searchParams.delete(k); });
    url.searchParams.set("grid", g.code);
    fetch(url.toString(), {credentials: "same-origin"}).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (one) {
        var full = one && one.grids.filter(function (x) { return x.code === g.code; })[0];
        if (!full) { g.detailed = false; return; }
        g.people = full.people; g.more = false;
        staffFrom(g, Object.keys(ga.data.roles));
        if (state.selected === "grids:" + g.code) { showInfo("grids", g.code); }
      }, function () { g.detailed = false; });
  }
  function unpack(d) {
    ["communities", "streets", "units", "compounds", "grids"].forEach(function (k) { (d[k] || []).forEach(unbox); });
    if (d.kind === "heatmap") {  // the cube's columns sent as differences (geo/incidents/heat_cube.py)
      (d.cube.delta || []).forEach(function (k) {
        var col = d.cube.columns[k], v = 0;
        for (var i = 0; i < col.length; i++) { v += col[i]; col[i] = v; }
      });
      d.cube.delta = [];
    }
    if (d.kind === "classification") {  // the main unit's name: among the units it overlaps, else the labels
      var names = {};
      d.units.forEach(function (u) { names[u.code] = u.name; });
      d.compounds.forEach(function (k) {
        var m = k.units.filter(function (u) { return u[0] === k.main_code; })[0];
        k.main_name = (m && m[1]) || names[k.main_code] || "";
      });
    }
    if (d.kind !== "coverage") { return; }
    var roles = d.filters.map(function (f) { return f.key; }), gridRoles = Object.keys(d.roles);
    d.grids.forEach(function (g) {
      var s = g.status;
      g.status = {};
      roles.forEach(function (r, i) { g.status[r] = s.charAt(i); });
      staffFrom(g, gridRoles);
      // whom to call: the chiefs, else the full-time workers, else the part-time ones, else the community office
      g.contacts = [];
      for (var k = 0; k < gridRoles.length && !g.contacts.length; k++) {
        g.people.forEach(function (p) {
          if (p[1] === gridRoles[k]) { g.contacts.push({name: p[0], role: d.roles[p[1]], phone: p[2]}); }
        });
      }
      if (!g.contacts.length) { g.contacts = [{name: (g.community || "").replace(/社区$/, "") + "社区居委会", role: "社区", phone: null}]; }
    });
    var b = d.buildings, id = 0;
    b.id = b.id.map(function (v) { id += v; return id; });
    b.grid = b.grid.map(function (i) { return i >= 0 ? d.grids[i].code : ""; });
    gridRoles.forEach(function (r) { b.status[r] = b.status.grid; });
  }

  // ---------------------------------------------------------------- start
  function load(url, keepView) {
    return fetch(url, {credentials: "same-origin"}).then(function (r) {
      if (!r.ok) { throw new Error("data " + r.status); }
      return r.json();
    }).then(function (d) {
      unpack(d);
      ga.data = d;
      lookup = {grid: {}, building: {}, compound: {}, unit: {}};
      (d.units || []).forEach(function (u) { lookup.unit[u.code] = u; });
      if (d.kind === "heatmap") {
        HEAT.loaded(d);
      } else if (d.kind === "coverage") {
        d.grids.forEach(function (g) { lookup.grid[g.code] = g; });
        d.buildings.id.forEach(function (id, i) { lookup.building[id] = i; });
      } else {
        d.compounds.forEach(function (k) { lookup.compound[k.id] = k; });
        state.level = d.level;
      }
      $("ga-title").textContent = d.title;
      $("ga-scope").textContent = d.scope + " · " + d.at;
      document.title = d.title + " · GridAtlas";
      if (!keepView) {
        var boxes = (d.grids || d.units || []).concat(d.compounds || []).map(function (i) { return i.bbox; }).filter(Boolean);
        if (!boxes.length) { boxes = d.communities.map(function (c) { return c.bbox; }); }
        if (boxes.length) {
          var b = [180, 90, -180, -90];
          boxes.forEach(function (x) { b = [Math.min(b[0], x[0]), Math.min(b[1], x[1]), Math.max(b[2], x[2]), Math.max(b[3], x[3])]; });
          map.fitBounds(L.latLngBounds(ll(b[0], b[1]), ll(b[2], b[3])), {padding: [10, 10]});
        } else {
          map.setView([29.37, 113.1], 12);
        }
      }
      renderLegend(); renderList();
    });
  }
  if (HEAT) {
    // heatlayer.js wires its own filters
  } else if (cfg.kind === "coverage") {
    var select = $("ga-role");
    select.addEventListener("change", function () { state.role = select.value; applyFilters(); });
  } else {
    $("ga-level").addEventListener("change", function (e) {
      var url = new URL(cfg.data, location.href);
      url.searchParams.set("level", e.target.value);
      load(url.toString(), true).then(function () { overlay.redraw(); });
    });
  }
  // The tiles load while the JSON is made (cfg.bounds frames the first view); shapes are repainted once it is in.
  // Ready: the data in and every tile in view painted. The heatmap's hot spots (Gi*, heavy on the server) are
  // asked for only then, so they never hold up the first view's tiles.
  function markReady() {
    if (!ga.ready && HEAT && HEAT.whenReady) { setTimeout(HEAT.whenReady, 0); }
    ga.ready = true;
  }
  overlay.on("load", function () { if (ga.data) { markReady(); } });
  var b0 = cfg.bounds;
  if (b0) { map.fitBounds(L.latLngBounds(ll(b0[0], b0[1]), ll(b0[2], b0[3])), {padding: [10, 10]}); }
  // the data asked for first: it would otherwise queue behind the first view's tile requests (6 per host)
  var loading = load(cfg.data, !!b0);
  if (b0) { overlay.addTo(map); }
  loading.then(function () {
    if (cfg.kind === "coverage") {
      ga.data.filters.forEach(function (f) {
        var o = document.createElement("option"); o.value = f.key; o.textContent = f.label; $("ga-role").appendChild(o);
      });
      $("ga-role").value = state.role;
    } else if (!HEAT) {
      $("ga-level").value = ga.data.level;
    }
    if (b0) { overlay.repaint(); } else { overlay.addTo(map); }
    refreshLabels();
    if (b0 && !overlay.isLoading()) { markReady(); }
  }).catch(function (e) { $("ga-scope").textContent = "数据加载失败：" + e.message; });
})();
