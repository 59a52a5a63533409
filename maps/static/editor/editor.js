/*
 * GridAtlas plan editor (/plans/{id}): paint buildings or compounds into grids (click, lasso, brush), split by a
 * line, merge, retire, create, edit vertices with snapping, undo/redo, suggest, publish. Every action is exactly one
 * call to the plans API (an operation, an undo, a suggestion applied, a publish); after each the page redraws from
 * the API's answers (validation in the operation's answer, then the plan's units and the diff), so the page shows
 * what the API holds and nothing else.
 */
(function () {
  "use strict";
  var GA = window.GA;
  var DATA = JSON.parse(document.getElementById("ga-data").textContent);
  var CTX = DATA.context;
  var API = DATA.api;
  var STATIC = DATA.static_url || "/static";
  var esc = GA.esc;

  // ------------------------------------------------------------------------------------------------ state
  var S = {
    plan: null, etag: null, status: DATA.plan.status, units: {}, gridKeys: [], microKeys: [],
    validation: null, diff: null, owner: {}, selected: [], target: null, mode: "select", redo: [],
    colours: {}, names: {}, labelPts: {}, latencies: [], chain: Promise.resolve(), pending: 0,
    canEdit: !!DATA.can_edit, preview: null, loaded: false,
    // the level being edited: "grid", or "micro_grid" inside the grid S.parent (selection S.microSelected)
    level: "grid", parent: null, microSelected: [], microTarget: null
  };
  var band = DATA.band;
  var STEWARD = DATA.steward_band || [5, 15];
  var STEWARDS_APPLY = CTX.buildings.features.some(function (f) { return (f.properties.stewards || []).length; }) ||
    Object.keys(CTX.unit_stewards || {}).length > 0;
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
                 "#393b79", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1"];
  var buildings = CTX.buildings.features;
  var bById = {};
  buildings.forEach(function (f) { bById[f.properties.id] = f; });
  var compoundName = {};
  CTX.compounds.features.forEach(function (f) { compoundName[f.properties.id] = f.properties.name; });

  // ------------------------------------------------------------------------------------------- geometry
  function inRing(x, y, ring) {
    var inside = false;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if (((yi > y) !== (yj > y)) && (x < (xj - xi) * (y - yi) / (yj - yi) + xi)) inside = !inside;
    }
    return inside;
  }
  function inPoly(x, y, poly) {
    if (!inRing(x, y, poly[0])) return false;
    for (var k = 1; k < poly.length; k++) if (inRing(x, y, poly[k])) return false;
    return true;
  }
  function polys(g) {
    if (!g) return [];
    return g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
  }
  function inGeom(x, y, g) {
    var ps = polys(g);
    for (var i = 0; i < ps.length; i++) if (inPoly(x, y, ps[i])) return true;
    return false;
  }
  function bboxOf(g) {
    var b = [Infinity, Infinity, -Infinity, -Infinity];
    function walk(c) {
      if (typeof c[0] === "number") {
        if (c[0] < b[0]) b[0] = c[0]; if (c[1] < b[1]) b[1] = c[1];
        if (c[0] > b[2]) b[2] = c[0]; if (c[1] > b[3]) b[3] = c[1];
      } else c.forEach(walk);
    }
    if (g && g.coordinates) walk(g.coordinates);
    return b;
  }
  function ringArea(r) {
    var a = 0;
    for (var i = 0, j = r.length - 1; i < r.length; j = i++) a += (r[j][0] + r[i][0]) * (r[j][1] - r[i][1]);
    return Math.abs(a / 2);
  }
  function segDist2(px, py, ax, ay, bx, by) {
    var dx = bx - ax, dy = by - ay, t = 0, l = dx * dx + dy * dy;
    if (l > 0) t = Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / l));
    var x = ax + t * dx - px, y = ay + t * dy - py;
    return x * x + y * y;
  }
  /** A point well inside a polygon (for its label): the sample farthest from the edges of its largest part. */
  function labelPoint(g) {
    var ps = polys(g);
    if (!ps.length) return null;
    var best = ps[0], area = -1;
    ps.forEach(function (p) { var a = ringArea(p[0]); if (a > area) { area = a; best = p; } });
    var b = bboxOf({coordinates: best[0]});
    var k = Math.cos((b[1] + b[3]) / 2 * Math.PI / 180);
    var pick = null, far = -1, n = 14;
    for (var i = 0; i <= n; i++) {
      for (var j = 0; j <= n; j++) {
        var x = b[0] + (b[2] - b[0]) * (i + 0.5) / (n + 1), y = b[1] + (b[3] - b[1]) * (j + 0.5) / (n + 1);
        if (!inPoly(x, y, best)) continue;
        var d = Infinity;
        best.forEach(function (r) {
          for (var m = 0, q = r.length - 1; m < r.length; q = m++) {
            d = Math.min(d, segDist2(x * k, y, r[q][0] * k, r[q][1], r[m][0] * k, r[m][1]));
          }
        });
        if (d > far) { far = d; pick = [x, y]; }
      }
    }
    return pick || best[0][0];
  }
  function toLatLngBounds(b) { return L.latLngBounds([b[1], b[0]], [b[3], b[2]]); }

  // ------------------------------------------------------------------------------------------- colours
  function mix(a, b, t) {
    var pa = parseInt(a.slice(1), 16), pb = parseInt(b.slice(1), 16);
    var r = Math.round(((pa >> 16) & 255) * (1 - t) + ((pb >> 16) & 255) * t);
    var g = Math.round(((pa >> 8) & 255) * (1 - t) + ((pb >> 8) & 255) * t);
    var bl = Math.round((pa & 255) * (1 - t) + (pb & 255) * t);
    return "#" + ((1 << 24) + (r << 16) + (g << 8) + bl).toString(16).slice(1);
  }
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, t));
    var s = t * (stops.length - 1), i = Math.min(Math.floor(s), stops.length - 2);
    return mix(stops[i], stops[i + 1], s - i);
  }
  function isComprehensive(kind) { return !kind || kind === "comprehensive"; }
  /** Status of a household count against the band: below / ok / above (dedicated grids: na). */
  function bandStatus(h, kind) {
    if (!isComprehensive(kind)) return "na";
    return h < band[0] ? "below" : h > band[1] ? "above" : "ok";
  }
  function bandColour(h, kind) {
    var st = bandStatus(h, kind);
    if (st === "na") return "#d6d2c4";
    if (st === "below") return ramp(["#08519c", "#4292c6", "#9ecae1"], h / band[0]);
    if (st === "above") return ramp(["#fc9272", "#ef3b2c", "#99000d"], (h - band[1]) / (band[1] * 0.5));
    return ramp(["#a1d99b", "#41ab5d", "#a1d99b"], (h - band[0]) / Math.max(1, band[1] - band[0]));
  }
  /** Stable identity colours: a new grid gets a colour none of its neighbours (touching bounding boxes) has. */
  function assignColours(keys) {
    var boxes = {};
    keys.forEach(function (k) { boxes[k] = bboxOf(S.units[k].geometry); });
    function touch(a, b) {
      var e = 1e-4;
      return a[0] <= b[2] + e && b[0] <= a[2] + e && a[1] <= b[3] + e && b[1] <= a[3] + e;
    }
    keys.forEach(function (k) {
      if (S.colours[k]) return;
      var used = {}, count = {};
      keys.forEach(function (o) {
        var c = S.colours[o];
        if (!c || o === k) return;
        count[c] = (count[c] || 0) + 1;
        if (touch(boxes[k], boxes[o])) used[c] = true;
      });
      var free = PALETTE.filter(function (c) { return !used[c]; });
      var pool = free.length ? free : PALETTE;
      pool.sort(function (a, b) { return (count[a] || 0) - (count[b] || 0); });
      S.colours[k] = pool[0];
    });
  }
  function darker(c) { return mix(c, "#000000", 0.35); }

  // ------------------------------------------------------------------------------------------------ map
  var map = L.map("ga-map", {zoomControl: true, maxZoom: 20, boxZoom: false, zoomSnap: 0.25});
  if (DATA.tile_url) {
    L.tileLayer(DATA.tile_url, {maxZoom: 20, maxNativeZoom: 18, attribution: "内网底图"}).addTo(map);
  }
  L.control.scale({imperial: false, maxWidth: 150}).addTo(map);
  [["ga-context", 350], ["ga-grids", 400], ["ga-micro", 405], ["ga-walls", 410], ["ga-buildings", 420],
   ["ga-problems", 430], ["ga-select", 440], ["ga-labels", 450]].forEach(function (p) {
    map.createPane(p[0]).style.zIndex = p[1];
  });
  map.getPane("ga-labels").style.pointerEvents = "none";

  var ownIds = {};
  var contextLayer = L.geoJSON(CTX.communities, {
    pane: "ga-context", interactive: false,
    style: function (f) {
      return f.properties.own ? {color: "#08306b", weight: 0, fillOpacity: 0, opacity: 0}
        : {color: "#9e9e9e", weight: 1, fillColor: "#9e9e9e", fillOpacity: 0.45};
    },
    onEachFeature: function (f) { if (f.properties.own) ownIds[f.properties.id] = true; }
  }).addTo(map);
  var ownOutline = L.geoJSON({type: "FeatureCollection", features: CTX.communities.features.filter(function (f) {
    return f.properties.own;
  })}, {pane: "ga-walls", interactive: false, style: {color: "#08306b", weight: 2.5, fill: false}}).addTo(map);
  var otherNames = L.layerGroup().addTo(map);
  CTX.communities.features.forEach(function (f) {
    if (f.properties.own) return;
    var p = labelPoint(f.geometry);
    if (p) {
      L.marker([p[1], p[0]], {pane: "ga-labels", interactive: false, keyboard: false, snapIgnore: true,
        icon: L.divIcon({className: "ga-label-icon", html: '<span class="ga-label" style="color:#616161">' +
          esc(f.properties.name) + "</span>", iconSize: null})}).addTo(otherNames);
    }
  });
  var compoundLayer = L.geoJSON(CTX.compounds, {
    pane: "ga-walls", interactive: false,
    style: {color: "#6d4c41", weight: 1.2, dashArray: "5 3", fill: false}
  }).addTo(map);
  var gridLayer = L.layerGroup().addTo(map);
  var microLayer = L.layerGroup().addTo(map);
  var problemLayer = L.layerGroup().addTo(map);
  var selectLayer = L.layerGroup().addTo(map);
  var labelLayer = L.layerGroup().addTo(map);
  var flashLayer = L.layerGroup().addTo(map);
  var bLayers = {};
  var buildingLayer = L.geoJSON(CTX.buildings, {
    pane: "ga-buildings", snapIgnore: true,
    style: function () { return {color: "#555", weight: 0.8, fillColor: "#bdbdbd", fillOpacity: 0.9}; },
    onEachFeature: function (f, layer) {
      bLayers[f.properties.id] = layer;
      layer.bindTooltip(function () { return buildingTip(f.properties); }, {sticky: true, direction: "top"});
      layer.on("click", function (e) { onBuildingClick(f.properties, e); });
    }
  }).addTo(map);
  L.control.layers(null, {
    "网格（按户数着色）": gridLayer, "楼栋（按所属网格着色）": buildingLayer, "小区围墙": compoundLayer,
    "微网格": microLayer, "校验问题": problemLayer, "周边社区": contextLayer, "标注": labelLayer
  }, {collapsed: true, position: "topright"}).addTo(map);

  var legend = L.control({position: "bottomleft"});
  legend.onAdd = function () {
    var div = L.DomUtil.create("div", "ga-legend");
    div.innerHTML = '<b>户数（区间 ' + band[0] + "–" + band[1] + " 户）</b><ul>" +
      '<li><span class="ga-swatch" style="background:' + bandColour(band[0] * 0.4, null) + '"></span>远低于下限</li>' +
      '<li><span class="ga-swatch" style="background:' + bandColour(band[0] * 0.9, null) + '"></span>略低于下限</li>' +
      '<li><span class="ga-swatch" style="background:' + bandColour((band[0] + band[1]) / 2, null) + '"></span>在区间内</li>' +
      '<li><span class="ga-swatch" style="background:' + bandColour(band[1] * 1.1, null) + '"></span>超过上限</li>' +
      '<li><span class="ga-swatch" style="background:' + bandColour(0, "dedicated") + '"></span>专属网格（不计区间）</li>' +
      '<li><span class="ga-line"></span>校验问题（错误红，警告黄）</li>' +
      '<li><span class="ga-swatch" style="background:#9e9e9e"></span>其他社区</li></ul>';
    L.DomEvent.disableClickPropagation(div);
    return div;
  };
  legend.addTo(map);

  // fit the plan's own communities on open
  (function fit() {
    var b = L.latLngBounds([]);
    ownOutline.eachLayer(function (l) { b.extend(l.getBounds()); });
    if (b.isValid()) map.fitBounds(b, {padding: [12, 12]});
    else map.setView([29.37, 113.1], 13);
  })();

  // ---------------------------------------------------------------------------------------------- names
  function nameOf(key) { return S.names[key] || "（已退役网格）"; }

  // ------------------------------------------------------------------------------------------ levels
  // In the micro-grid level (微网格) every tool works on the micro-grids of one grid (S.parent): the same
  // operations with level "micro_grid", a selection and a target of their own, figures per micro-grid.
  function inMicro() { return S.level === "micro_grid" && !!S.parent && !!S.units[S.parent]; }
  function microOf(g) {
    return S.microKeys.filter(function (k) { return S.units[k].properties.parent_key === g; });
  }
  function levelKeys() { return inMicro() ? microOf(S.parent) : S.gridKeys; }
  function selection() { return inMicro() ? S.microSelected : S.selected; }
  function setSelection(keys) { if (inMicro()) S.microSelected = keys; else S.selected = keys; }
  function target() { return inMicro() ? S.microTarget : S.target; }
  function ownerOf(id) { return inMicro() ? S.microOwner[id] : S.owner[id]; }
  function unitWord() { return inMicro() ? "微网格" : "网格"; }
  function setLevel(level, parent) {
    if (S.mode === "vertex") cancelVertex();
    stopDraw();
    S.level = level === "micro_grid" && parent && S.units[parent] ? "micro_grid" : "grid";
    S.parent = S.level === "micro_grid" ? parent : null;
    S.microSelected = [];
    S.microTarget = null;
    if (S.level === "micro_grid") { S.selected = [parent]; S.target = parent; }
    var btn = document.getElementById("ga-level");
    btn.setAttribute("aria-pressed", String(S.level === "micro_grid"));
    btn.textContent = S.level === "micro_grid" ? "返回网格" : "编辑微网格";
    document.getElementById("ga-micro-section").hidden = S.level !== "micro_grid";
    document.getElementById("ga-target-label").textContent = "目标" + unitWord();
    document.querySelector(".ga-map").setAttribute("data-level", S.level);
    if (S.level === "micro_grid") {
      var b = bboxOf(S.units[parent].geometry);
      map.fitBounds(toLatLngBounds(b), {maxZoom: 19, padding: [30, 30]});
      hint("微网格编辑：" + S.names[parent] + " 的微网格。点选、套索、笔刷、拆分、合并、新建、退役、编辑边界都作用于微网格；" +
           "点击其他网格可切换。");
    } else bannerEl.hidden = true;
    S.mode = "";
    setMode("select");
    renderAll();
  }
  function buildingLabel(id) {
    var f = bById[id];
    return f ? f.properties.label : "楼栋";
  }
  function buildingTip(p) {
    var g = S.owner[p.id];
    return "<b>" + esc(p.label) + "</b><br>" + GA.fmtInt(p.households) + " 户 · " + GA.fmtInt(p.population) +
      " 人 · " + p.units + " 个单元" + (p.people.length ? " · 负责人 " + p.people.length + " 人" : "") +
      "<br>所属网格：" + (g ? esc(nameOf(g)) : "无");
  }
  function describeOp(op) {
    op = op || {};
    var names = function (keys) { return (keys || []).map(nameOf).join("、"); };
    switch (op.type) {
      case "move_buildings":
        var ids = op.building_ids || [];
        return "把 " + (ids.length === 1 ? buildingLabel(ids[0]) : ids.length + " 栋楼") + " 划入 " + nameOf(op.to);
      case "move_compounds":
        return "把小区 " + (op.compound_ids || []).map(function (c) { return compoundName[c] || "小区"; }).join("、") +
          " 整体划入 " + nameOf(op.to);
      case "split": return "拆分 " + nameOf(op.key);
      case "merge": return "合并 " + names(op.keys);
      case "retire": return "退役 " + nameOf(op.key) + (op.into ? "，并入 " + nameOf(op.into) : "");
      case "create": return (op.level === "micro_grid" ? "新建微网格「" : "新建网格「") + (op.name || "新网格") + "」";
      case "replace_geometry": return "修改 " + nameOf(op.key) + " 的边界";
      case "reshape": return "拖动 " + nameOf(op.key) + " 的边界（相邻单元随之调整）";
      case "rename": return "把 " + nameOf(op.key) + " 改名为「" + (op.name || "") + "」";
      case "suggestion": return "应用智能建议";
    }
    return GA.opName(op.type);
  }

  // ------------------------------------------------------------------------------------ loading & drawing
  function setUnits(plan) {
    S.plan = plan;
    S.status = plan.status;
    S.units = {};
    S.gridKeys = [];
    S.microKeys = [];
    (plan.units.features || []).forEach(function (f) {
      var k = f.id || f.properties.key;
      S.units[k] = f;
      S.names[k] = f.properties.name;
      (f.properties.level === "grid" ? S.gridKeys : S.microKeys).push(k);
    });
    S.gridKeys.sort();
    S.microKeys.sort();
    S.selected = S.selected.filter(function (k) { return S.units[k] && S.units[k].properties.level === "grid"; });
    if (S.target && !S.units[S.target]) S.target = null;
    S.microSelected = S.microSelected.filter(function (k) { return !!S.units[k]; });
    if (S.microTarget && !S.units[S.microTarget]) S.microTarget = null;
    if (S.level === "micro_grid" && !S.units[S.parent]) { S.level = "grid"; S.parent = null; }
    assignColours(S.gridKeys);
    assignColours(S.microKeys);
    computeOwners();
    var cache = S.labelCache || {};
    S.labelCache = {};
    S.labelPts = {};
    S.gridKeys.forEach(function (k) {
      var sig = JSON.stringify(S.units[k].geometry.coordinates);  // cheaper than searching again
      var hit = cache[k] && cache[k].sig === sig ? cache[k].pt : labelPoint(S.units[k].geometry);
      S.labelCache[k] = {sig: sig, pt: hit};
      S.labelPts[k] = hit;
    });
  }

  /** Each building's grid and micro-grid: the first unit (by key) covering its point on surface, the
   *  validator's rule. */
  function computeOwners() {
    function owners(keys) {
      var boxes = keys.map(function (k) { return [k, bboxOf(S.units[k].geometry)]; }), out = {};
      buildings.forEach(function (f) {
        var x = f.properties.pt[0], y = f.properties.pt[1];
        for (var i = 0; i < boxes.length; i++) {
          var b = boxes[i][1];
          if (x < b[0] || x > b[2] || y < b[1] || y > b[3]) continue;
          if (inGeom(x, y, S.units[boxes[i][0]].geometry)) { out[f.properties.id] = boxes[i][0]; return; }
        }
      });
      return out;
    }
    S.owner = owners(S.gridKeys);
    S.microOwner = owners(S.microKeys);
  }

  /** Per micro-grid of a grid: households, population, buildings, units, stewards (管家) and the steward rule
   *  (each steward serves STEWARD[0]–STEWARD[1] households; it applies where the plan's area has stewards). */
  function microFigures(parent) {
    var out = {}, keys = microOf(parent), up = CTX.unit_stewards || {};
    keys.forEach(function (k) {
      out[k] = {households: 0, population: 0, buildings: 0, units: 0, stewards: {}};
      (up[k] || []).forEach(function (p) { out[k].stewards[p] = 1; });
    });
    buildings.forEach(function (f) {
      var k = S.microOwner[f.properties.id], o = out[k];
      if (!o) return;
      o.households += f.properties.households; o.population += f.properties.population;
      o.buildings += 1; o.units += f.properties.units;
      (f.properties.stewards || []).forEach(function (p) { o.stewards[p] = 1; });
    });
    keys.forEach(function (k) {
      var o = out[k], n = Object.keys(o.stewards).length;
      o.steward_count = n;
      o.steward_need = Math.ceil(o.households / STEWARD[1]);
      o.steward_status = !STEWARDS_APPLY ? "na" : n * STEWARD[1] < o.households ? "short" :
        n * STEWARD[0] > o.households ? "surplus" : "ok";
    });
    return out;
  }

  function gridFigures() {
    var out = {};
    S.gridKeys.forEach(function (k) {
      out[k] = {households: 0, population: 0, buildings: 0, units: 0, people: {}, status: "ok"};
    });
    (S.validation && S.validation.grids || []).forEach(function (g) {
      if (!out[g.key]) return;
      out[g.key].households = g.households; out[g.key].population = g.population;
      out[g.key].buildings = g.buildings; out[g.key].status = g.status;
    });
    buildings.forEach(function (f) {
      var k = S.owner[f.properties.id];
      if (!k || !out[k]) return;
      out[k].units += f.properties.units;
      f.properties.people.forEach(function (p) { out[k].people[p] = 1; });
    });
    var up = CTX.unit_people || {};
    S.gridKeys.forEach(function (k) { (up[k] || []).forEach(function (p) { out[k].people[p] = 1; }); });
    S.microKeys.forEach(function (m) {
      var parent = S.units[m].properties.parent_key;
      if (out[parent]) (up[m] || []).forEach(function (p) { out[parent].people[p] = 1; });
    });
    S.gridKeys.forEach(function (k) { out[k].staff = Object.keys(out[k].people).length; });
    return out;
  }

  function drawGrids() {
    gridLayer.clearLayers();
    microLayer.clearLayers();
    var figs = gridFigures();
    S.gridKeys.forEach(function (k) {
      var f = S.units[k], p = f.properties, h = figs[k].households, st = bandStatus(h, p.kind);
      var layer = L.geoJSON(f, {
        pane: "ga-grids",
        style: {color: st === "below" ? "#08519c" : st === "above" ? "#99000d" : "#37474f",
                weight: st === "below" || st === "above" ? 2.5 : 1.5, fillColor: bandColour(h, p.kind),
                fillOpacity: st === "below" || st === "above" ? 0.55 : 0.35}
      });
      layer.eachLayer(function (l) {
        l.gaKey = k;
        l.on("click", function (e) { onGridClick(k, e); });
        l.bindTooltip(function () { return "<b>" + esc(p.name) + "</b><br>" + GA.fmtInt(h) + " 户"; },
                      {sticky: true, direction: "top"});
        gridLayer.addLayer(l);
      });
    });
    var micro = inMicro(), mfigs = micro ? microFigures(S.parent) : {};
    S.microKeys.forEach(function (k) {
      var p = S.units[k].properties, active = micro && p.parent_key === S.parent;
      var st = active ? mfigs[k].steward_status : "na";
      L.geoJSON(S.units[k], {pane: "ga-micro", interactive: active, snapIgnore: !active,
        style: active ? {color: st === "short" ? "#99000d" : st === "surplus" ? "#08519c" : "#263238",
                         weight: st === "short" || st === "surplus" ? 2.5 : 1.5, fillColor: S.colours[k],
                         fillOpacity: 0.3}
          : {color: "#546e7a", weight: 1, dashArray: "2 3", fill: false}}).eachLayer(function (l) {
        if (active) {
          l.gaKey = k;
          l.on("click", function (e) { onMicroClick(k, e); });
          l.bindTooltip(function () { return "<b>" + esc(p.name) + "</b><br>" + GA.fmtInt(mfigs[k].households) + " 户 · 管家 " +
                                             mfigs[k].steward_count + " 人"; }, {sticky: true, direction: "top"});
        }
        microLayer.addLayer(l);
      });
    });
  }

  function drawBuildings() {
    var micro = inMicro();
    buildings.forEach(function (f) {
      var k = micro ? (S.owner[f.properties.id] === S.parent ? S.microOwner[f.properties.id] : null) : S.owner[f.properties.id];
      var c = k ? S.colours[k] : "#bdbdbd";
      var layer = bLayers[f.properties.id];
      layer.setStyle({fillColor: c, color: darker(c), weight: 0.8, dashArray: null, fillOpacity: 0.9});
      if (layer.isTooltipOpen()) layer.getTooltip().update();  // its grid may have changed
    });
  }

  function drawProblems() {
    problemLayer.clearLayers();
    (S.validation && S.validation.problems || []).forEach(function (pr) {
      if (!pr.geometry || pr.rule === "households_band") return;  // the band is the grid's fill colour
      var colour = pr.severity === "error" ? "#d32f2f" : "#f9a825";
      L.geoJSON(pr.geometry, {pane: "ga-problems", interactive: false, snapIgnore: true,
        pointToLayer: function (f, ll) { return L.circleMarker(ll, {radius: 8}); },
        style: {color: colour, weight: 3, dashArray: "6 4", fill: true, fillColor: colour, fillOpacity: 0.08}
      }).eachLayer(function (l) { problemLayer.addLayer(l); });
    });
  }

  function drawSelection() {
    selectLayer.clearLayers();
    var keys = selection().slice(), tk = target();
    if (tk && keys.indexOf(tk) < 0 && S.mode !== "select") keys.push(tk);
    if (inMicro()) {
      L.geoJSON(S.units[S.parent], {pane: "ga-select", interactive: false, snapIgnore: true,
        style: {color: "#0d47a1", weight: 3, dashArray: "8 5", fill: false}}).eachLayer(function (l) { selectLayer.addLayer(l); });
    }
    keys.forEach(function (k) {
      if (!S.units[k]) return;
      var isTarget = k === tk && S.mode !== "select";
      L.geoJSON(S.units[k], {pane: "ga-select", interactive: false, snapIgnore: true,
        style: {color: isTarget ? S.colours[k] : "#ff6f00", weight: 5, fill: false,
                dashArray: isTarget && selection().indexOf(k) < 0 ? "10 6" : null}}).eachLayer(function (l) {
        selectLayer.addLayer(l);
      });
    });
  }

  function drawLabels() {
    labelLayer.clearLayers();
    var figs = gridFigures(), z = map.getZoom();
    if (inMicro()) {
      var mf = microFigures(S.parent);
      microOf(S.parent).forEach(function (k) {
        var pt = labelPoint(S.units[k].geometry);
        if (!pt) return;
        var st = mf[k].steward_status;
        L.marker([pt[1], pt[0]], {pane: "ga-labels", interactive: false, keyboard: false, snapIgnore: true,
          icon: L.divIcon({className: "ga-label-icon", html: '<span class="ga-label"><b>' + esc(S.names[k]) + "</b><br>" +
            GA.fmtInt(mf[k].households) + " 户" + (st === "na" ? "" : ' · <span class="' + (st === "ok" ? "ok" : "above") + '">管家 ' +
            mf[k].steward_count + "</span>") + "</span>", iconSize: null})}).addTo(labelLayer);
      });
      return;
    }
    S.gridKeys.forEach(function (k) {
      var pt = S.labelPts[k];
      if (!pt) return;
      var b = bboxOf(S.units[k].geometry);
      var a = map.latLngToContainerPoint([b[1], b[0]]), c = map.latLngToContainerPoint([b[3], b[2]]);
      var w = Math.abs(c.x - a.x), h = Math.abs(c.y - a.y);
      if (w < 36 || h < 18) return;
      var p = S.units[k].properties, hh = figs[k].households, st = bandStatus(hh, p.kind);
      var count = isComprehensive(p.kind) ? '<span class="' + st + '">' + GA.fmtInt(hh) + " 户</span>" : "专属";
      // names need room: a comprehensive grid's from 110 px wide, a dedicated grid's (long company names) from 170 px
      var html = (w > (isComprehensive(p.kind) ? 110 : 170) && z >= 14) ? "<b>" + esc(p.name) + "</b><br>" + count : count;
      L.marker([pt[1], pt[0]], {pane: "ga-labels", interactive: false, keyboard: false, snapIgnore: true,
        icon: L.divIcon({className: "ga-label-icon", html: '<span class="ga-label">' + html + "</span>",
                         iconSize: null})}).addTo(labelLayer);
    });
  }
  map.on("zoomend", drawLabels);

  // ------------------------------------------------------------------------------------------ the panel
  var collator = new Intl.Collator("zh-CN", {numeric: true});
  function sortedGrids() {
    return S.gridKeys.slice().sort(function (a, b) {
      var ka = isComprehensive(S.units[a].properties.kind) ? 0 : 1, kb = isComprehensive(S.units[b].properties.kind) ? 0 : 1;
      return ka - kb || collator.compare(S.names[a], S.names[b]);
    });
  }
  var lastFigures = {};
  function renderGridTable() {
    var figs = gridFigures();
    var tbody = document.querySelector("#ga-grids tbody"), tfoot = document.querySelector("#ga-grids tfoot");
    var focused = document.activeElement && document.activeElement.getAttribute("data-key");
    var tot = {households: 0, population: 0, buildings: 0, units: 0, staff: 0};
    tbody.innerHTML = sortedGrids().map(function (k) {
      var p = S.units[k].properties, f = figs[k], st = bandStatus(f.households, p.kind);
      ["households", "population", "buildings", "units", "staff"].forEach(function (x) { tot[x] += f[x]; });
      var changed = lastFigures[k] !== undefined && lastFigures[k] !== f.households;
      var cls = (S.selected.indexOf(k) >= 0 ? " ga-selected" : "") + (k === S.target ? " ga-target" : "") +
        (changed ? " ga-changed" : "");
      var bandTitle = st === "below" ? "低于下限 " + band[0] + " 户" : st === "above" ? "超过上限 " + band[1] + " 户" :
        st === "ok" ? "在区间内" : "专属网格不计区间";
      return '<tr data-key="' + k + '" class="' + cls.trim() + '">' +
        '<td><span class="ga-grid-name"><span class="ga-swatch" style="background:' + S.colours[k] + '"></span>' +
        '<button type="button" data-key="' + k + '" aria-label="选择网格 ' + esc(p.name) + "，" + f.households +
        " 户，" + bandTitle + '">' + esc(p.name) + "</button>" +
        (isComprehensive(p.kind) ? "" : '<span class="ga-kind">专属</span>') + "</span></td>" +
        '<td class="num ga-hh"><span class="ga-band ' + st + '" title="' + bandTitle + '">' +
        GA.fmtInt(f.households) + "</span></td>" +
        '<td class="num">' + GA.fmtInt(f.population) + '</td><td class="num">' + f.buildings + "</td>" +
        '<td class="num">' + f.units + '</td><td class="num">' + f.staff + "</td></tr>";
    }).join("");
    tfoot.innerHTML = '<tr><td>合计 ' + S.gridKeys.length + ' 个网格</td><td class="num">' + GA.fmtInt(tot.households) +
      '</td><td class="num">' + GA.fmtInt(tot.population) + '</td><td class="num">' + tot.buildings +
      '</td><td class="num">' + tot.units + '</td><td class="num">—</td></tr>';
    lastFigures = {};
    S.gridKeys.forEach(function (k) { lastFigures[k] = figs[k].households; });
    var out = S.gridKeys.filter(function (k) {
      var st = bandStatus(figs[k].households, S.units[k].properties.kind);
      return st === "below" || st === "above";
    }).length;
    document.getElementById("ga-band-note").textContent = "区间 " + band[0] + "–" + band[1] + " 户" +
      (out ? "，" + out + " 个超出区间" : "，全部在区间内");
    if (focused) {
      var el = tbody.querySelector('button[data-key="' + focused + '"]');
      if (el) el.focus();
    }
    renderTargetSelect();
  }
  document.querySelector("#ga-grids tbody").addEventListener("click", function (e) {
    var tr = e.target.closest("tr[data-key]");
    if (!tr) return;
    var k = tr.getAttribute("data-key");
    onGridClick(k, {originalEvent: e, fromPanel: true});
    var b = bboxOf(S.units[k].geometry);
    if (!map.getBounds().contains(toLatLngBounds(b))) map.fitBounds(toLatLngBounds(b), {maxZoom: 18, padding: [30, 30]});
  });

  function renderTargetSelect() {
    var sel = document.getElementById("ga-target");
    if (inMicro()) {
      var mf = microFigures(S.parent);
      sel.innerHTML = '<option value="">（请选择）</option>' + sortedMicro().map(function (k) {
        return '<option value="' + k + '"' + (k === S.microTarget ? " selected" : "") + ">" + esc(S.names[k]) + "（" +
          mf[k].households + " 户）</option>";
      }).join("");
      sel.setAttribute("aria-label", "目标微网格：楼栋将划入此微网格");
      return;
    }
    var figs = gridFigures();
    sel.setAttribute("aria-label", "目标网格：楼栋将划入此网格");
    sel.innerHTML = '<option value="">（请选择）</option>' + sortedGrids().map(function (k) {
      return '<option value="' + k + '"' + (k === S.target ? " selected" : "") + ">" + esc(S.names[k]) + "（" +
        figs[k].households + " 户）</option>";
    }).join("");
  }
  function sortedMicro() {
    return microOf(S.parent).sort(function (a, b) { return collator.compare(S.names[a], S.names[b]); });
  }
  var STEWARD_TEXT = {ok: "管家配置在规则内", short: "管家不足", surplus: "管家多于所需", na: "不适用"};
  function renderMicroTable() {
    var sec = document.getElementById("ga-micro-section");
    sec.hidden = !inMicro();
    if (!inMicro()) return;
    document.getElementById("ga-micro-parent").textContent = S.names[S.parent] + "，每名管家 " + STEWARD[0] + "–" +
      STEWARD[1] + " 户";
    var mf = microFigures(S.parent), tot = {households: 0, buildings: 0, stewards: 0};
    var tbody = document.querySelector("#ga-micros tbody");
    var rows = sortedMicro();
    tbody.innerHTML = rows.map(function (k) {
      var f = mf[k], st = f.steward_status;
      tot.households += f.households; tot.buildings += f.buildings; tot.stewards += f.steward_count;
      var cls = (S.microSelected.indexOf(k) >= 0 ? " ga-selected" : "") + (k === S.microTarget ? " ga-target" : "");
      return '<tr data-key="' + k + '" class="' + cls.trim() + '"><td><span class="ga-grid-name"><span class="ga-swatch" ' +
        'style="background:' + S.colours[k] + '"></span><button type="button" data-key="' + k + '" aria-label="选择微网格 ' +
        esc(S.names[k]) + "，" + f.households + " 户，管家 " + f.steward_count + " 人，" + STEWARD_TEXT[st] + '">' +
        esc(S.names[k]) + '</button></span></td><td class="num">' + GA.fmtInt(f.households) + '</td><td class="num">' +
        GA.fmtInt(f.population) + '</td><td class="num">' + f.buildings + '</td><td class="num"><span class="ga-band ' +
        (st === "ok" ? "ok" : st === "na" ? "na" : st === "short" ? "above" : "below") + '" title="' + STEWARD_TEXT[st] +
        (st === "na" ? "" : "：至少需要 " + f.steward_need + " 人") + '">' + f.steward_count + (st === "na" ? "" : "/" + f.steward_need) +
        "</span></td></tr>";
    }).join("") || '<tr><td colspan="5" class="ga-muted">这个网格还没有微网格：用“新建”画一个，或“拆分”。</td></tr>';
    document.querySelector("#ga-micros tfoot").innerHTML = "<tr><td>合计 " + rows.length + ' 个微网格</td><td class="num">' +
      GA.fmtInt(tot.households) + '</td><td class="num">—</td><td class="num">' + tot.buildings + '</td><td class="num">' +
      tot.stewards + "</td></tr>";
  }
  document.querySelector("#ga-micros tbody").addEventListener("click", function (e) {
    var tr = e.target.closest("tr[data-key]");
    if (!tr) return;
    onMicroClick(tr.getAttribute("data-key"), {originalEvent: e, fromPanel: true});
  });
  document.getElementById("ga-target").addEventListener("change", function (e) {
    setTarget(e.target.value || null);
  });

  function problemText(pr) {
    if (pr.rule === "building_cut" && pr.building_id != null) {
      return buildingLabel(pr.building_id) + " 被网格线切分到 " + (pr.keys || []).length + " 个网格（" +
        (pr.keys || []).map(nameOf).join("、") + "）";
    }
    return pr.message;
  }
  function renderProblems() {
    var v = S.validation || {problems: []};
    var list = document.getElementById("ga-problems");
    var probs = v.problems.slice().sort(function (a, b) {
      return (a.severity === "error" ? 0 : 1) - (b.severity === "error" ? 0 : 1);
    });
    document.getElementById("ga-problem-count").textContent = v.errors + " 个错误，" + v.warnings + " 个警告" +
      (v.elapsed_ms != null ? "（校验 " + Math.round(v.elapsed_ms) + " ms）" : "");
    list.innerHTML = probs.length ? probs.map(function (pr, i) {
      return '<li class="' + pr.severity + '"><button type="button" data-i="' + i + '" aria-label="' +
        (pr.severity === "error" ? "错误" : "警告") + "：" + esc(problemText(pr)) + '，点击定位">' +
        (pr.severity === "error" ? "错误" : "警告") + "：" + esc(problemText(pr)) + "</button></li>";
    }).join("") : '<li class="ga-muted">没有问题：网格覆盖社区、无重叠、无空隙。</li>';
    list.gaProblems = probs;
  }
  document.getElementById("ga-problems").addEventListener("click", function (e) {
    var b = e.target.closest("button[data-i]");
    if (!b) return;
    var pr = this.gaProblems[+b.getAttribute("data-i")];
    if (!pr || !pr.geometry) return;
    var layer = L.geoJSON(pr.geometry, {pane: "ga-select", interactive: false, snapIgnore: true,
      style: {color: "#ff00ff", weight: 5, fill: false}});
    flashLayer.clearLayers();
    flashLayer.addLayer(layer);
    map.fitBounds(layer.getBounds(), {maxZoom: 19, padding: [60, 60]});
    setTimeout(function () { flashLayer.removeLayer(layer); }, 2500);
  });

  var CLASS_NAMES = {same: "同等", larger: "大于网格", smaller: "小于网格", straddling: "跨界", outside: "未入格"};
  var ROLE_NAMES = {grid_chief: "网格长", grid_worker_fulltime: "专职网格员", grid_worker_parttime: "兼职网格员",
                    seconded_cadre: "下沉干部", building_head: "楼栋长", unit_head: "单元长", steward: "管家",
                    volunteer: "志愿者"};
  function renderDiff() {
    var d = S.diff, el = document.getElementById("ga-diff");
    if (!d) { el.innerHTML = '<p class="ga-muted">载入中…</p>'; return; }
    (d.grid.retired || []).forEach(function (r) { if (!S.names[r.key]) S.names[r.key] = r.name; });
    var g = d.grid, m = d.micro_grid, parts = [];
    function list(items) {
      return items.map(function (x) {
        return esc(x.name || nameOf(x.key)) + (x.renamed_from ? "（原名 " + esc(x.renamed_from) + "）" : "");
      }).join("、");
    }
    var any = g.created.length || g.retired.length || g.changed.length || d.totals.buildings;
    if (!any && !m.created.length && !m.retired.length && !m.changed.length) {
      el.innerHTML = "<p>与现行边界相同，尚无改动。</p>";
      return;
    }
    parts.push("<p><b>网格</b>：新建 " + g.created.length + (g.created.length ? "（" + list(g.created) + "）" : "") +
      "，退役 " + g.retired.length + (g.retired.length ? "（" + list(g.retired) + "）" : "") +
      "，改动 " + g.changed.length + (g.changed.length ? "（" + list(g.changed) + "）" : "") +
      "，未变 " + g.unchanged + "</p>");
    parts.push("<p><b>微网格</b>：新建 " + m.created.length + "，退役 " + m.retired.length + "，改动 " + m.changed.length +
      "，未变 " + m.unchanged + "</p>");
    parts.push("<p><b>换网格的楼栋</b>：" + d.totals.buildings + " 栋，" + GA.fmtInt(d.totals.households) + " 户，" +
      GA.fmtInt(d.totals.population) + " 人，" + d.totals.units + " 个单元</p>");
    if (d.moves.length) {
      parts.push("<ul>" + d.moves.map(function (p) {
        return "<li>" + esc(p.from ? nameOf(p.from) : "无网格") + " → " + esc(p.to ? nameOf(p.to) : "无网格") + "：" +
          p.buildings + " 栋 " + GA.fmtInt(p.households) + " 户</li>";
      }).join("") + "</ul>");
    }
    var people = {};
    d.staff.forEach(function (s) { people[s.person_id] = s; });
    var ps = Object.keys(people).map(function (k) { return people[k]; });
    parts.push("<p><b>受影响的人员</b>：" + ps.length + " 人" + (ps.length ? "（" + ps.slice(0, 8).map(function (s) {
      return esc(s.person) + "·" + esc(ROLE_NAMES[s.role] || s.role);
    }).join("、") + (ps.length > 8 ? " 等" : "") + "）" : "") + "</p>");
    var cls = d.classification || {changed: []};
    if (cls.available === false) parts.push('<p class="ga-muted">小区分类对比暂不可用。</p>');
    else if (cls.changed.length) {
      parts.push("<p><b>小区分类变化</b>：" + cls.changed.length + " 个</p><ul>" + cls.changed.slice(0, 10).map(function (c) {
        return "<li>" + esc(c.name || "小区") + "：" + esc(CLASS_NAMES[c.before] || c.before || "—") + " → " +
          esc(CLASS_NAMES[c.after] || c.after || "—") + "</li>";
      }).join("") + "</ul>");
    } else parts.push("<p><b>小区分类变化</b>：无</p>");
    el.innerHTML = parts.join("");
  }

  function renderHistory() {
    var ops = (S.plan && S.plan.operations) || [];
    document.getElementById("ga-history").innerHTML = ops.slice().reverse().slice(0, 50).map(function (o) {
      return '<li class="' + (o.undone_at ? "undone" : "") + '">' + esc(describeOp(o.op)) + ' <span class="ga-muted">' +
        esc(o.actor || "") + " " + esc(GA.fmtTime(o.at)) + (o.undone_at ? " 已撤销" : "") + "</span></li>";
    }).join("") || '<li class="ga-muted">尚无操作。</li>';
  }

  function renderStatus(extra) {
    var v = S.validation;
    var txt = (S.status === "draft" ? "草稿" : S.status === "published" ? "已发布" : S.status) +
      (S.plan ? " · 修订 " + S.plan.revision : "") + (v ? " · " + v.errors + " 错 " + v.warnings + " 警" : "");
    var last = S.latencies[S.latencies.length - 1];
    if (last) txt += " · 反馈 " + Math.round(last.figures_ms) + " ms";
    document.getElementById("ga-status").textContent = txt + (extra || "");
  }

  function renderButtons() {
    var editable = S.canEdit && S.status === "draft";
    Array.prototype.forEach.call(document.querySelectorAll(".ga-tool"), function (b) {
      b.disabled = !editable && b.getAttribute("data-mode") !== "select";
      b.setAttribute("aria-pressed", String(b.getAttribute("data-mode") === S.mode));
    });
    var live = ((S.plan && S.plan.operations) || []).some(function (o) { return !o.undone_at; });
    document.getElementById("ga-undo").disabled = !editable || !live;
    document.getElementById("ga-redo").disabled = !editable || !S.redo.length;
    document.getElementById("ga-merge").disabled = !editable || selection().length < 2;
    document.getElementById("ga-retire").disabled = !editable || selection().length < 1;
    document.getElementById("ga-rename").disabled = !editable || selection().length !== 1;
    document.getElementById("ga-level").disabled = !(inMicro() || S.selected.length === 1);
    document.getElementById("ga-suggest").disabled = !editable;
    document.getElementById("ga-publish").disabled = !editable;
    document.getElementById("ga-target").disabled = !editable;
    document.getElementById("ga-whole-compound").disabled = !editable;
  }

  function renderAll() {
    drawGrids();
    drawBuildings();
    drawProblems();
    drawSelection();
    drawLabels();
    renderGridTable();
    renderMicroTable();
    renderProblems();
    renderHistory();
    renderDiff();
    renderButtons();
    renderStatus();
  }

  // --------------------------------------------------------------------------------------- the banner
  var bannerEl = document.getElementById("ga-banner");
  function banner(html, kind, buttons) {
    bannerEl.innerHTML = "<span>" + html + "</span>";
    bannerEl.className = "ga-banner" + (kind ? " ga-" + kind : "");
    bannerEl.hidden = !html;
    (buttons || []).forEach(function (b) {
      var el = document.createElement("button");
      el.type = "button";
      el.textContent = b.label;
      if (b.primary) el.className = "ga-primary";
      if (b.aria) el.setAttribute("aria-label", b.aria);
      el.addEventListener("click", b.onClick);
      bannerEl.appendChild(el);
    });
    if (!buttons || !buttons.length) {
      var x = document.createElement("button");
      x.type = "button";
      x.textContent = "×";
      x.setAttribute("aria-label", "关闭提示");
      x.addEventListener("click", function () { bannerEl.hidden = true; });
      bannerEl.appendChild(x);
    }
  }
  function hint(text) { banner(esc(text), null); }

  // ------------------------------------------------------------------------------------- talking to the API
  function loadAll() {
    return Promise.all([GA.api("GET", API), GA.api("GET", API + "/validation"), GA.api("GET", API + "/diff")])
      .then(function (r) {
        if (!r[0].ok) { banner(esc(GA.explain(r[0])), "error"); return; }
        S.etag = r[0].data.etag || r[0].etag;
        setUnits(r[0].data);
        if (r[1].ok) S.validation = r[1].data;
        if (r[2].ok) S.diff = r[2].data;
        S.loaded = true;
        renderAll();
        readOnlyNotice();
      });
  }

  /** After an edit: the plan's units (and validation when the answer had none), then the diff. */
  function refresh(needValidation) {
    var calls = [GA.api("GET", API)];
    if (needValidation) calls.push(GA.api("GET", API + "/validation"));
    var diffDone = requestDiff();
    var t0 = performance.now();
    return Promise.all(calls).then(function (r) {
      var t1 = performance.now();
      if (r[0].ok) {
        S.etag = r[0].data.etag || r[0].etag;
        setUnits(r[0].data);
      }
      if (needValidation && r[1].ok) S.validation = r[1].data;
      drawGrids(); drawBuildings(); drawProblems(); drawSelection(); drawLabels();
      renderGridTable(); renderMicroTable(); renderProblems(); renderHistory(); renderButtons(); renderStatus();
      S.lastRefresh = {fetch_ms: t1 - t0, render_ms: performance.now() - t1};
      return {diff: diffDone};
    });
  }

  /** The diff, at most one request at a time: edits made while one is running share the next one. */
  var diffQ = {running: false, again: false, waiters: []};
  function requestDiff() {
    return new Promise(function (resolve) {
      diffQ.waiters.push(resolve);
      if (diffQ.running) { diffQ.again = true; return; }
      runDiff();
    });
  }
  function runDiff() {
    var waiters = diffQ.waiters;
    diffQ.waiters = [];
    diffQ.running = true;
    GA.api("GET", API + "/diff").then(function (d) {
      if (d.ok) { S.diff = d.data; renderDiff(); }
      diffQ.running = false;
      if (diffQ.again) { diffQ.again = false; runDiff(); }
      waiters.forEach(function (w) { w(); });
    });
  }

  function busy(on) {
    S.pending += on ? 1 : -1;
    document.getElementById("ga-map").classList.toggle("ga-busy", S.pending > 0);
  }

  /** Run `fn` after every earlier action has finished (each one needs the ETag the previous one answered). */
  function enqueue(fn) {
    busy(true);
    var p = S.chain.then(fn).catch(function (err) { banner("出错：" + esc(String(err)), "error"); })
      .then(function (v) { busy(false); return v; });
    S.chain = p;
    return p;
  }

  function record(kind, t0, tFigures, tMap, tDiff, extra) {
    var r = {action: kind, figures_ms: tFigures - t0, map_ms: tMap - t0, diff_ms: tDiff ? tDiff - t0 : null};
    if (extra) Object.keys(extra).forEach(function (k) { r[k] = extra[k]; });
    S.latencies.push(r);
    renderStatus();
    return r;
  }

  var ERRORS = [
    [/does not cut/, "这条线没有把网格切成两块以上：线要完整穿过网格，两端画到网格外。"],
    [/merge joins units of one level/, "只能合并同一层级的网格。"],
    [/merge needs two or more/, "请至少选择两个网格再合并。"],
    [/nothing to move/, "没有可划入的楼栋。"],
    [/no live unit/, "该网格已不存在（可能已被合并或退役），请刷新。"],
    [/no area inside its parent/, "新网格与社区没有重叠。"],
    [/only drafts can be edited/, "方案已发布或已作废，不能再修改。"],
    [/one community/, "一次操作只能在一个社区内进行：网格不能跨社区。"],
    [/not in this community/, "所选楼栋不在该社区内。"],
    [/would become a gap/, "这样会留下空隙：让出的区域旁边没有相邻单元可以接收（社区或网格的外边界不能向内收）。"]
  ];
  function explainOp(res) {
    var detail = (res.data && res.data.detail) || "";
    for (var i = 0; i < ERRORS.length; i++) if (ERRORS[i][0].test(detail)) return ERRORS[i][1];
    return GA.explain(res);
  }

  function failed(res, label) {
    var t = String((res.data || {}).type || "").split("/").pop();
    if (res.status === 412 && t === "stale-plan") {
      banner("「" + esc(label) + "」未执行：这份草稿刚被修改过，已载入最新内容。<ul>" +
             GA.planChanges(res.data.changes) + "</ul>", "error");
      return loadAll();
    }
    banner("「" + esc(label) + "」未执行：" + esc(explainOp(res)), "error");
    drawBuildings();  // drop any optimistic colouring
    return null;
  }

  /** One action = one operation through the API, then the refresh; resolves with its latency record. */
  function act(op, opts) {
    opts = opts || {};
    if (!S.canEdit || S.status !== "draft") { hint("这份方案不能编辑。"); return Promise.resolve(null); }
    var label = describeOp(op);
    var t0 = opts.t0 || performance.now();
    if (!opts.redo) { S.redo = []; }
    if (S.preview && !opts.keepPreview) clearPreview();
    return enqueue(function () {
      return GA.api("POST", API + "/operations", {body: op, ifMatch: S.etag}).then(function (res) {
        if (!res.ok) return failed(res, label);
        S.etag = res.data.etag || res.etag;
        S.validation = res.data.validation;
        S.lastResult = res.data.result;
        renderGridTable(); renderProblems(); drawProblems();
        var tFig = performance.now();
        return refresh(false).then(function (r) {
          var tMap = performance.now();
          var rec = record(op.type, t0, tFig, tMap, null, {validation_ms: S.validation.elapsed_ms,
                                                           fetch_ms: S.lastRefresh.fetch_ms,
                                                           render_ms: S.lastRefresh.render_ms});
          r.diff.then(function () { rec.diff_ms = performance.now() - t0; });
          if (!opts.quiet) hintDone(label);
          return rec;
        });
      });
    });
  }
  function hintDone(label) { banner("已完成：" + esc(label) + "（可撤销 Ctrl+Z）", "ok"); }

  function undo() {
    if (!S.canEdit || S.status !== "draft") return Promise.resolve(null);
    var t0 = performance.now();
    if (S.preview) S.preview = null;
    return enqueue(function () {
      return GA.api("POST", API + "/undo", {ifMatch: S.etag}).then(function (res) {
        if (!res.ok) return failed(res, "撤销");
        S.etag = res.data.etag || res.etag;
        S.validation = res.data.validation;
        if (res.data.undone && res.data.undone.op) S.redo.push(res.data.undone.op);
        renderGridTable(); renderProblems(); drawProblems();
        var tFig = performance.now();
        return refresh(false).then(function (r) {
          var rec = record("undo", t0, tFig, performance.now());
          r.diff.then(function () { rec.diff_ms = performance.now() - t0; });
          banner("已撤销：" + esc(describeOp(res.data.undone && res.data.undone.op)) + "（Ctrl+Shift+Z 重做）", "ok");
          return rec;
        });
      });
    });
  }
  function redo() {
    if (!S.redo.length) return Promise.resolve(null);
    var op = S.redo.pop();
    return act(op, {redo: true});
  }

  // ------------------------------------------------------------------------------------------- selection
  function setTarget(k) {
    if (inMicro()) S.microTarget = k && S.units[k] ? k : null;
    else S.target = k && S.units[k] ? k : null;
    drawSelection();
    renderGridTable();
    renderMicroTable();
  }
  function onMicroClick(k, e) {
    var oe = e && e.originalEvent;
    if (e && e.target && S.mode !== "split" && S.mode !== "create") L.DomEvent.stopPropagation(e);
    if (S.mode === "paint" || S.mode === "lasso" || S.mode === "brush") {
      if (performance.now() - (S.strokeEnded || 0) < 400) return;
      setTarget(k);
      hint("目标微网格：" + S.names[k] + "。点选或圈选楼栋把它们划入该微网格。");
      return;
    }
    if (S.mode !== "select" && S.mode !== "vertex") return;
    var multi = oe && (oe.shiftKey || oe.ctrlKey || oe.metaKey);
    if (multi) {
      var i = S.microSelected.indexOf(k);
      if (i >= 0) S.microSelected.splice(i, 1); else S.microSelected.push(k);
    } else {
      S.microSelected = S.microSelected.length === 1 && S.microSelected[0] === k && !(e && e.fromPanel) ? [] : [k];
    }
    if (S.microSelected.length) S.microTarget = S.microSelected[S.microSelected.length - 1];
    drawSelection(); renderMicroTable(); renderTargetSelect(); renderButtons();
  }
  function onGridClick(k, e) {
    var oe = e && e.originalEvent;
    if (inMicro()) {
      // in the micro-grid level a click on another grid opens its micro-grids
      if (e && e.target && S.mode !== "split" && S.mode !== "create") L.DomEvent.stopPropagation(e);
      if (k !== S.parent && (S.mode === "select" || e && e.fromPanel)) setLevel("micro_grid", k);
      return;
    }
    if (e && e.target && S.mode !== "split" && S.mode !== "create") L.DomEvent.stopPropagation(e);
    if (S.mode === "paint" || S.mode === "lasso" || S.mode === "brush") {
      if (performance.now() - (S.strokeEnded || 0) < 400) return;  // the click that ends a stroke
      setTarget(k);
      hint("目标网格：" + S.names[k] + "。点选或圈选楼栋把它们划入该网格。");
      return;
    }
    if (S.mode !== "select" && S.mode !== "vertex") return;
    var multi = oe && (oe.shiftKey || oe.ctrlKey || oe.metaKey);
    if (multi) {
      var i = S.selected.indexOf(k);
      if (i >= 0) S.selected.splice(i, 1); else S.selected.push(k);
    } else {
      S.selected = S.selected.length === 1 && S.selected[0] === k && !(e && e.fromPanel) ? [] : [k];
    }
    if (S.selected.length) S.target = S.selected[S.selected.length - 1];
    drawSelection(); renderGridTable(); renderButtons();
  }
  map.on("click", function () {
    // grid and building clicks stop before reaching the map in these modes: this is a click on no grid
    if (S.mode === "select" && inMicro() && S.microSelected.length) {
      S.microSelected = [];
      drawSelection(); renderMicroTable(); renderButtons();
    } else if (S.mode === "select" && !inMicro() && S.selected.length) {
      S.selected = [];
      drawSelection(); renderGridTable(); renderButtons();
    }
  });

  function onBuildingClick(p, e) {
    if (S.mode === "split" || S.mode === "create") return;  // the drawing tool takes the click
    L.DomEvent.stopPropagation(e);
    if (S.mode === "select" || S.mode === "vertex") {
      var k = ownerOf(p.id);
      if (k && inMicro()) onMicroClick(k, e);
      else if (k) onGridClick(k, e);
      return;
    }
    if (S.mode !== "paint") return;
    paint([p.id]);
  }

  /** Paint buildings into the target grid: one move_buildings (or, whole compounds, move_compounds) operation. */
  function paint(ids, t0) {
    if (!target()) {
      hint("请先选择目标" + unitWord() + "：在“目标" + unitWord() + "”中选择，或在地图上点击一个" + unitWord() + "。");
      return Promise.resolve(null);
    }
    var whole = document.getElementById("ga-whole-compound").checked;
    var to = target();
    var community = S.units[to].properties.community_id;
    var across = ids.filter(function (id) { return bById[id].properties.community_id !== community; });
    if (across.length) {
      ids = ids.filter(function (id) { return bById[id].properties.community_id === community; });
      if (!ids.length) {
        hint("网格不能跨社区：这些楼栋属于其他社区，不能划入 " + S.names[to] + "。");
        drawBuildings();
        return Promise.resolve(null);
      }
    }
    if (whole) {
      var comps = {};
      ids.forEach(function (id) { var c = bById[id].properties.compound_id; if (c != null) comps[c] = 1; });
      var cids = Object.keys(comps).map(Number);
      var loose = ids.filter(function (id) { return bById[id].properties.compound_id == null && ownerOf(id) !== to; });
      if (cids.length) {
        buildings.forEach(function (f) { if (comps[f.properties.compound_id]) pending(f.properties.id, to); });
        return act({type: "move_compounds", compound_ids: cids, to: to}, {t0: t0});
      }
      ids = loose;
    }
    ids = ids.filter(function (id) { return ownerOf(id) !== to; });
    if (!ids.length) { hint("这些楼栋已在目标" + unitWord() + " " + S.names[to] + " 中。"); return Promise.resolve(null); }
    ids.forEach(function (id) { pending(id, to); });
    return act({type: "move_buildings", building_ids: ids, to: to}, {t0: t0});
  }
  function pending(id, to) {
    var c = S.colours[to];
    bLayers[id].setStyle({fillColor: c, color: "#000", weight: 2, dashArray: "3 2", fillOpacity: 0.9});
  }

  // ------------------------------------------------------------------------------------- lasso and brush
  var container = map.getContainer();
  var canvas = document.createElement("canvas");
  canvas.className = "ga-lasso-canvas";
  container.appendChild(canvas);
  var stroke = null;
  var BRUSH = 18;
  function canvasSize() {
    var s = map.getSize();
    canvas.width = s.x; canvas.height = s.y;
    canvas.style.width = s.x + "px"; canvas.style.height = s.y + "px";
  }
  function buildingPixels() {
    return buildings.map(function (f) {
      var p = f.properties, pt = map.latLngToContainerPoint([p.pt[1], p.pt[0]]);
      var b = bboxOf(f.geometry);
      var a = map.latLngToContainerPoint([b[1], b[0]]), c = map.latLngToContainerPoint([b[3], b[2]]);
      return {id: p.id, x: pt.x, y: pt.y, box: [Math.min(a.x, c.x), Math.min(a.y, c.y), Math.max(a.x, c.x), Math.max(a.y, c.y)]};
    });
  }
  container.addEventListener("pointerdown", function (e) {
    if ((S.mode !== "lasso" && S.mode !== "brush") || e.button !== 0) return;
    if (e.target.closest(".leaflet-control")) return;
    if (!target()) { hint("请先选择目标" + unitWord() + "：在“目标" + unitWord() + "”中选择，或在地图上点击一个" + unitWord() + "。"); return; }
    e.preventDefault();
    e.stopPropagation();
    canvasSize();
    var r = container.getBoundingClientRect();
    stroke = {points: [[e.clientX - r.left, e.clientY - r.top]], picked: {}, pixels: buildingPixels(), rect: r,
              t0: performance.now()};
    container.setPointerCapture(e.pointerId);
    drawStroke();
    if (S.mode === "brush") brushAt(stroke.points[0]);
  }, true);
  container.addEventListener("pointermove", function (e) {
    if (!stroke) return;
    e.preventDefault();
    var p = [e.clientX - stroke.rect.left, e.clientY - stroke.rect.top];
    stroke.points.push(p);
    if (S.mode === "brush") brushAt(p);
    drawStroke();
  }, true);
  function endStroke(e) {
    if (!stroke) return;
    e.preventDefault();
    var s = stroke;
    stroke = null;
    S.strokeEnded = performance.now();
    try { container.releasePointerCapture(e.pointerId); } catch (err) { /* already released */ }
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    var ids;
    if (S.mode === "lasso") {
      if (s.points.length < 3) return;
      ids = s.pixels.filter(function (b) { return inRing(b.x, b.y, s.points); }).map(function (b) { return b.id; });
    } else {
      ids = Object.keys(s.picked).map(Number);
    }
    if (!ids.length) { hint("没有圈到楼栋。"); drawBuildings(); return; }
    paint(ids, s.t0);
  }
  container.addEventListener("pointerup", endStroke, true);
  container.addEventListener("pointercancel", endStroke, true);
  function brushAt(p) {
    stroke.pixels.forEach(function (b) {
      if (stroke.picked[b.id]) return;
      var cx = Math.max(b.box[0], Math.min(p[0], b.box[2])), cy = Math.max(b.box[1], Math.min(p[1], b.box[3]));
      var dx = cx - p[0], dy = cy - p[1];
      if (dx * dx + dy * dy <= BRUSH * BRUSH && ownerOf(b.id) !== target()) {
        stroke.picked[b.id] = 1;
        pending(b.id, target());
      }
    });
  }
  function drawStroke() {
    var ctx = canvas.getContext("2d"), pts = stroke.points, c = S.colours[target()] || "#0d47a1";
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.lineJoin = ctx.lineCap = "round";
    ctx.beginPath();
    pts.forEach(function (p, i) { if (i) ctx.lineTo(p[0], p[1]); else ctx.moveTo(p[0], p[1]); });
    if (S.mode === "lasso") {
      ctx.closePath();
      ctx.fillStyle = "rgba(13,71,161,0.12)";
      ctx.fill();
      ctx.setLineDash([6, 4]);
      ctx.strokeStyle = "#0d47a1";
      ctx.lineWidth = 2;
    } else {
      ctx.setLineDash([]);
      ctx.strokeStyle = c;
      ctx.globalAlpha = 0.35;
      ctx.lineWidth = BRUSH * 2;
    }
    ctx.stroke();
    ctx.globalAlpha = 1;
  }

  // ------------------------------------------------------------------------ drawing with Leaflet-Geoman
  var geoman = null;
  function ensureGeoman() {
    if (geoman) return geoman;
    geoman = new Promise(function (resolve, reject) {
      var css = document.createElement("link");
      css.rel = "stylesheet";
      css.href = STATIC + "/vendor/leaflet-geoman-free/leaflet-geoman.css";
      document.head.appendChild(css);
      var s = document.createElement("script");
      s.src = STATIC + "/vendor/leaflet-geoman-free/leaflet-geoman.min.js";
      s.onload = function () {
        if (!map.pm) { map.pm = new L.PM.Map(map); }
        map.pm.setLang("zh");
        map.pm.setGlobalOptions({snappable: true, snapDistance: 14, allowSelfIntersection: false,
                                 templineStyle: {color: "#0d47a1", weight: 3},
                                 hintlineStyle: {color: "#0d47a1", dashArray: [5, 5]},
                                 pathOptions: {color: "#0d47a1", weight: 3, fillOpacity: 0.1}});
        map.on("pm:create", onDrawn);
        resolve(map.pm);
      };
      s.onerror = function () { reject(new Error("编辑组件载入失败")); };
      document.head.appendChild(s);
    });
    return geoman;
  }

  function startDraw(shape) {
    return ensureGeoman().then(function () {
      if (S.mode !== (shape === "Line" ? "split" : "create")) return;
      map.pm.enableDraw(shape, {finishOn: shape === "Line" ? "dblclick" : null, snappable: true, snapDistance: 14});
    });
  }
  function stopDraw() { if (map.pm) { map.pm.disableDraw(); } }

  /** A line drawn to split: extend both ends by ~2 m so a line snapped onto the boundary still crosses it. */
  function extendLine(coords) {
    var out = coords.filter(function (c, i) {
      return !i || c[0] !== coords[i - 1][0] || c[1] !== coords[i - 1][1];
    });
    if (out.length < 2) return out;
    function ext(a, b) {
      var k = Math.cos(a[1] * Math.PI / 180), dx = (a[0] - b[0]) * k, dy = a[1] - b[1];
      var len = Math.sqrt(dx * dx + dy * dy) || 1, d = 2 / 111320;
      return [a[0] + dx / len * d / k, a[1] + dy / len * d];
    }
    out[0] = ext(out[0], out[1]);
    out[out.length - 1] = ext(out[out.length - 1], out[out.length - 2]);
    return out;
  }
  /** The grid a split line cuts: the selected one if the line enters it, else the one most of the line is in. */
  function gridUnderLine(coords) {
    var votes = {};
    for (var i = 1; i < coords.length; i++) {
      for (var t = 0; t <= 20; t++) {
        var x = coords[i - 1][0] + (coords[i][0] - coords[i - 1][0]) * t / 20;
        var y = coords[i - 1][1] + (coords[i][1] - coords[i - 1][1]) * t / 20;
        var keys = levelKeys();
        for (var j = 0; j < keys.length; j++) {
          if (inGeom(x, y, S.units[keys[j]].geometry)) { votes[keys[j]] = (votes[keys[j]] || 0) + 1; break; }
        }
      }
    }
    var sel = selection();
    if (sel.length === 1 && votes[sel[0]]) return sel[0];
    var best = null;
    Object.keys(votes).forEach(function (k) { if (!best || votes[k] > votes[best]) best = k; });
    return best;
  }

  function onDrawn(e) {
    var layer = e.layer, t0 = performance.now();
    var gj = layer.toGeoJSON(false).geometry;
    map.removeLayer(layer);
    if (e.shape === "Line" && S.mode === "split") {
      var coords = extendLine(gj.coordinates);
      var key = gridUnderLine(coords);
      if (!key) { hint("这条线没有穿过任何" + unitWord() + "。"); startDraw("Line"); return; }
      act({type: "split", key: key, line: {type: "LineString", coordinates: coords}}, {t0: t0}).then(function () {
        if (S.mode === "split") startDraw("Line");
      });
    } else if (e.shape === "Polygon" && S.mode === "create") {
      var word = unitWord(), micro = inMicro(), parent = S.parent;
      GA.dialog({title: "新建" + word, withInputs: true,
                 html: '<label for="ga-new-name">' + word + '名称</label><input id="ga-new-name" name="name" type="text" ' +
                   'maxlength="100" value="新' + word + '"><p class="ga-muted">新' + word + "从相邻" + word +
                   (micro ? "中划出这块区域（限于 " + esc(S.names[parent]) + " 之内）。" : "中划出这块区域。") + "</p>",
                 buttons: [{label: "取消", value: false}, {label: "新建", value: true, primary: true}]})
        .then(function (r) {
          if (r && r.value) {
            var op = {type: "create", level: micro ? "micro_grid" : "grid", geometry: gj,
                      name: r.inputs.name || "新" + word, carve: true};
            if (micro) op.parent = parent;
            act(op, {t0: t0});
          }
          if (S.mode === "create") startDraw("Polygon");
        });
    }
  }

  // vertex editing: the selected unit as an editable polygon snapping to neighbours and compound walls. Each
  // vertex drag (or removal) is one `reshape` operation: the server moves the neighbours' shared edges with it
  // (land given up goes to the neighbour across the edge, land taken comes from the neighbours), and the outline
  // is then re-seated on what the server holds, so the next drag starts from the partition as it is.
  var editing = null;
  function startVertex() {
    var key = editableKey();
    if (!key) {
      hint("请先在“选择”工具下选中一个网格（或微网格），再编辑边界。");
      setMode("select");
      return;
    }
    ensureGeoman().then(function () {
      if (S.mode !== "vertex") return;
      editVertices(key);
      banner("正在编辑 " + esc(nameOf(key)) + " 的边界：拖动顶点（吸附相邻单元和小区围墙），相邻单元的共用边随之移动；" +
             "拖动边中点增加顶点，右键删除顶点。每次拖动即保存，可撤销。", null, [
        {label: "完成", primary: true, aria: "结束边界编辑", onClick: function () { cancelVertex(); setMode("select"); }}]);
    });
  }
  function editableKey() {
    if (S.level === "micro_grid") return S.microSelected.length === 1 ? S.microSelected[0] : null;
    return S.selected.length === 1 ? S.selected[0] : null;
  }
  function editVertices(key) {
    if (editing) { editing.layer.pm.disable(); map.removeLayer(editing.layer); editing = null; }
    var f = S.units[key];
    if (!f) return;
    var layer = L.geoJSON(f, {pane: "ga-select", style: {color: "#0d47a1", weight: 3, fillOpacity: 0.05}})
      .getLayers()[0];
    layer.options.snapIgnore = true;
    // a vertex snaps to the neighbours and the compound walls, never back onto the unit's own old outline
    [gridLayer, microLayer].forEach(function (g) {
      g.eachLayer(function (l) { if (l.gaKey === key) l.options.snapIgnore = true; });
    });
    layer.addTo(map);
    layer.pm.enable({snappable: true, snapDistance: 14, allowSelfIntersection: false, draggable: false,
                     removeVertexOn: "contextmenu"});
    var sent = JSON.stringify(layer.toGeoJSON(false).geometry.coordinates);
    var timer = null;
    layer.on("pm:edit", function () {
      // one drag can fire more than one edit event: send the outline once it has settled
      clearTimeout(timer);
      timer = setTimeout(function () {
        var gj = layer.toGeoJSON(false).geometry, now = JSON.stringify(gj.coordinates);
        if (now === sent) return;
        sent = now;
        reshape(key, gj);
      }, 30);
    });
    editing = {key: key, layer: layer};
  }
  function reshape(key, gj) {
    var t0 = performance.now();
    return act({type: "reshape", key: key, geometry: gj}, {t0: t0, quiet: true}).then(function (rec) {
      if (S.mode === "vertex" && editing && editing.key === key) editVertices(key);
      if (rec) {
        var r = S.lastResult || {};
        banner("已保存边界：" + esc(nameOf(key)) + (r.gained_m2 ? " 并入 " + GA.fmtInt(r.gained_m2) + " m²" : "") +
               (r.lost_m2 ? " 让出 " + GA.fmtInt(r.lost_m2) + " m²（归相邻单元）" : "") + "（可撤销 Ctrl+Z）", "ok", [
          {label: "完成", primary: true, aria: "结束边界编辑", onClick: function () { cancelVertex(); setMode("select"); }}]);
      }
      return rec;
    });
  }
  function cancelVertex() {
    if (!editing) return;
    editing.layer.pm.disable();
    map.removeLayer(editing.layer);
    editing = null;
    bannerEl.hidden = true;
  }

  // ---------------------------------------------------------------------------------------------- modes
  function setMode(m) {
    if (S.mode === m) { renderButtons(); return; }
    if (S.mode === "vertex") cancelVertex();
    stopDraw();
    S.mode = m;
    var el = document.getElementById("ga-map");
    el.className = el.className.replace(/\bga-mode-\S+/g, "").trim() + " ga-mode-" + m;
    if (m === "lasso" || m === "brush") map.dragging.disable(); else map.dragging.enable();
    if (m === "split" || m === "create") map.doubleClickZoom.disable(); else map.doubleClickZoom.enable();
    if ((m === "paint" || m === "lasso" || m === "brush") && !target() && selection().length) setTarget(selection()[0]);
    var tips = {
      select: "选择：点击网格选中，Shift+点击多选；选中后可合并、退役或编辑边界。",
      paint: "点选楼栋：点击楼栋划入目标网格（点击网格空白处可改目标）。勾选“整小区”则整个小区一起划入。",
      lasso: "套索：按住鼠标圈出一片楼栋，松开后一次划入目标网格。",
      brush: "笔刷：按住鼠标拖过楼栋，松开后一次划入目标网格。",
      split: "拆分：画一条穿过网格的线（单击加点，双击结束），网格沿线分成两块。",
      create: "新建：单击画多边形，点击起点结束；新网格从相邻网格中划出。",
      vertex: ""
    };
    if (tips[m]) hint(tips[m]);
    if (m === "split") startDraw("Line");
    if (m === "create") startDraw("Polygon");
    if (m === "vertex") startVertex();
    drawSelection(); renderButtons(); renderGridTable();
  }
  Array.prototype.forEach.call(document.querySelectorAll(".ga-tool"), function (b) {
    b.addEventListener("click", function () { setMode(b.getAttribute("data-mode")); });
  });

  // ------------------------------------------------------------------------------ merge, retire, suggest
  function merge() {
    var sel = selection();
    if (sel.length < 2) { hint("请按住 Shift 选择两个或多个" + unitWord() + "。"); return Promise.resolve(null); }
    var keys = sel.slice();
    setSelection([keys[0]]);
    return act({type: "merge", keys: keys});
  }
  document.getElementById("ga-merge").addEventListener("click", merge);

  function retire() {
    var sel = selection();
    if (!sel.length) return Promise.resolve(null);
    var key = sel[0];
    var into = sel[1] || "";
    var options = (inMicro() ? sortedMicro() : sortedGrids()).filter(function (k) { return k !== key; }).map(function (k) {
      return '<option value="' + k + '"' + (k === into ? " selected" : "") + ">" + esc(S.names[k]) + "</option>";
    }).join("");
    return GA.dialog({title: "退役 " + S.names[key], withInputs: true,
      html: '<label for="ga-into">它的区域并入</label><select id="ga-into" name="into"><option value="">不并入（留为空白，需另行处理）</option>' +
        options + "</select>",
      buttons: [{label: "取消", value: false}, {label: "退役", value: true, primary: true}]}).then(function (r) {
      if (!r || !r.value) return null;
      var op = {type: "retire", key: key};
      if (r.inputs.into) op.into = r.inputs.into;
      setSelection(r.inputs.into ? [r.inputs.into] : []);
      return act(op);
    });
  }
  document.getElementById("ga-retire").addEventListener("click", retire);

  function rename() {
    var sel = selection();
    if (sel.length !== 1) return Promise.resolve(null);
    var key = sel[0];
    return GA.dialog({title: "改名：" + S.names[key], withInputs: true,
      html: '<label for="ga-new-name">新名称</label><input id="ga-new-name" name="name" type="text" maxlength="100" value="' +
        esc(S.names[key]) + '"><p class="ga-muted">名称随边界版本保存：发布后生效，回滚该版本时恢复原名。</p>',
      buttons: [{label: "取消", value: false}, {label: "改名", value: true, primary: true}]}).then(function (r) {
      var name = r && r.value ? (r.inputs.name || "").trim() : "";
      if (!name || name === S.names[key]) return null;
      return act({type: "rename", key: key, name: name});
    });
  }
  document.getElementById("ga-rename").addEventListener("click", rename);
  document.getElementById("ga-level").addEventListener("click", function () {
    if (inMicro()) setLevel("grid");
    else if (S.selected.length === 1) setLevel("micro_grid", S.selected[0]);
    else hint("请先选中一个网格，再编辑它的微网格。");
  });
  document.getElementById("ga-undo").addEventListener("click", undo);
  document.getElementById("ga-redo").addEventListener("click", redo);

  function clearPreview() { S.preview = null; bannerEl.hidden = true; }
  function suggest() {
    return GA.dialog({title: "智能建议（ReCom）", withInputs: true,
      html: "<p>按户数区间 " + band[0] + "–" + band[1] + " 户重新划分综合网格（专属网格不变），作为一步操作应用到草稿，" +
        "预览后可保留或放弃。原有微网格需要在新网格内重画。</p>" +
        '<label for="ga-seed">随机种子（换一个数得到另一种划分）</label><input id="ga-seed" name="seed" type="text" value="0" inputmode="numeric">',
      buttons: [{label: "取消", value: false}, {label: "生成预览", value: true, primary: true}]}).then(function (r) {
      if (!r || !r.value) return null;
      var seed = parseInt(r.inputs.seed, 10) || 0;
      banner("正在计算建议（最长约 30 秒）…", null);
      var t0 = performance.now();
      return enqueue(function () {
        return GA.api("POST", API + "/suggest", {body: {seed: seed, apply: true}, ifMatch: S.etag}).then(function (res) {
          if (!res.ok) return failed(res, "智能建议");
          var out = res.data;
          if (!out.feasible || !out.applied) {
            banner("没有找到满足户数区间的划分：" + esc((out.reasons || []).join("；") || out.explanation || ""), "error");
            return null;
          }
          S.redo = [];
          return refresh(true).then(function (rr) {
            record("suggestion", t0, performance.now(), performance.now());
            S.preview = out;
            banner("建议预览：" + esc(out.explanation || "") + "（移动 " + GA.fmtInt(out.households_moved) + " 户，拆分小区 " +
                   GA.fmtInt(out.compounds_split) + " 个）", null, [
              {label: "保留建议", primary: true, aria: "保留智能建议", onClick: function () {
                clearPreview(); hint("已保留建议，可继续调整。"); }},
              {label: "放弃建议", aria: "放弃智能建议（撤销）", onClick: function () { clearPreview(); undo(); }}]);
            return rr;
          });
        });
      });
    });
  }
  document.getElementById("ga-suggest").addEventListener("click", suggest);

  // ------------------------------------------------------------------------------------------- publish
  function publish(allowErrors, label) {
    var v = S.validation || {errors: 0, warnings: 0};
    var ask = label !== undefined ? Promise.resolve({value: true, inputs: {label: label}}) : GA.dialog({
      title: "发布方案", withInputs: true,
      html: "<p>发布后，新边界立即生效（定位、分类按新边界回答），旧边界作为历史版本保留，可回滚。</p>" +
        "<p>校验：" + v.errors + " 个错误，" + v.warnings + " 个警告。" +
        (S.diff ? "换网格的楼栋 " + S.diff.totals.buildings + " 栋、" + S.diff.totals.households + " 户。" : "") + "</p>" +
        '<label for="ga-pub-label">版本名称</label><input id="ga-pub-label" name="label" type="text" maxlength="200" value="' +
        esc((S.plan && S.plan.label) || (DATA.plan.scope_name + " 网格调整")) + '">',
      buttons: [{label: "取消", value: false}, {label: "发布", value: true, primary: true}]});
    return ask.then(function (r) {
      if (!r || !r.value) return null;
      var name = r.inputs.label;
      // the answer is handled once the queue is free: it may ask again and publish once more
      return enqueue(function () {
        return GA.api("POST", API + "/publish", {body: {label: name || null, allow_errors: !!allowErrors},
                                                 ifMatch: S.etag});
      }).then(function (res) { return res ? published(res, name) : null; });
    });
  }
  function published(res, name) {
    var t = String((res.data || {}).type || "").split("/").pop();
    if (res.ok) {
      var out = res.data;
      S.status = "published";
      if (S.plan) S.plan.status = "published";
      setMode("select");
      renderButtons(); renderStatus();
      var g = out.grids || {};
      banner("已发布为版本 " + esc(out.version_id) + "（" + esc(GA.fmtTime(out.valid_from)) + " 起生效）：新建网格 " +
             (g.created || []).length + " 个，边界改动 " + (g.changed || []).length + " 个，结束 " + (g.ended || []).length +
             ' 个。<a href="/plans">返回方案列表</a>', "ok");
      document.getElementById("ga-plan-title").textContent = name || document.getElementById("ga-plan-title").textContent;
      return out;
    }
    if (res.status === 409 && t === "plan-not-publishable") {
      return GA.dialog({title: "方案仍有校验错误", html: "<p>" + esc(GA.explain(res)) + "</p><p>仍要发布吗？错误会随新边界一起生效。</p>",
                        buttons: [{label: "返回修改", value: false}, {label: "仍然发布", value: true, primary: true}]})
        .then(function (yes) { return yes ? publish(true, name) : null; });
    }
    if (res.status === 412 && t === "stale-version") {
      var ops = ((S.plan && S.plan.operations) || []).filter(function (o) { return !o.undone_at; });
      return GA.dialog({title: "发布被拒绝：边界已被他人更新",
        html: "<p>在您起草这份方案之后，" + esc(DATA.plan.scope_name) + " 的边界已经发布了新版本：</p><ul>" +
          GA.versionChanges(res.data.changes) + "</ul><p>为避免覆盖他人的改动，本方案没有发布。可以在最新边界上重建草稿：" +
          "重放本方案的 " + ops.length + " 项操作，冲突的操作会列出。</p>",
        buttons: [{label: "关闭", value: false},
                  {label: "在最新边界上重建草稿", value: true, primary: true, aria: "在最新边界上重建草稿并重放操作"}]})
        .then(function (yes) { return yes ? rebase(ops) : res; });
    }
    if (res.status === 412) { return failed(res, "发布"); }
    banner("发布失败：" + esc(GA.explain(res)), "error");
    return res;
  }

  /** A new draft on the boundaries in force now, with this plan's live operations applied in order. */
  function rebase(ops) {
    var body = {label: ((S.plan && S.plan.label) || "草稿 #" + DATA.plan.id) + "（重建）"};
    body[DATA.plan.scope === "street" ? "street_code" : "community_code"] = DATA.plan.scope_code;
    banner("正在重建草稿…", null);
    return GA.api("POST", "/v1/plans", {body: body}).then(function (res) {
      if (res.status !== 201) { banner("重建失败：" + esc(GA.explain(res)), "error"); return null; }
      var id = res.data.id, etag = res.data.etag, conflicts = [], chain = Promise.resolve();
      ops.forEach(function (o) {
        chain = chain.then(function () {
          return GA.api("POST", "/v1/plans/" + id + "/operations", {body: o.op, ifMatch: etag}).then(function (r) {
            if (r.ok) etag = r.data.etag || r.etag;
            else conflicts.push("<li>" + esc(describeOp(o.op)) + "：" + esc(explainOp(r)) + "</li>");
          });
        });
      });
      return chain.then(function () {
        return GA.dialog({title: "已在最新边界上重建草稿 #" + id,
          html: "<p>重放 " + ops.length + " 项操作，成功 " + (ops.length - conflicts.length) + " 项" +
            (conflicts.length ? "，冲突 " + conflicts.length + " 项：</p><ul>" + conflicts.join("") + "</ul>" : "。</p>"),
          buttons: [{label: "打开新草稿", value: true, primary: true}]}).then(function () {
          location.href = "/plans/" + id;
        });
      });
    });
  }
  document.getElementById("ga-publish").addEventListener("click", function () { publish(false); });

  // ------------------------------------------------------------------------------------------ keyboard
  document.addEventListener("keydown", function (e) {
    if (document.querySelector(".ga-dialog-wrap")) return;
    var tag = (e.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea") return;
    var mod = e.ctrlKey || e.metaKey;
    var k = e.key.toLowerCase();
    if (tag === "select" && !mod) return;  // typing picks an option there
    if (mod && k === "z") {
      e.preventDefault();
      if (map.pm && map.pm.Draw && map.pm.globalDrawModeEnabled && map.pm.globalDrawModeEnabled()) {
        var d = map.pm.Draw[S.mode === "split" ? "Line" : "Polygon"];
        if (d && d._removeLastVertex) { d._removeLastVertex(); return; }
      }
      if (e.shiftKey) redo(); else undo();
      return;
    }
    if (mod && k === "y") { e.preventDefault(); redo(); return; }
    if (mod || e.altKey) return;
    if (e.key === "Escape") { setMode("select"); return; }
    if (e.key === "Enter" && map.pm && (S.mode === "split" || S.mode === "create")) {
      var dr = map.pm.Draw[S.mode === "split" ? "Line" : "Polygon"];
      if (dr && dr._finishShape) { e.preventDefault(); dr._finishShape(); }
      return;
    }
    var keys = {v: "select", b: "paint", l: "lasso", r: "brush", s: "split", n: "create", e: "vertex"};
    if (keys[k] && S.canEdit && S.status === "draft") { setMode(keys[k]); e.preventDefault(); }
    else if (k === "v") setMode("select");
    else if (k === "m" && S.canEdit) { merge(); e.preventDefault(); }
  });

  // ----------------------------------------------------------------------------------------- start up
  function readOnlyNotice() {
    if (S.status !== "draft") banner("只读：这份方案" + (S.status === "published" ? "已发布" : "已作废") +
                                     '，不能再修改。<a href="/plans">返回方案列表</a>', null);
    else if (!S.canEdit) banner("只读：您的角色（" + esc(DATA.user.role) + "）可以查看方案，修改需要规划员或管理员。", null);
  }
  if (DATA.same_area && DATA.same_area.length) {
    var o = document.getElementById("ga-others");
    o.hidden = false;
    o.textContent = "同区域另有 " + DATA.same_area.length + " 份草稿：" + DATA.same_area.slice(0, 3).map(function (p) {
      return (p.created_by || "未知") + "（" + GA.fmtTime(p.updated_at) + "）";
    }).join("、");
    o.title = DATA.same_area.map(function (p) {
      return "#" + p.id + " " + (p.label || "") + " " + (p.created_by || "") + " " + GA.fmtTime(p.updated_at);
    }).join("\n");
  }
  renderButtons();
  var ready = loadAll().then(function () {
    S.readyAt = performance.now();
    // the drawing library is fetched once the page is usable, not before
    var idle = window.requestIdleCallback || function (f) { return setTimeout(f, 200); };
    if (S.canEdit && S.status === "draft") idle(function () { ensureGeoman(); });
  });

  /** For tests and benchmarks: the state, the map, and helpers to find things on screen. */
  window.gaEditor = {
    state: S, map: map, ready: ready, act: act, undo: undo, redo: redo, setMode: setMode, setTarget: setTarget,
    idle: function () { return S.chain.then(function () { return null; }); },
    ensureGeoman: ensureGeoman,
    pagePoint: function (lng, lat) {
      var p = map.latLngToContainerPoint([lat, lng]), r = container.getBoundingClientRect();
      return {x: r.left + p.x, y: r.top + p.y};
    },
    buildingPoint: function (id) {
      var f = bById[id];
      return window.gaEditor.pagePoint(f.properties.pt[0], f.properties.pt[1]);
    },
    gridLabelPoint: function (k) { return S.labelPts[k]; },
    figures: gridFigures,
    buildingPt: function (id) { return bById[id].properties.pt; },
    buildingFill: function (id) { return bLayers[id].options.fillColor; },
    owners: function () { return S.owner; },
    setLevel: setLevel,
    microFigures: function () { return inMicro() ? microFigures(S.parent) : null; }
  };
})();
