/* The report form (/m/report): the point comes from the address bar (the page may be the cached copy of another
   point's form while offline), what is typed is saved as a draft on every keystroke (restored when the page opens
   again, e.g. after logging in anew), photos are compressed on the phone (JPEG <= 500 KB, at most 3) and kept
   with the draft; 提交 puts the report in the outbox (queue.js) with its report time and sends the outbox. */
(function () {
  "use strict";
  var GA = window.GA, CFG = window.GA_REPORT;
  var DRAFT_KEY = "gridatlas.report.draft", MAX_PHOTOS = 3, MAX_BYTES = 500 * 1024, MAX_SIDE = 1600;
  var $ = function (id) { return document.getElementById(id); };
  var form = $("ga-form"), button = $("ga-submit"), statusBox = $("ga-status");
  var FIELDS = ["class_code", "source", "description", "reporter", "reporter_phone"];
  var photos = [];  // [{blob, taken_at, name}]

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
    var d = {point: POINT, saved_at: new Date().toISOString()};
    FIELDS.forEach(function (f) { d[f] = form.elements[f].value; });
    try { localStorage.setItem(DRAFT_KEY, JSON.stringify(d)); } catch (e) { /* full: the IndexedDB copy remains */ }
    return GA.drafts.set("report", d).catch(function () {});
  }
  function savePhotos() { return GA.drafts.set("photos", photos).catch(function () {}); }
  function restoreDraft() {
    var d = null;
    try { d = JSON.parse(localStorage.getItem(DRAFT_KEY) || "null"); } catch (e) { d = null; }
    var fromIdb = d ? Promise.resolve(d) : GA.drafts.get("report").catch(function () { return null; });
    return fromIdb.then(function (draft) {
      if (draft) FIELDS.forEach(function (f) { if (draft[f] != null && draft[f] !== "") form.elements[f].value = draft[f]; });
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
  function loadImage(file) {
    return new Promise(function (resolve, reject) {
      var url = URL.createObjectURL(file), img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { URL.revokeObjectURL(url); reject(new Error("not an image")); };
      img.src = url;
    });
  }
  function toBlob(canvas, quality) {
    return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", quality); });
  }
  /* A JPEG of at most MAX_BYTES: scaled to MAX_SIDE, then lower quality, then smaller, until it fits. */
  GA.compressPhoto = function (file) {
    return loadImage(file).then(function (img) {
      var scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
      function attempt(scale, quality) {
        var c = document.createElement("canvas");
        c.width = Math.max(1, Math.round(img.naturalWidth * scale));
        c.height = Math.max(1, Math.round(img.naturalHeight * scale));
        c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
        return toBlob(c, quality).then(function (blob) {
          if (blob.size <= MAX_BYTES) return blob;
          if (quality > 0.45) return attempt(scale, quality - 0.15);
          return attempt(scale * 0.75, 0.7);
        });
      }
      return attempt(scale, 0.82).then(function (blob) { URL.revokeObjectURL(img.src); return blob; });
    });
  };

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
        return GA.compressPhoto(file).then(function (blob) {
          photos.push({blob: blob, name: file.name, taken_at: file.lastModified ? GA.localIso(new Date(file.lastModified)) : null});
        }, function () { show("err", "无法读取照片：" + file.name); });
      });
    }, Promise.resolve()).then(function () { renderPhotos(); savePhotos(); ev.target.value = ""; });
  });

  // ------------------------------------------------------------------ the outbox
  function showOutbox() {
    return GA.outbox.all().then(function (items) {
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
                reporter: f.get("reporter") || null, reporter_phone: f.get("reporter_phone") || null,
                reported_at: GA.localIso(new Date())};
    var item = {body: body, photos: photos.map(function (p) { return {blob: p.blob, taken_at: p.taken_at}; }),
                queued_at: new Date().toISOString()};
    button.disabled = true;
    GA.outbox.add(item).then(function (seq) {
      item.seq = seq;
      var count = item.photos.length;
      photos = []; renderPhotos(); form.reset();
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
                   (count ? "，照片 " + count + " 张" : "") + "。");
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
  GA.registerServiceWorker();
  restoreDraft().then(function () { return navigator.onLine ? send() : showOutbox(); });
  window.gaReport = {queue: function () { return GA.outbox.items; }, outbox: GA.outbox.all,
                     flush: function () { return GA.flushOutbox().then(showOutbox); },
                     photos: function () { return photos; }};
})();
