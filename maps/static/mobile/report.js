/* The report form (/m/report): the point comes from the address bar (the page may be the cached copy of another
   point's form while offline) and is moved on the pin map (drag the pin, tap the map, search a compound or
   building, or the phone's position; the address bar follows, so a re-login comes back to the moved point); what
   is typed is saved as a draft on every keystroke (restored when the page opens again, e.g. after logging in
   anew), photos are compressed on the phone (JPEG <= 500 KB, at most 3) and kept with the draft, their EXIF
   position and time read first (offered as the report's position and time); 提交 puts the report in the outbox
   (queue.js) with its report time and sends the outbox. */
(function () {
  "use strict";
  var GA = window.GA, CFG = window.GA_REPORT;
  GA.setUser(CFG.username);
  var DRAFT_KEY = GA.scopedKey("gridatlas.report.draft"), MAX_PHOTOS = 3;  // per user (shared phones)
  var $ = function (id) { return document.getElementById(id); };
  var form = $("ga-form"), button = $("ga-submit"), statusBox = $("ga-status");
  var FIELDS = ["class_code", "source", "description", "address", "reporter", "reporter_phone"];
  var photos = [];  // [{blob, taken_at, name, lon, lat}]
  var reportedAt = null;  // the report time taken from a photo (null: when 提交 is pressed)

  // ------------------------------------------------------------------ the point
  var q = new URLSearchParams(location.search);
  var POINT = CFG.point;
  if (q.get("lon") && q.get("lat")) {
    var p = {lon: parseFloat(q.get("lon")), lat: parseFloat(q.get("lat")), coordsys: q.get("coordsys") || "wgs84"};
    if (Math.abs(p.lon - POINT.lon) > 1e-9 || Math.abs(p.lat - POINT.lat) > 1e-9 || p.coordsys !== POINT.coordsys) {
      // A cached form of another point: the server's preview is not this point's.
      POINT = p;
      $("ga-where").style.display = "none";
      button.disabled = false;
      $("ga-back").href = "/m?lon=" + p.lon + "&lat=" + p.lat + "&coordsys=" + p.coordsys;
      var where = "离线填写：位置 " + p.lon.toFixed(6) + ", " + p.lat.toFixed(6) + "。归属以联网提交后服务器的判断为准。";
      $("ga-offline-where").textContent = where;
      if (q.get("place") && !$("ga-address").value) $("ga-address").value = q.get("place");
      if (p.coordsys === "wgs84") {
        GA.drafts.get("pack").then(function (pack) {
          if (!pack) return;
          var b = GA.locateOffline(pack, p.lon, p.lat);
          if (b.grid) {
            $("ga-offline-where").textContent = where + " 按本机缓存的边界（" +
              (pack.version ? pack.version.label || pack.version.id : "?") + "）属于：" + b.grid.name +
              (b.community ? "（" + b.community.name + "）" : "") + "。";
          }
        }).catch(function () {});
      }
    }
  }

  function show(kind, text, link) {
    statusBox.className = "card " + kind;
    statusBox.textContent = text;
    if (link) {
      var a = document.createElement("a"); a.href = link.href; a.textContent = link.text;
      statusBox.appendChild(document.createTextNode(" ")); statusBox.appendChild(a);
    }
    if (statusBox.scrollIntoView) statusBox.scrollIntoView({block: "nearest"});
  }
  function loginLink() {
    return {href: "/login?next=" + encodeURIComponent(location.pathname + location.search), text: "重新登录"};
  }

  // ------------------------------------------------------------------ drafts
  function saveDraft() {
    var d = {point: POINT, saved_at: new Date().toISOString(), reported_at: reportedAt, user: CFG.username};
    FIELDS.forEach(function (f) { d[f] = form.elements[f].value; });
    try { localStorage.setItem(DRAFT_KEY, JSON.stringify(d)); } catch (e) { /* full: the IndexedDB copy remains */ }
    return GA.drafts.set("report", d).catch(function () {});
  }
  function savePhotos() { return GA.drafts.set("photos", photos).catch(function () {}); }
  /* A draft typed before drafts were kept per user: adopted by its own user, left alone for anyone else. */
  function legacyDraft() {
    var d = null;
    try { d = JSON.parse(localStorage.getItem("gridatlas.report.draft") || "null"); } catch (e) { d = null; }
    if (!d || d.user !== CFG.username) return Promise.resolve(null);
    try { localStorage.removeItem("gridatlas.report.draft"); } catch (e) { /* ignore */ }
    return Promise.all([GA.drafts.takeLegacy("report"), GA.drafts.takeLegacy("photos")]).then(function (old) {
      return Promise.all([GA.drafts.set("report", d), old[1] ? GA.drafts.set("photos", old[1]) : null]);
    }).then(function () { return d; }, function () { return d; });
  }
  function restoreDraft() {
    var d = null;
    try { d = JSON.parse(localStorage.getItem(DRAFT_KEY) || "null"); } catch (e) { d = null; }
    var fromIdb = d ? Promise.resolve(d) : GA.drafts.get("report").catch(function () { return null; })
      .then(function (v) { return v || legacyDraft(); });
    return fromIdb.then(function (draft) {
      if (draft && draft.user && draft.user !== CFG.username) return null;  // another worker's: left alone
      if (draft) FIELDS.forEach(function (f) { if (draft[f] != null && draft[f] !== "") form.elements[f].value = draft[f]; });
      if (draft && draft.reported_at) reportedAt = draft.reported_at;
      return GA.drafts.get("photos").catch(function () { return null; });
    }).then(function (saved) {
      if (saved && saved.length) { photos = saved; renderPhotos(); }
    });
  }
  function clearDraft() {
    try { localStorage.removeItem(DRAFT_KEY); } catch (e) { /* ignore */ }
    return Promise.all([GA.drafts.remove("report"), GA.drafts.remove("photos")]).catch(function () {});
  }
  form.addEventListener("input", saveDraft);
  form.addEventListener("change", function (ev) { if (ev.target.id !== "ga-photos") saveDraft(); });

  // ------------------------------------------------------------------ photos
  function renderPhotos() {
    var list = $("ga-photo-list"); list.textContent = "";
    photos.forEach(function (ph, i) {
      var fig = document.createElement("figure"), img = document.createElement("img");
      img.src = URL.createObjectURL(ph.blob); img.alt = "照片 " + (i + 1);
      var rm = document.createElement("button"); rm.type = "button"; rm.className = "remove"; rm.textContent = "×";
      rm.setAttribute("aria-label", "删除照片 " + (i + 1));
      rm.addEventListener("click", function () { photos.splice(i, 1); renderPhotos(); savePhotos(); });
      var cap = document.createElement("figcaption"); cap.textContent = Math.round(ph.blob.size / 1024) + " KB";
      fig.appendChild(img); fig.appendChild(rm); fig.appendChild(cap); list.appendChild(fig);
    });
    $("ga-photo-pick").style.display = photos.length >= MAX_PHOTOS ? "none" : "";
  }

  $("ga-photos").addEventListener("change", function (ev) {
    var files = Array.prototype.slice.call(ev.target.files || []);
    var room = MAX_PHOTOS - photos.length;
    if (files.length > room) show("warn", "每次上报最多 " + MAX_PHOTOS + " 张照片，多出的未添加。");
    files.slice(0, Math.max(0, room)).reduce(function (p, file) {
      return p.then(function () {
        // EXIF first: the compressed copy has none
        return GA.readExif(file).then(function (exif) {
          return GA.compressPhoto(file).then(function (blob) {
            var ph = {blob: blob, name: file.name, lon: exif.lon, lat: exif.lat, exif_time: exif.taken_at,
                      taken_at: exif.taken_at || (file.lastModified ? GA.localIso(new Date(file.lastModified)) : null)};
            photos.push(ph);
            offerExif(ph);
          }, function () { show("err", "无法读取照片：" + file.name); });
        });
      });
    }, Promise.resolve()).then(function () { renderPhotos(); savePhotos(); ev.target.value = ""; });
  });

  // ------------------------------------------------------------------ the photo's position and time (EXIF)
  function metres(a, b) {
    var k = Math.PI / 180, x = (b.lon - a.lon) * Math.cos((a.lat + b.lat) / 2 * k), y = b.lat - a.lat;
    return Math.round(Math.sqrt(x * x + y * y) * k * 6371008.8);
  }
  function offerExif(ph) {
    var box = $("ga-exif");
    if (ph.lon == null && !ph.exif_time) return;
    box.textContent = ""; box.hidden = false;
    var parts = [];
    if (ph.lon != null) {
      parts.push("拍摄位置 " + ph.lon.toFixed(6) + ", " + ph.lat.toFixed(6) +
                 (POINT.coordsys === "wgs84" ? "（距当前图钉 " + metres(POINT, ph) + " 米）" : ""));
    }
    if (ph.exif_time) parts.push("拍摄时间 " + ph.exif_time.slice(0, 16).replace("T", " "));
    box.appendChild(document.createTextNode("照片“" + ph.name + "”带有" + parts.join("，") + "。"));
    if (ph.lon != null) {
      var usePos = document.createElement("button"); usePos.type = "button"; usePos.id = "ga-exif-pos";
      usePos.className = "light"; usePos.textContent = "使用照片的位置";
      usePos.addEventListener("click", function () { movePoint(ph.lon, ph.lat, "照片的拍摄位置"); usePos.disabled = true; });
      box.appendChild(usePos);
    }
    if (ph.exif_time) {
      var useTime = document.createElement("button"); useTime.type = "button"; useTime.id = "ga-exif-time";
      useTime.className = "light"; useTime.textContent = "使用照片的时间作为上报时间";
      useTime.addEventListener("click", function () {
        reportedAt = ph.exif_time; saveDraft(); useTime.disabled = true;
        useTime.textContent = "上报时间：" + ph.exif_time.slice(0, 16).replace("T", " ");
      });
      box.appendChild(useTime);
    }
  }

  // ------------------------------------------------------------------ the pin (map, search, phone position)
  var pinMap = null, pin = null;
  function setText(id, value) { var e = $(id); if (e) e.textContent = value; }
  function showWhere(b) {
    var dl = $("ga-where-dl"); dl.textContent = "";
    function row(k, v, id) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k; dd.textContent = v; if (id) dd.id = id; dl.appendChild(dt); dl.appendChild(dd);
    }
    row("经纬度", POINT.lon.toFixed(6) + ", " + POINT.lat.toFixed(6) + "（WGS-84）", "ga-lonlat");
    if (b && b.grid) row("网格", (b.grid.name || b.grid.code) + "（" + b.grid.code + "）", "ga-grid");
    if (b && b.community) row("社区", b.community.name || b.community.code);
    if (b && b.street) row("街道", b.street.name || b.street.code);
    var warn = $("ga-where-warn"); warn.textContent = "";
    function note(text) { var p = document.createElement("p"); p.className = "warn"; p.textContent = text; warn.appendChild(p); }
    if (!b) note("离线：归属以联网提交后服务器的判断为准。");
    else if (!b.street) note("该位置不在本区任何街道内，无法上报。");
    else if (!b.grid) note("该位置不在任何网格内（网格空白区），将归属到社区/街道。");
    if (b && b.street && b.in_jurisdiction === false) note("该位置不在您的辖区内，提交会被拒绝。");
    button.disabled = !!b && !b.street;
  }
  function offlineWhere() {
    return GA.drafts.get("pack").then(function (pack) {
      if (!pack) return null;
      var b = GA.locateOffline(pack, POINT.lon, POINT.lat);
      return b.grid ? {grid: b.grid, community: b.community, street: b.street, in_jurisdiction: true, offline: true} : null;
    }).catch(function () { return null; });
  }
  function refreshWhere() {
    var url = "/v1/mobile/attribution?lon=" + POINT.lon + "&lat=" + POINT.lat + "&coordsys=wgs84";
    var asked = POINT;
    var answer = navigator.onLine ? fetch(url, {credentials: "same-origin",
                                                 headers: {"Accept": "application/json", "Accept-Language": "zh-CN"}})
      .then(function (r) { return r.ok ? r.json() : offlineWhere(); }, offlineWhere) : offlineWhere();
    return answer.then(function (b) {
      if (asked !== POINT) return;
      $("ga-where").style.display = ""; $("ga-offline-where").textContent = "";
      showWhere(b);
      if (b && b.offline) $("ga-where-warn").insertAdjacentHTML("afterbegin",
        '<p class="warn">离线：按本机缓存的辖区边界判断，以联网提交后服务器的判断为准。</p>');
    });
  }
  /* Move the report's point (WGS-84); `place` (a searched compound or building) becomes the address. */
  function movePoint(lon, lat, how, place) {
    POINT = {lon: Math.round(lon * 1e7) / 1e7, lat: Math.round(lat * 1e7) / 1e7, coordsys: "wgs84"};
    var params = new URLSearchParams(location.search);
    params.set("lon", POINT.lon); params.set("lat", POINT.lat); params.set("coordsys", "wgs84");
    if (place) { params.set("place", place); $("ga-address").value = place; }
    history.replaceState(null, "", location.pathname + "?" + params.toString());
    $("ga-back").href = "/m?lon=" + POINT.lon + "&lat=" + POINT.lat + "&coordsys=wgs84";
    if (pin) pin.setLatLng([POINT.lat, POINT.lon]);
    if (pinMap) pinMap.panTo([POINT.lat, POINT.lon]);
    setText("ga-pin-note", "位置已调整（" + how + "）。拖动图钉或点击地图可再调整。");
    saveDraft();
    return refreshWhere();
  }
  function loadPinMap() {
    var css = document.createElement("link"); css.rel = "stylesheet"; css.href = CFG.leaflet_css;
    document.head.appendChild(css);
    var js = document.createElement("script"); js.src = CFG.leaflet_js; js.async = true;
    js.onload = initPinMap;
    document.body.appendChild(js);
  }
  function initPinMap() {
    var L = window.L;
    pinMap = L.map("ga-pin-map", {attributionControl: false, maxZoom: 20});
    if (CFG.tile_url) L.tileLayer(CFG.tile_url, {maxZoom: 20}).addTo(pinMap);
    var icon = L.divIcon({className: "ga-pin", iconSize: [44, 44], iconAnchor: [22, 42],
      html: '<svg width="44" height="44" viewBox="0 0 44 44"><path d="M22 42C22 42 8 26 8 16a14 14 0 0 1 28 0c0 10-14 26-14 26z" ' +
            'fill="#d32f2f" stroke="#fff" stroke-width="2"/><circle cx="22" cy="16" r="5" fill="#fff"/></svg>'});
    function place(latlng) {
      pin = L.marker(latlng, {draggable: true, icon: icon, keyboard: false}).addTo(pinMap);
      pin.on("dragend", function () { var ll = pin.getLatLng(); movePoint(ll.lng, ll.lat, "拖动图钉"); });
    }
    pinMap.on("click", function (e) {
      if (!pin) place(e.latlng);
      movePoint(e.latlng.lng, e.latlng.lat, "地图点选");
    });
    GA.drafts.get("pack").then(function (pack) {
      if (!pack) return;
      pack.grids.forEach(function (g) {
        L.geoJSON({type: "MultiPolygon", coordinates: g.polygons},
                  {style: {color: "#1565c0", weight: 2, fill: false}, interactive: false}).addTo(pinMap);
      });
    }).catch(function () {});
    function start(lon, lat) { pinMap.setView([lat, lon], 18); place([lat, lon]); }
    if (POINT.coordsys === "wgs84") start(POINT.lon, POINT.lat);
    else {
      // the map is WGS-84: ask the server where the point lies in it
      fetch("/v1/mobile/attribution?lon=" + POINT.lon + "&lat=" + POINT.lat + "&coordsys=" + POINT.coordsys,
            {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (b) { if (b) start(b.lon, b.lat); else pinMap.setView([0, 0], 2); },
              function () { pinMap.setView([0, 0], 2); });
    }
  }
  GA.placeSearchBox($("ga-psearch"), $("ga-phits"), function (item) {
    movePoint(item.lon, item.lat, "搜索：" + item.label, item.label);
  });
  $("ga-gps").addEventListener("click", function () {
    if (!navigator.geolocation) { show("warn", "此浏览器不支持定位：请在地图上点选或搜索。"); return; }
    navigator.geolocation.getCurrentPosition(function (pos) {
      movePoint(pos.coords.longitude, pos.coords.latitude, "手机定位 ±" + Math.round(pos.coords.accuracy) + " 米");
    }, function (err) {
      show("warn", "无法获取位置（" + (err.code === 1 ? "未允许定位" : "定位失败") + "）：请在地图上点选或搜索小区、楼栋。");
    }, {enableHighAccuracy: true, timeout: 15000, maximumAge: 0});
  });

  // ------------------------------------------------------------------ the outbox
  function showOutbox() {
    return GA.outbox.mine().then(function (items) {
      $("ga-outbox").textContent = items.length ? "本机待提交的上报：" + items.length + " 条（最早 " +
        items[0].body.reported_at.replace("T", " ").slice(0, 16) + "）。联网且登录有效时按顺序自动提交。" : "";
    }).catch(function () {});
  }
  function send() {
    return GA.flushOutbox().then(function (r) {
      if (r.refused.length) show("err", "上报被拒绝：" + r.refused.join("；"));
      else if (r.left && r.status === 401) show("err", "登录已过期：上报已暂存在本机（" + r.left + " 条），重新登录后自动提交。", loginLink());
      else if (r.left) show("warn", "网络不可用，上报已暂存在本机（" + r.left + " 条），恢复网络后按顺序自动提交。");
      else if (r.sent.length) show("ok", "已提交暂存的上报 " + r.sent.length + " 条（事件编号 " + r.sent.join("、") + "）。");
      return showOutbox();
    });
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var f = new FormData(form);
    if (!f.get("class_code")) { show("err", "请选择事件类别。"); return; }
    var body = {lon: POINT.lon, lat: POINT.lat, coordsys: POINT.coordsys, class_code: f.get("class_code"),
                source: f.get("source"), description: f.get("description") || null,
                address: f.get("address") || null,
                reporter: f.get("reporter") || null, reporter_phone: f.get("reporter_phone") || null,
                reported_at: reportedAt || GA.localIso(new Date())};
    var item = {body: body, photos: photos.map(function (p) { return {blob: p.blob, taken_at: p.taken_at}; }),
                queued_at: new Date().toISOString(),
                class_name: (form.elements.class_code.selectedOptions[0] || {}).textContent || null};
    button.disabled = true;
    GA.outbox.add(item).then(function (seq) {
      item.seq = seq;
      var count = item.photos.length;
      photos = []; renderPhotos(); form.reset(); reportedAt = null; $("ga-exif").hidden = true;
      form.elements.reporter.value = CFG.username || "";
      return clearDraft().then(function () {
        var watch = {id: null, photos: count};
        // the id is known once the outbox sent it: look it up by seq after the flush
        return GA.flushOutbox().then(function (r) {
          return GA.outbox.all().then(function (items) {
            var still = items.some(function (i) { return i.seq === seq; });
            if (!still && r.sent.length) watch.id = r.sent[r.sent.length - 1];
            if (r.refused.length) show("err", "上报被拒绝：" + r.refused.join("；"));
            else if (watch.id) {
              var g = r.grids[watch.id];
              show("ok", "已上报，事件编号 " + watch.id + (g ? "，归属 " + g.name + "（" + g.code + "）" : "") +
                   (count ? "，照片 " + count + " 张" : "") + "。", {href: "/m/cases/" + watch.id, text: "查看事件"});
            }
            else if (r.status === 401) show("err", "登录已过期：上报已暂存在本机（" + r.left + " 条），重新登录后自动提交。", loginLink());
            else show("warn", "网络不可用，上报已暂存在本机（" + r.left + " 条），恢复网络后按顺序自动提交。");
            return showOutbox();
          });
        });
      });
    }).catch(function (e) { show("err", "保存失败：" + e); }).then(function () { button.disabled = false; });
  });

  window.addEventListener("online", function () { send(); });
  loadPinMap();
  if (navigator.onLine) GA.refreshPlaces();
  GA.registerServiceWorker();
  restoreDraft().then(function () { return navigator.onLine ? send() : showOutbox(); });
  window.gaReport = {queue: function () { return GA.outbox.items; }, outbox: GA.outbox.all,
                     flush: function () { return GA.flushOutbox().then(showOutbox); },
                     photos: function () { return photos; }, point: function () { return POINT; },
                     reportedAt: function () { return reportedAt; }, movePoint: movePoint};
})();
