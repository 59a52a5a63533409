/* The mobile locate page (/m): one glance (grid, match, grid chief and full-time worker with call buttons) first,
   the map (vendored Leaflet, loaded in parallel: the lookup never waits for it) and the whole chain below.
   Offline (or when the server cannot be reached) it answers from the cached jurisdiction pack and says so, with
   the pack's boundary version and download date; a tap clears the previous answer before anything else, so an
   old answer is never shown as the current one. Online, a point inside the cached jurisdiction is answered at
   once from the pack (marked 本机缓存, with its version date) and replaced by the server's answer when it arrives
   (#ga-glance data-source: cache → server; offline when the server cannot be reached). 我的上报 lists the
   worker's reports (the server's, kept for offline with their date, and the ones still queued: 待发送). */
(function () {
  "use strict";
  var CONFIG = window.GA_CONFIG, GA = window.GA;
  GA.setUser(CONFIG.username);
  var LEVELS = CONFIG.levels;
  var KEY_ROLES = [["grid_chief", "网格长"], ["grid_worker_fulltime", "专职网格员"]];
  var ROLE_FALLBACK = {grid: "网格", micro_grid: "微网格", building: "楼栋"};
  var $ = function (id) { return document.getElementById(id); };
  var statusEl = $("ga-status");
  var seq = 0, pack = null, map = null, outlineLayer = null, marker = null, pendingDraw = null;
  var place = null, ownPending = false, packReady = null;
  // Resolvers of the promises below: settled (the server's first answer or a refusal), shown (any answer on screen),
  // answered (the server's first answer).
  var firstDone = function () {}, shownDone = function () {}, answerDone = function () {};

  function status(text, cls) { statusEl.textContent = text || ""; statusEl.className = cls || ""; }
  function answered() { setTimeout(function () { firstDone(); answerDone(); }, 0); }
  function el(tag, cls, text) {
    var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e;
  }
  function telHref(phone) { return "tel:" + phone.replace(/[^0-9+]/g, ""); }
  function day(iso) { return iso ? iso.slice(0, 10) : "?"; }
  function stamp(iso) {
    if (!iso) return "?";
    var d = new Date(iso);
    return GA.localIso(d).slice(0, 16).replace("T", " ");
  }

  // ------------------------------------------------------------------ network badge
  function showNet() {
    var on = navigator.onLine, n = $("ga-net");
    n.textContent = on ? "在线" : "离线"; n.className = on ? "" : "off";
  }
  window.addEventListener("online", function () { showNet(); sendOutbox(); });
  window.addEventListener("offline", showNet);
  showNet();

  // ------------------------------------------------------------------ the answer
  function clearAnswer(text) {
    source("");
    var name = $("ga-grid-name");
    name.textContent = text; name.className = "pending";
    $("ga-grid-sub").textContent = "";
    var m = $("ga-match"); m.textContent = ""; m.className = "";
    $("ga-key").textContent = "";
    setChain(null); setStaff(null);
    $("ga-where").textContent = "";
    var a = $("ga-report"); a.className = "report disabled";
  }

  function setChain(found) {
    LEVELS.forEach(function (pair) {
      var v = document.querySelector('#ga-chain li[data-level="' + pair[0] + '"] .v');
      var unit = found ? found[pair[0]] : null;
      v.textContent = "";
      if (unit) {
        v.className = "v";
        v.appendChild(document.createTextNode(unit.name || ("#" + unit.id)));
        if (unit.code) v.appendChild(el("span", "code", unit.code));
      } else {
        v.className = "v none"; v.textContent = found && found.offline && pair[0] !== "street" &&
          pair[0] !== "community" && pair[0] !== "grid" ? (found.cached ? "联网确认中…" : "离线时不显示") : "—";
      }
    });
  }

  function callButton(s) {
    if (s.phone) { var a = el("a", "call", "拨打"); a.href = telHref(s.phone); a.setAttribute("aria-label", "拨打 " + s.name + " " + s.phone); return a; }
    return el("span", "nophone", "电话未公示");
  }

  function setKey(staff) {
    var ul = $("ga-key"); ul.textContent = "";
    KEY_ROLES.forEach(function (pair) {
      var s = (staff || []).filter(function (x) { return x.role === pair[0] && x.target_type === "grid"; })[0];
      var li = el("li"); li.setAttribute("data-role", pair[0]);
      var who = el("span", "who");
      who.appendChild(el("span", "role", pair[1]));
      who.appendChild(el("span", "name", s ? s.name : "未登记"));
      if (s && s.phone) who.appendChild(el("span", "role", s.phone));
      li.appendChild(who);
      if (s) li.appendChild(callButton(s));
      ul.appendChild(li);
    });
  }

  function setStaff(staff) {
    var ul = $("ga-staff"); ul.textContent = "";
    if (!staff || !staff.length) {
      var li = el("li"); li.appendChild(el("span", "nophone", staff ? "暂无登记的负责人" : "尚未定位")); ul.appendChild(li); return;
    }
    staff.forEach(function (s) {
      var li = el("li"), who = el("span", null, s.name);
      who.appendChild(el("span", "role", (s.role_name || s.role) + " · " + (ROLE_FALLBACK[s.target_type] || s.target_type)));
      li.appendChild(who);
      if (s.phone) { var a = el("a", "tel", "拨打 " + s.phone); a.href = telHref(s.phone); li.appendChild(a); }
      else li.appendChild(el("span", "nophone", "电话未公示"));
      ul.appendChild(li);
    });
  }

  function setMatch(found) {
    var m = $("ga-match");
    if (!found || !found.match) { m.textContent = ""; m.className = ""; return; }
    var text = {inside: "在网格内", boundary: "位于网格边界", nearest: "最近网格 " + Math.round(found.distance_m) + " 米"};
    m.textContent = text[found.match] || found.match;
    m.className = "badge " + found.match;
  }

  function setReport(lon, lat, enabled) {
    var a = $("ga-report");
    a.href = CONFIG.report_url + "?lon=" + lon.toFixed(7) + "&lat=" + lat.toFixed(7) + "&coordsys=wgs84" +
      (place ? "&place=" + encodeURIComponent(place) : "");
    a.className = enabled ? "report" : "report disabled";
  }

  function source(kind) { $("ga-glance").setAttribute("data-source", kind || ""); }

  function render(b, how) {
    var name = $("ga-grid-name");
    name.textContent = b.grid ? (b.grid.name || b.grid.code) : "不在任何网格内"; name.className = "";
    $("ga-grid-sub").textContent = [b.community && b.community.name, b.street && b.street.name]
      .filter(Boolean).join(" · ");
    setMatch(b); setChain(b); setKey(b.staff); setStaff(b.staff);
    var v = b.version ? "边界版本 " + (b.version.label || b.version.id) + "（" + day(b.version.valid_from) + " 起）" : "";
    $("ga-where").textContent = "位置（WGS-84）：" + b.lon.toFixed(6) + ", " + b.lat.toFixed(6) + "（" + how + "）" +
      (v ? " · " + v : "");
    setReport(b.lon, b.lat, true);
  }

  // ------------------------------------------------------------------ the map (never waited for)
  function loadMap() {
    if (CONFIG.map === false) return;
    var css = document.createElement("link"); css.rel = "stylesheet"; css.href = CONFIG.leaflet_css;
    document.head.appendChild(css);
    var js = document.createElement("script"); js.src = CONFIG.leaflet_js; js.async = true;
    js.onload = initMap;
    document.body.appendChild(js);
  }
  function initMap() {
    var L = window.L;
    // No fading: a replaced answer's labels go at once (faded ones linger 200 ms under the new ones).
    map = L.map("ga-map", {zoomControl: true, attributionControl: false, maxZoom: 20, fadeAnimation: false});
    if (CONFIG.tile_url) L.tileLayer(CONFIG.tile_url, {maxZoom: 20}).addTo(map);
    L.control.scale({imperial: false}).addTo(map);
    if (CONFIG.bounds) map.fitBounds([[CONFIG.bounds[1], CONFIG.bounds[0]], [CONFIG.bounds[3], CONFIG.bounds[2]]]);
    else map.setView([31.23, 121.47], 12);
    outlineLayer = L.layerGroup().addTo(map);
    map.on("click", function (e) { locate(e.latlng.lng, e.latlng.lat, "wgs84", "地图点选"); });
    if (pendingDraw) { var p = pendingDraw; pendingDraw = null; draw(p[0], p[1], p[2]); }
    else if (ownPending) drawOwn();
  }

  /* Location refused: the worker's own grids (from the cached pack) framed on the map, to tap. */
  function drawOwn() {
    ownPending = true;
    if (!map) return;
    Promise.resolve(packReady).then(loadPack).then(function (p) {
      if (!p || !p.grids.length || !ownPending) return;
      ownPending = false;
      var L = window.L, group = L.featureGroup();
      packFeatures().forEach(function (f) {
        L.geoJSON(f, {style: {color: "#d32f2f", weight: 3, fillColor: "#ef5350", fillOpacity: 0.06}, interactive: false})
          .addTo(group);
        var g = L.geoJSON(f);
        L.tooltip({permanent: true, direction: "center", className: "ga-label"})
          .setContent(f.properties.name || f.properties.code).setLatLng(g.getBounds().getCenter()).addTo(group);
      });
      outlineLayer.clearLayers();
      group.addTo(outlineLayer);
      map.fitBounds(group.getBounds(), {padding: [12, 12], maxZoom: 18});
    });
  }

  function styleFor(p, found) {
    var mine = found && found[p.level] && found[p.level].id === p.id;
    if (p.level === "grid") return {color: mine ? "#d32f2f" : "#1565c0", weight: mine ? 4 : 2, fill: mine,
                                    fillColor: "#ef5350", fillOpacity: 0.08};
    if (p.level === "micro_grid") return {color: mine ? "#e65100" : "#64b5f6", weight: mine ? 2 : 1,
                                          dashArray: "4 4", fill: false};
    if (p.level === "compound") return {color: "#2e7d32", weight: 1, fillColor: "#66bb6a", fillOpacity: mine ? 0.25 : 0.1};
    return {color: mine ? "#b71c1c" : "#757575", weight: mine ? 2 : 1, fillColor: mine ? "#e57373" : "#bdbdbd",
            fillOpacity: mine ? 0.7 : 0.45};
  }

  function packFeatures(lon, lat) {
    if (!pack) return [];
    return pack.grids.map(function (g) {
      return {type: "Feature", properties: {level: "grid", id: g.id, code: g.code, name: g.name},
              geometry: {type: "MultiPolygon", coordinates: g.polygons}};
    });
  }

  var drawn = 0;  // the latest draw: an earlier one still loading (the cached answer's) never draws over it
  function draw(lon, lat, found) {
    if (!map) { pendingDraw = [lon, lat, found]; return; }
    var L = window.L, mineDraw = ++drawn;
    if (marker) marker.remove();
    marker = L.circleMarker([lat, lon], {radius: 9, color: "#fff", weight: 2, fillColor: "#d32f2f", fillOpacity: 1}).addTo(map);
    var source = found && found.offline ? Promise.resolve({features: packFeatures(lon, lat)}) :
      fetch(CONFIG.outlines_url + "?lon=" + lon + "&lat=" + lat + "&radius_m=" + CONFIG.radius_m + "&coordsys=wgs84",
            {credentials: "same-origin"}).then(function (r) { if (!r.ok) throw new Error("outlines " + r.status); return r.json(); });
    source.then(function (fc) {
      if (mineDraw !== drawn) return;
      outlineLayer.clearLayers();
      var order = {compound: 0, grid: 1, micro_grid: 2, building: 3}, focus = null, labels = [];
      fc.features.sort(function (a, b) { return order[a.properties.level] - order[b.properties.level]; });
      fc.features.forEach(function (f) {
        var layer = L.geoJSON(f, {style: function (feat) { return styleFor(feat.properties, found); }, interactive: false});
        layer.addTo(outlineLayer);
        if (f.properties.level === "grid" && !labels.some(function (l) { return l.id === f.properties.id; })) {
          var mine = found && found.grid && found.grid.id === f.properties.id;
          if (mine) focus = layer;
          labels.push({layer: layer, id: f.properties.id, name: f.properties.name || f.properties.code, mine: mine});
        }
      });
      // No animation: the labels below are measured where they end up, not mid-zoom.
      if (focus) map.fitBounds(focus.getBounds(), {padding: [16, 16], maxZoom: 18, animate: false});
      else map.setView([lat, lon], 17, {animate: false});
      // Labels: the own grid's always, the others' only where they do not overlap one already placed (measured as
      // drawn: names differ in length and the font is the phone's).
      var placed = [];
      labels.sort(function (a, b) { return (b.mine ? 1 : 0) - (a.mine ? 1 : 0); }).forEach(function (l) {
        var t = L.tooltip({permanent: true, direction: "center", className: "ga-label"}).setContent(l.name)
          .setLatLng(l.layer.getBounds().getCenter()).addTo(outlineLayer);
        var node = t.getElement();
        if (!node) return;
        var r = node.getBoundingClientRect();
        var clash = placed.some(function (q) { return r.left < q.right && r.right > q.left && r.top < q.bottom && r.bottom > q.top; });
        if (clash && !l.mine) { outlineLayer.removeLayer(t); return; }
        placed.push(r);
      });
      // What the map shows now: the server's outlines, or the cached pack's (for the cached or offline answer).
      $("ga-map").setAttribute("data-drawn", found && found.offline ? (found.cached ? "cache" : "offline") : "server");
    }).catch(function () { /* the answer is already shown; the outlines are a bonus */ });
  }

  // ------------------------------------------------------------------ locate
  function offlineAnswer(lon, lat, how, mine) {
    return loadPack().then(function (p) {
      if (mine !== seq) return;
      if (!p) {
        clearAnswer("无法定位");
        status("网络不可用，本机也没有缓存的辖区边界（登录后联网打开一次本页即可缓存）。", "err");
        return;
      }
      var b = GA.locateOffline(p, lon, lat);
      var ageH = (Date.now() - new Date(p.generated_at).getTime()) / 3.6e6;
      var v = p.version ? "边界版本 " + (p.version.label || p.version.id) + "（" + day(p.version.valid_from) + " 起）" : "";
      var note = "离线结果：按本机缓存的辖区边界，" + v + "，数据下载于 " + stamp(p.generated_at) +
        (ageH > 24 ? "（已超过 " + Math.floor(ageH / 24) + " 天，可能已过期）" : "") + "。";
      if (!b.grid) {
        clearAnswer("不在缓存的辖区内");
        var near = b.nearest ? "最近的网格：" + b.nearest.grid.name + "（" + Math.round(b.nearest.distance_m) + " 米）。" : "";
        status(note + near, "warn");
        setReport(lon, lat, true);
        draw(lon, lat, b);
        return;
      }
      render(b, how + "，离线");
      source("offline");
      var m = $("ga-match"); m.textContent += "（离线）";
      status(note, ageH > 24 ? "err" : "warn");
      draw(lon, lat, b);
    });
  }

  function packNote(p) {
    var v = p.version ? "边界版本 " + (p.version.label || p.version.id) + "（" + day(p.version.valid_from) + " 起）" : "";
    return v + "；下载于 " + stamp(p.generated_at).slice(5);
  }

  /* The pack's answer while the server's is on its way (only inside the cached jurisdiction). */
  function cachedAnswer(lon, lat, how, mine, serverDone) {
    return loadPack().then(function (p) {
      if (mine !== seq || serverDone() || !p) return;
      var b = GA.locateOffline(p, lon, lat);
      if (!b.grid || b.match === "nearest") return;  // the server decides what is outside the cached grids
      b.cached = true;
      render(b, how + "，本机缓存");
      source("cache");
      var m = $("ga-match"); m.textContent += "（缓存）";
      status("本机缓存（" + packNote(p) + "），正在联网确认…", "warn");
      draw(lon, lat, b);
      shownDone();
    }).catch(function () {});
  }

  function locate(lon, lat, coordsys, how, placeName) {
    var mine = ++seq, serverDone = false;
    place = placeName || null;
    ownPending = false;
    clearAnswer("正在查询…");
    status("正在查询所在网格…");
    if ((coordsys || "wgs84") === "wgs84") cachedAnswer(lon, lat, how, mine, function () { return serverDone; });
    var url = CONFIG.locate_url + "?lon=" + lon + "&lat=" + lat + "&coordsys=" + (coordsys || "wgs84");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json", "Accept-Language": "zh-CN"}})
      .then(function (r) {
        return r.json().then(function (body) { return {ok: r.ok, status: r.status, body: body}; });
      }).then(function (res) {
        if (mine !== seq) return;
        serverDone = true;
        var b = res.body;
        if (res.ok) {
          render(b, how);
          source("server");
          status(b.match === "nearest" ? "不在任何网格内，已归入最近的网格（" + Math.round(b.distance_m) + " 米）" : "",
                 b.match === "nearest" ? "warn" : "");
          draw(b.lon, b.lat, b);
        } else if (res.status === 404 && typeof b.lon === "number") {
          clearAnswer("不在任何网格内");
          setReport(b.lon, b.lat, true);
          $("ga-where").textContent = "位置（WGS-84）：" + b.lon.toFixed(6) + ", " + b.lat.toFixed(6) + "（" + how + "）";
          var near = b.nearest_grid ? "最近的网格：" + b.nearest_grid.name + "（" + Math.round(b.distance_m) + " 米）" : "";
          status("该位置不在任何网格内。" + near, "err");
          draw(b.lon, b.lat, null);
        } else if (res.status >= 500 && (coordsys || "wgs84") === "wgs84") {
          return offlineAnswer(lon, lat, how, mine);
        } else {
          clearAnswer("查询失败");
          status((b && b.detail) || ("查询失败（" + res.status + "）"), "err");
        }
      }, function () {
        if (mine !== seq) return;
        serverDone = true;  // the pack's answer below is marked offline, not 正在联网确认
        if ((coordsys || "wgs84") !== "wgs84") { clearAnswer("无法定位"); status("网络不可用，无法查询", "err"); return; }
        return offlineAnswer(lon, lat, how, mine);
      }).then(answered, answered);
  }

  function fromDevice() {
    if (!navigator.geolocation) { status("此浏览器不支持定位：请点击地图选择位置", "warn"); return; }
    seq++;
    clearAnswer("正在定位…");
    status("正在获取位置…");
    navigator.geolocation.getCurrentPosition(function (pos) {
      locate(pos.coords.longitude, pos.coords.latitude, "wgs84", "设备定位 ±" + Math.round(pos.coords.accuracy) + " 米");
    }, function (err) {
      clearAnswer("未能定位");
      answered();
      var signedIn = !!CONFIG.pack_url;
      status("无法获取位置（" + (err.code === 1 ? "未允许定位" : "定位失败") + "）：" +
             (signedIn ? "请搜索小区、楼栋，或在地图上点击您的网格内的位置" : "请点击地图选择位置"), "warn");
      if (signedIn) { showSearch(); drawOwn(); }
    }, {enableHighAccuracy: true, timeout: 15000, maximumAge: 0});
  }

  // ------------------------------------------------------------------ the jurisdiction pack
  function loadPack() {
    if (pack) return Promise.resolve(pack);
    return GA.drafts.get("pack").then(function (p) { pack = p || null; return pack; }, function () { return null; });
  }
  function refreshPack() {
    if (!CONFIG.pack_url) return Promise.resolve(null);
    return fetch(CONFIG.pack_url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) return null;
        pack = p;
        $("ga-pack").textContent = "已缓存辖区 " + p.grids.length + " 个网格，" +
          (p.version ? "边界版本 " + (p.version.label || p.version.id) + "，" : "") + "下载于 " + stamp(p.generated_at) + "。";
        return GA.drafts.set("pack", p).then(function () { return p; });
      }).catch(function () { return null; });
  }

  function sendOutbox() {
    if (!navigator.onLine) return;
    GA.flushOutbox().then(function (r) {
      if (r.sent.length) refreshMine();
      if (r.sent.length) status("已自动提交暂存的上报 " + r.sent.length + " 条（事件编号 " + r.sent.join("、") + "）。", "");
    }).catch(function () {});
  }

  /* Whether the signed-in user is the one this page was made for (true also when that cannot be known now). */
  function checkUser() {
    // An anonymous page keeps nothing per user; a signed-in one asks (a 401 there is an expired session: kept).
    if (!navigator.onLine || !CONFIG.username) return Promise.resolve(true);
    return fetch("/v1/auth/me", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (me) {
        if (me && me.username !== (CONFIG.username || null)) { reloadOnce(); return false; }
        return true;
      }, function () { return true; });
  }

  /* A reload for another user's page, at most once a minute (a page that cannot be refreshed must not loop). */
  function reloadOnce() {
    var last = 0;
    try { last = +sessionStorage.getItem("ga-user-reload") || 0; } catch (e) { /* private mode */ }
    if (Date.now() - last < 60000) return;
    try { sessionStorage.setItem("ga-user-reload", String(Date.now())); } catch (e) { /* private mode */ }
    location.reload();
  }

  // ------------------------------------------------------------------ 我的上报 (the worker's own reports)
  function when(iso) { return iso ? stamp(iso) : "?"; }
  function showMine(list) {
    var ul = $("ga-mine"), note = $("ga-mine-note");
    if (!ul) return Promise.resolve(null);
    var got = list ? Promise.resolve(list) : GA.drafts.get("reports").catch(function () { return null; });
    return Promise.all([got, GA.user ? GA.outbox.mine() : Promise.resolve([])]).then(function (both) {
      var server = both[0], queued = both[1] || [], rows = [];
      queued.forEach(function (item) {
        if (!item.body) return;  // 处置照片 of a case: not a report of its own
        rows.push({id: item.incident_id || null, queued: true, state_name: "待发送", class_name: item.class_name ||
                   item.body.class_code, reported_at: item.body.reported_at, photos: (item.photos || []).length,
                   handling_photos: 0, place: item.body.address});
      });
      var sent = {};
      queued.forEach(function (item) { if (item.incident_id) sent[item.incident_id] = true; });
      ((server && server.items) || []).forEach(function (r) {
        if (!sent[r.id]) rows.push({id: r.id, queued: false, state_name: r.state_name, class_name: r.class_name,
                                    reported_at: r.reported_at, photos: r.photos, handling_photos: r.handling_photos,
                                    place: r.address || r.grid_name});
      });
      rows.sort(function (a, b) { return new Date(b.reported_at) - new Date(a.reported_at); });
      ul.textContent = "";
      if (!rows.length) { ul.appendChild(el("li", "nophone", server ? "暂无上报" : "联网后显示")); }
      rows.forEach(function (r) {
        var li = el("li"), box = el(r.id ? "a" : "div", "case");
        if (r.id) box.href = "/m/cases/" + r.id;
        li.setAttribute("data-id", r.id || "");
        var top = el("span", "case-top");
        top.appendChild(el("span", "case-class", r.class_name || ""));
        top.appendChild(el("span", "state" + (r.queued ? " queued" : ""), r.state_name));
        box.appendChild(top);
        var meta = [when(r.reported_at), "照片 " + r.photos + " 张"];
        if (r.handling_photos) meta.push("处置照片 " + r.handling_photos + " 张");
        if (r.id) meta.push("编号 " + r.id);
        box.appendChild(el("span", "case-meta", meta.join(" · ")));
        if (r.place) box.appendChild(el("span", "case-meta", r.place));
        li.appendChild(box);
        ul.appendChild(li);
      });
      note.textContent = server ? (server.offline ? "离线：显示 " + when(server.generated_at) + " 获取的列表" :
        "更新于 " + when(server.generated_at)) + (server.total > server.items.length ?
        "（共 " + server.total + " 条，显示最新 " + server.items.length + " 条）" : "") : "";
      return rows;
    });
  }
  function refreshMine() {
    if (!CONFIG.pack_url) return showMine();
    return fetch("/v1/mobile/reports", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error("reports " + r.status); return r.json(); })
      .then(function (list) {
        return GA.drafts.set("reports", list).then(function () { return showMine(list); });
      })
      .catch(function () {
        return GA.drafts.get("reports").then(function (list) {
          if (list) list.offline = true;
          return showMine(list || null);
        }).catch(function () { return showMine(null); });
      });
  }

  // ------------------------------------------------------------------ place search (小区、楼栋)
  function showSearch() { $("ga-search-card").hidden = false; }
  if (CONFIG.pack_url) {
    $("ga-find").addEventListener("click", function () {
      var card = $("ga-search-card");
      card.hidden = !card.hidden;
      if (!card.hidden) $("ga-q").focus();
    });
    GA.placeSearchBox($("ga-search"), $("ga-hits"), function (item) {
      locate(item.lon, item.lat, "wgs84", "搜索：" + item.label, item.label);
    });
    $("ga-logout").hidden = false;
    $("ga-logout").addEventListener("click", function () {
      GA.logout().then(function () { location.href = "/login?next=%2Fm"; });
    });
  } else {
    $("ga-find").hidden = true;
  }

  $("ga-locate").addEventListener("click", fromDevice);
  var asked = new URLSearchParams(location.search), start = CONFIG.start;
  if (!start && asked.get("lon") && asked.get("lat")) {  // the kept /m opened offline for a point in its address
    start = {lon: parseFloat(asked.get("lon")), lat: parseFloat(asked.get("lat")), coordsys: asked.get("coordsys") || "wgs84"};
  }
  if (start && isFinite(start.lon) && isFinite(start.lat)) locate(start.lon, start.lat, start.coordsys, "链接位置");
  else fromDevice();
  // On a slow line the answer goes first: the map library, the jurisdiction pack and the places wait for the
  // first answer (or a refusal, or 4 s), so they do not share the line with the lookup.
  // The map comes from the service worker's cache on a repeat visit: it may draw as soon as the pack has answered.
  var settled = new Promise(function (resolve) { firstDone = resolve; setTimeout(resolve, 4000); });
  var shown = new Promise(function (resolve) { shownDone = resolve; settled.then(resolve); });
  // The page may be the service worker's copy of another user's /m (a shared phone): asked once, after the answer.
  var same = settled.then(checkUser);
  packReady = same.then(function (ok) { return ok ? refreshPack() : null; });
  shown.then(loadMap);
  var listed = same.then(function (ok) { return ok && CONFIG.pack_url ? refreshMine() : showMine(); });
  window.gaPage = {ready: Promise.all([packReady, CONFIG.pack_url ? settled.then(GA.refreshPlaces) : null, listed]),
                   locate: locate, loadPack: loadPack, mine: refreshMine};
  // Installing the service worker downloads the shell (~130 KB): after the first answer, not competing with it
  // (on a slow line the 4 s of `settled` can pass before it), or after 15 s without one.
  new Promise(function (resolve) { answerDone = resolve; setTimeout(resolve, 15000); }).then(GA.registerServiceWorker);
  if (navigator.serviceWorker) {
    navigator.serviceWorker.addEventListener("message", function (ev) {
      // The service worker refreshed /m and it is another user's now (a shared phone): start over as them.
      if (ev.data && ev.data.type === "ga-user" && decodeURIComponent(ev.data.user) !== (CONFIG.username || "")) {
        reloadOnce();
      }
    });
  }
  window.addEventListener("ga-other-user", reloadOnce);
  same.then(function (ok) { if (ok) sendOutbox(); });
})();
