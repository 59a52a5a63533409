/* The heatmap page's part of the leaders' maps (/maps/heatmap): loaded before leadermap.js, which calls
 * window.GaHeat(core) once its map and overlay exist and then asks the returned hooks how to style, paint, list
 * and explain.
 *
 * The data (/maps/heatmap/data) is a sparse cube: parallel columns cell, month, cls, state, grid, n. A filter
 * change (month, class, status, display) adds the selected entries up again (no request) and repaints the
 * overlay tiles: hexagons on the server's lattice (centre = origin + q·step_q + r·step_r, corners = centre +
 * lattice.corners, all WGS-84, exact because the server's frame is affine in lon/lat) or the grids from the
 * vector tiles filled by their counts. Hot spots (Gi*) of the same filters are asked of /maps/heatmap/hotspots in
 * the background; a click lists the cell's or grid's incidents (/maps/heatmap/incidents). Text goes in with
 * textContent only.
 */
(function () {
  "use strict";
  window.GaHeat = function (core) {
    var map = core.map, cfg = core.cfg, state = core.state, TILE = core.TILE, $ = core.$;
    var H = {data: null, counts: null, gridCounts: null, breaks: [], hot: null, hotSeq: 0, hotReady: false,
             geo: {}, cellOf: {}, gridIndex: {}, gridOf: null, selected: null};
    state.month = ""; state.cls = ""; state.status = ""; state.mode = "hex";
    state.show = {heat: true, hot: true};

    // ------------------------------------------------------------ the lattice
    function centre(q, r) {
      var C = H.data.cube.lattice;
      return [C.origin[0] + q * C.step_q[0] + r * C.step_r[0], C.origin[1] + q * C.step_q[1] + r * C.step_r[1]];
    }
    function corners(q, r) {
      var c = centre(q, r);
      return H.data.cube.lattice.corners.map(function (k) { return [c[0] + k[0], c[1] + k[1]]; });
    }
    /** The axial cell holding a WGS-84 point: the lattice inverted, then cube rounding (axial is affine). */
    function cellAt(lon, lat) {
      var C = H.data.cube.lattice, a = C.step_q, b = C.step_r, dx = lon - C.origin[0], dy = lat - C.origin[1];
      var det = a[0] * b[1] - a[1] * b[0];
      var qf = (dx * b[1] - dy * b[0]) / det, rf = (a[0] * dy - a[1] * dx) / det, sf = -qf - rf;
      var q = Math.round(qf), r = Math.round(rf), s = Math.round(sf);
      var dq = Math.abs(q - qf), dr = Math.abs(r - rf), ds = Math.abs(s - sf);
      if (dq > dr && dq > ds) { q = -r - s; } else if (dr > ds) { r = -q - s; }
      return [q, r];
    }
    /** Per zoom: every cell's corners in global pixels and, per tile, the cells touching it. */
    function geoAt(z) {
      if (H.geo[z]) { return H.geo[z]; }
      var cells = H.data.cube.cells, n = cells.q.length, px = new Float64Array(n * 12), tiles = {};
      for (var i = 0; i < n; i++) {
        var cs = corners(cells.q[i], cells.r[i]), x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (var k = 0; k < 6; k++) {
          var p = map.project(L.latLng(cs[k][1], cs[k][0]), z);
          px[i * 12 + k * 2] = p.x; px[i * 12 + k * 2 + 1] = p.y;
          x0 = Math.min(x0, p.x); x1 = Math.max(x1, p.x); y0 = Math.min(y0, p.y); y1 = Math.max(y1, p.y);
        }
        for (var tx = Math.floor(x0 / TILE); tx <= Math.floor(x1 / TILE); tx++) {
          for (var ty = Math.floor(y0 / TILE); ty <= Math.floor(y1 / TILE); ty++) {
            (tiles[tx + ":" + ty] = tiles[tx + ":" + ty] || []).push(i);
          }
        }
      }
      H.geo[z] = {px: px, tiles: tiles};
      return H.geo[z];
    }
    function hexPath(ctx, pts, ox, oy, dpr) {
      ctx.beginPath();
      for (var k = 0; k < 6; k++) {
        var x = (pts[k * 2] - ox) * dpr, y = (pts[k * 2 + 1] - oy) * dpr;
        if (k === 0) { ctx.moveTo(x, y); } else { ctx.lineTo(x, y); }
      }
      ctx.closePath();
    }

    // ------------------------------------------------------------ filters: add the cube up
    function classOk() {
      var codes = H.data.cube.class_codes, out = new Uint8Array(codes.length), majors = {};
      H.data.classes.forEach(function (c) { majors[c.code] = c.major_code; });
      codes.forEach(function (code, i) { out[i] = !state.cls || code === state.cls || majors[code] === state.cls ? 1 : 0; });
      return out;
    }
    function stateOk() {
      var codes = H.data.cube.state_codes, out = new Uint8Array(codes.length), open = {};
      H.data.states.forEach(function (s) { open[s.code] = s.is_open; });
      codes.forEach(function (code, i) {
        var st = state.status;
        out[i] = !st || (st === "open" && open[code]) || (st === "closed" && !open[code]) || st === code ? 1 : 0;
      });
      return out;
    }
    function aggregate() {
      var C = H.data.cube.columns, nCells = H.data.cube.cells.q.length, nGrids = H.data.cube.grid_codes.length;
      var cells = new Float64Array(nCells), grids = new Float64Array(nGrids), co = classOk(), so = stateOk();
      var month = state.month === "" ? -1 : parseInt(state.month, 10), total = 0;
      for (var i = 0; i < C.n.length; i++) {
        if ((month < 0 || C.month[i] === month) && co[C.cls[i]] && so[C.state[i]]) {
          cells[C.cell[i]] += C.n[i]; grids[C.grid[i]] += C.n[i]; total += C.n[i];
        }
      }
      H.counts = cells; H.gridCounts = grids; H.total = total;
      var values = state.mode === "hex" ? Array.prototype.slice.call(cells) : H.data.grids.map(gridValue);
      H.breaks = breaksOf(values);
    }
    function gridValue(g) {
      var i = H.gridIndex[g.code], n = i === undefined ? 0 : H.gridCounts[i];
      if (state.mode !== "rate") { return n; }
      return g.households > 0 ? Math.round(n * 10000 / g.households) / 10 : null;
    }
    function breaksOf(values) {
      var SEQ = H.data.colours.sequential;
      var v = values.filter(function (x) { return x !== null && x > 0; }).sort(function (a, b) { return a - b; });
      var out = [];
      for (var i = 1; i < SEQ.length && v.length; i++) {
        var b = v[Math.min(v.length - 1, Math.floor(i * v.length / SEQ.length))];
        if (out.indexOf(b) < 0 && b < v[v.length - 1]) { out.push(b); }
      }
      return out;
    }
    function bin(x) { var i = 0; while (i < H.breaks.length && x > H.breaks[i]) { i++; } return i; }
    function colourOfValue(x) {
      if (x === null || !(x > 0)) { return null; }
      var i = bin(x);
      return state.hidden["b" + i] ? null : H.data.colours.sequential[Math.min(i, H.data.colours.sequential.length - 1)];
    }

    // ------------------------------------------------------------ painting (called per overlay tile)
    H.style = function (layer, props, z) {
      if (layer === "streets") { return {stroke: "#37474f", width: 2.5, dash: [8, 4]}; }
      if (layer === "communities") { return {stroke: "#0d47a1", width: z >= 14 ? 2.5 : 1.8}; }
      if (!H.data || state.mode === "hex" || !state.show.heat) { return {stroke: "#546e7a", width: z >= 14 ? 1 : 0.6}; }
      var g = H.gridByCode[props.code], fill = g ? colourOfValue(gridValue(g)) : null;
      return {fill: fill, alpha: z >= 15 ? 0.5 : 0.72, stroke: "#546e7a", width: z >= 14 ? 1 : 0.6};
    };
    /** Hexagons under the outlines. */
    H.paintUnder = function (ctx, rec) {
      if (!H.data || !H.counts || state.mode !== "hex" || !state.show.heat) { return; }
      var g = geoAt(rec.coords.z), list = g.tiles[rec.coords.x + ":" + rec.coords.y];
      if (!list) { return; }
      var ox = rec.coords.x * TILE, oy = rec.coords.y * TILE, dpr = rec.dpr;
      ctx.globalAlpha = rec.coords.z >= 16 ? 0.55 : 0.78;
      for (var j = 0; j < list.length; j++) {
        var i = list[j], colour = colourOfValue(H.counts[i]);
        if (!colour) { continue; }
        hexPath(ctx, g.px.subarray(i * 12, i * 12 + 12), ox, oy, dpr);
        ctx.fillStyle = colour; ctx.fill();
      }
      ctx.globalAlpha = 1;
    };
    /** Hot and cold spots and the selection over everything. */
    H.paintOver = function (ctx, rec) {
      if (!H.data) { return; }
      var z = rec.coords.z, ox = rec.coords.x * TILE, oy = rec.coords.y * TILE, dpr = rec.dpr;
      var x0 = ox - TILE, x1 = ox + 2 * TILE, y0 = oy - TILE, y1 = oy + 2 * TILE;
      function draw(q, r, stroke, width, fill) {
        var cs = corners(q, r), pts = new Float64Array(12);
        for (var k = 0; k < 6; k++) {
          var p = map.project(L.latLng(cs[k][1], cs[k][0]), z);
          pts[k * 2] = p.x; pts[k * 2 + 1] = p.y;
        }
        if (pts[0] < x0 || pts[0] > x1 || pts[1] < y0 || pts[1] > y1) { return; }
        hexPath(ctx, pts, ox, oy, dpr);
        if (fill) { ctx.globalAlpha = 0.55; ctx.fillStyle = fill; ctx.fill(); ctx.globalAlpha = 1; }
        ctx.setLineDash([]); ctx.strokeStyle = stroke; ctx.lineWidth = width * dpr; ctx.stroke();
      }
      if (state.show.hot && H.hot) {
        H.hot.items.forEach(function (h) {
          if (state.hidden["h" + h["class"]]) { return; }
          var colour = H.data.hotspot_colours[String(h["class"])];
          draw(h.q, h.r, colour, z >= 14 ? 3 : 2, state.show.heat ? null : colour);
        });
      }
      if (H.selected && H.selected.cell) { draw(H.selected.cell[0], H.selected.cell[1], "#00e5ff", 3.5, null); }
    };
    H.selectedKey = function () { return H.selected && H.selected.grid ? "grids:" + H.selected.grid : null; };

    // ------------------------------------------------------------ legend (visible layers only)
    function filterText() {
      var parts = [state.month === "" ? "全部月份" : H.data.cube.months[parseInt(state.month, 10)]];
      if (state.cls) { parts.push(className(state.cls)); }
      if (state.status) { parts.push(statusName(state.status)); }
      return parts.join(" · ");
    }
    function className(code) {
      var c = H.data.classes.filter(function (k) { return k.code === code; })[0];
      return c ? c.name : code;
    }
    function statusName(code) {
      var g = H.data.status_groups.filter(function (s) { return s.key === code; })[0];
      var s = H.data.states.filter(function (x) { return x.code === code; })[0];
      return g ? g.label : s ? s.name : code;
    }
    H.legendTitle = function () { return "事件热力 · " + filterText() + "（共 " + H.total.toLocaleString("zh-CN") + " 起）"; };
    H.legend = function () {
      var out = [], SEQ = H.data.colours.sequential;
      if (state.show.heat) {
        var unit = state.mode === "rate" ? "起/千户" : "起";
        out.push({head: state.mode === "hex" ? "六边形事件数（边长 " + H.data.cube.cell_m + " 米）"
                                             : state.mode === "rate" ? "网格每千户事件数" : "网格事件数"});
        var lo = state.mode === "rate" ? 0 : 1;
        for (var i = 0; i <= H.breaks.length; i++) {
          var hi = i < H.breaks.length ? H.breaks[i] : null;
          var text = hi === null ? "≥ " + lo : lo === hi ? String(hi) : lo + "–" + hi;
          out.push({key: "b" + i, colour: SEQ[Math.min(i, SEQ.length - 1)], label: text + " " + unit});
          if (hi !== null) { lo = state.mode === "rate" ? hi : hi + 1; }
        }
        if (!H.total) { out.push({head: "本期无事件"}); }
      }
      if (state.show.hot) {
        out.push({head: "冷热点 · 置信度（Gi*）" + (H.hotReady ? "" : " 计算中…"), note: H.data.method});
        var n = {};
        (H.hot ? H.hot.items : []).forEach(function (h) { n[h["class"]] = (n[h["class"]] || 0) + 1; });
        [3, 2, 1, -1, -2, -3].forEach(function (k) {
          var label = (k > 0 ? "热点 " : "冷点 ") + {1: 90, 2: 95, 3: 99}[Math.abs(k)] + "%";
          out.push({key: "h" + k, colour: H.data.hotspot_colours[String(k)], label: label + "：" + (n[k] || 0) + " 格",
                    note: H.data.method});
        });
      }
      return out;
    };

    // ------------------------------------------------------------ the hot-spot list
    H.head = ["冷热点", "所在网格", "网格编码", "事件数", "置信度与 z 值", "经度", "纬度"];
    H.listTitle = "冷热点清单";
    H.rows = function () {
      if (!state.show.hot || !H.hot) { return []; }
      return H.hot.items.filter(function (h) { return !state.hidden["h" + h["class"]]; }).map(function (h) {
        var i = H.cellOf[h.q + "," + h.r], g = i === undefined ? null : H.data.cube.grid_codes[H.gridOf[i]];
        var grid = g ? H.gridByCode[g] : null, half = H.data.cube.cell_m / 80000;
        var c = centre(h.q, h.r);
        return {item: {bbox: [c[0] - half, c[1] - half, c[0] + half, c[1] + half], hot: h}, key: "cell:" + h.q + "," + h.r,
                cells: [h.label, grid ? grid.name : "—", g || "", String(h.count),
                        (h["class"] > 0 ? "热点 " : "冷点 ") + "z = " + h.z + "，p = " + h.p, c[0].toFixed(6), c[1].toFixed(6)]};
      });
    };
    H.zoomTo = function (r) {
      var h = r.item.hot;
      map.fitBounds(L.latLngBounds(core.ll(r.item.bbox[0], r.item.bbox[1]), core.ll(r.item.bbox[2], r.item.bbox[3])),
                    {maxZoom: 16, padding: [60, 60]});
      showCell([h.q, h.r]);
    };

    // ------------------------------------------------------------ click-through: a cell's or a grid's incidents
    function params(extra) {
      var p = new URLSearchParams(cfg.query || "");
      if (state.month !== "") {
        var m = H.data.cube.months[parseInt(state.month, 10)];
        p.set("from", m); p.set("to", m);
      } else if (H.data.cube.from) {
        p.set("from", H.data.cube.from); p.set("to", H.data.cube.to);
      }
      p.set("cell_m", String(H.data.cube.cell_m));
      if (state.cls) { p.set("class", state.cls); } else { p.delete("class"); }
      if (state.status) { p.set("status", state.status); } else { p.delete("status"); }
      Object.keys(extra || {}).forEach(function (k) { p.set(k, extra[k]); });
      return p.toString();
    }
    var listSeq = 0;
    function showIncidents(title, extra) {
      var box = $("ga-info"), seq = ++listSeq;
      box.hidden = false; box.textContent = "";
      var h = document.createElement("h3"); h.textContent = title; box.appendChild(h);
      var p = document.createElement("p"); p.className = "muted"; p.textContent = "正在读取事件…"; box.appendChild(p);
      return fetch(cfg.incidents + "?" + params(extra), {credentials: "same-origin"}).then(function (r) {
        if (!r.ok) { throw new Error(String(r.status)); }
        return r.json();
      }).then(function (d) {
        if (seq !== listSeq) { return; }
        p.textContent = "共 " + d.total + " 起" + (d.total > d.items.length ? "，显示最近 " + d.items.length + " 起" : "") +
          "（" + filterText() + "）";
        var t = document.createElement("table"); t.className = "ga-incidents";
        var hr = t.createTHead().insertRow();
        ["类别", "上报时间", "状态", ""].forEach(function (x) { var th = document.createElement("th"); th.textContent = x; hr.appendChild(th); });
        var body = t.createTBody();
        d.items.forEach(function (it) {
          var tr = body.insertRow();
          [it.class_name, it.reported_at, it.state_name].forEach(function (x) { tr.insertCell().textContent = x; });
          var a = document.createElement("a"); a.href = it.href; a.target = "_blank"; a.rel = "noopener";
          a.textContent = "案件 " + it.id;
          tr.insertCell().appendChild(a);
        });
        box.appendChild(t);
        H.lastList = d;
      }).catch(function (e) { if (seq === listSeq) { p.textContent = "读取失败：" + e.message; } });
    }
    function showCell(cell) {
      H.selected = {cell: cell};
      core.overlay.repaint();
      var i = H.cellOf[cell[0] + "," + cell[1]], n = i === undefined ? 0 : H.counts[i];
      var hot = H.hot ? H.hot.items.filter(function (h) { return h.q === cell[0] && h.r === cell[1]; })[0] : null;
      return showIncidents("本格事件 " + n + " 起" + (hot ? " · " + hot.label : ""), {q: cell[0], r: cell[1]});
    }
    H.click = function (latlng, featureAt) {
      if (!H.data) { return true; }
      var w = core.fromMap(latlng);
      if (state.mode === "hex") {
        var cell = cellAt(w.lng, w.lat), i = H.cellOf[cell[0] + "," + cell[1]];
        var hot = H.hot && H.hot.items.some(function (h) { return h.q === cell[0] && h.r === cell[1]; });
        if (i !== undefined || hot) { showCell(cell); return true; }
      }
      var hit = featureAt(latlng);
      if (hit && hit.layer === "grids") {
        H.selected = {grid: hit.props.code};
        core.overlay.repaint();
        var g = H.gridByCode[hit.props.code], gi = H.gridIndex[hit.props.code];
        showIncidents((g ? g.name : hit.props.name || "") + " " + hit.props.code + " · 事件 " +
                      (gi === undefined ? 0 : H.gridCounts[gi]) + " 起" +
                      (g && g.households ? "，住户 " + g.households + " 户" : ""), {grid: hit.props.code});
        return true;
      }
      H.selected = null; core.overlay.repaint(); $("ga-info").hidden = true;
      return true;
    };
    H.gridLabel = function (g, z) {
      if (z < 16) { return null; }
      var i = H.gridIndex[g.code];
      return (i === undefined ? 0 : H.gridCounts[i]) + " 起";
    };

    // ------------------------------------------------------------ hot spots in the background
    var hotTimer = null;
    function fetchHot() {
      var seq = ++H.hotSeq;
      H.hotReady = false;
      clearTimeout(hotTimer);
      hotTimer = setTimeout(function () {
        fetch(cfg.hotspots + "?" + params(), {credentials: "same-origin"}).then(function (r) {
          if (!r.ok) { throw new Error(String(r.status)); }
          return r.json();
        }).then(function (d) {
          if (seq !== H.hotSeq) { return; }
          H.hot = d; H.hotReady = true;
          core.refresh();
        }).catch(function (e) {
          if (seq !== H.hotSeq) { return; }
          H.hot = {items: []}; H.hotReady = true;
          core.refresh();
          $("ga-list-count").textContent = "冷热点计算失败：" + e.message;
        });
      }, 120);
    }

    // ------------------------------------------------------------ data in, controls wired
    function option(select, value, text) {
      var o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o);
    }
    function keepUrl() {
      var u = new URL(location.href);
      [["month", state.month === "" ? "" : H.data.cube.months[parseInt(state.month, 10)]], ["class", state.cls],
       ["status", state.status], ["mode", state.mode === "hex" ? "" : state.mode]].forEach(function (kv) {
        if (kv[1]) { u.searchParams.set(kv[0], kv[1]); } else { u.searchParams.delete(kv[0]); }
      });
      history.replaceState(null, "", u.toString());
    }
    H.loaded = function (d) {
      H.data = d; H.geo = {}; H.cellOf = {}; H.gridIndex = {}; H.gridByCode = {};
      d.cube.cells.q.forEach(function (q, i) { H.cellOf[q + "," + d.cube.cells.r[i]] = i; });
      d.cube.grid_codes.forEach(function (c, i) { if (c) { H.gridIndex[c] = i; } });
      d.grids.forEach(function (g) { H.gridByCode[g.code] = g; });
      // each cell's grid: the grid most of its incidents were attributed to (for the hot-spot list)
      var C = d.cube.columns, best = {}, gridOf = new Int32Array(d.cube.cells.q.length).fill(-1);
      for (var i = 0; i < C.n.length; i++) {
        var k = C.cell[i] + ":" + C.grid[i];
        best[k] = (best[k] || 0) + C.n[i];
      }
      var top = {};
      Object.keys(best).forEach(function (k) {
        var p = k.split(":"), c = +p[0];
        if (d.cube.grid_codes[+p[1]] && (top[c] === undefined || best[k] > top[c])) { top[c] = best[k]; gridOf[c] = +p[1]; }
      });
      H.gridOf = gridOf;
      var url = new URLSearchParams(location.search), f = d.filters || {};
      var month = $("ga-month-select"), cls = $("ga-class"), st = $("ga-status");
      month.textContent = ""; cls.textContent = ""; st.textContent = "";
      option(month, "", "全部月份");
      month.title = "本页时段：" + (d.cube.months[0] || "—") + " 至 " + (d.cube.months[d.cube.months.length - 1] || "—");
      d.cube.months.forEach(function (m, i) { option(month, String(i), m); });
      option(cls, "", "全部类别");
      d.classes.forEach(function (c) { option(cls, c.code, (c.major_code ? "　" : "") + c.code + " " + c.name); });
      option(st, "", "全部状态");
      d.status_groups.forEach(function (s) { option(st, s.key, s.label); });
      d.states.forEach(function (s) { option(st, s.code, "　" + s.name); });
      var m0 = f.month || url.get("month");
      state.month = m0 && d.cube.months.indexOf(m0) >= 0 ? String(d.cube.months.indexOf(m0)) : "";
      state.cls = f["class"] || ""; state.status = f.status || "";
      state.mode = ["grid", "rate"].indexOf(url.get("mode")) >= 0 ? url.get("mode") : "hex";
      month.value = state.month; cls.value = state.cls; st.value = state.status; $("ga-mode").value = state.mode;
      $("ga-list-note").textContent = d.plain;
      $("ga-list-note").title = d.method;
      if (d.notes && d.notes.length) { $("ga-scope").textContent += " · " + d.notes.join("；"); }
      aggregate();
      if (H.started) { fetchHot(); }  // a reload of the data; the first waits for the first view (whenReady)
    };
    H.whenReady = function () { if (!H.started) { H.started = true; fetchHot(); } };
    H.refilter = function () { aggregate(); keepUrl(); };
    function changed(fn, hot) {
      return function (e) {
        var t0 = performance.now();
        fn(e.target); H.refilter(); core.refresh();
        window.gaMap.lastFilterMs = performance.now() - t0;  // the cube added up again and every tile repainted
        if (hot) { fetchHot(); }
      };
    }
    $("ga-month-select").addEventListener("change", changed(function (t) { state.month = t.value; }, true));
    $("ga-class").addEventListener("change", changed(function (t) { state.cls = t.value; }, true));
    $("ga-status").addEventListener("change", changed(function (t) { state.status = t.value; }, true));
    $("ga-mode").addEventListener("change", changed(function (t) {
      state.mode = t.value;
      Object.keys(state.hidden).forEach(function (k) { if (k.charAt(0) === "b") { delete state.hidden[k]; } });
    }, false));
    $("ga-show-heat").addEventListener("change", changed(function (t) { state.show.heat = t.checked; }, false));
    $("ga-show-hot").addEventListener("change", changed(function (t) { state.show.hot = t.checked; }, false));
    H.fetchHot = fetchHot;
    H.showCell = showCell;
    H.cellAt = cellAt;
    return H;
  };
})();
