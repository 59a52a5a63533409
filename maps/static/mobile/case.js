/* The case page (/m/cases/{id}): 处置照片, the "after" evidence of a handled case. Each picked photo is compressed
   like a report's (photos.js), keeps its EXIF time as taken_at, and goes through the same outbox as reports
   (queue.js: an item naming its incident only sends its photos, stage "handling"), so a photo taken without
   signal or with an expired session is sent later; once everything is sent the page reloads to list it. */
(function () {
  "use strict";
  var GA = window.GA, CFG = window.GA_CASE;
  GA.setUser(CFG.username);
  var $ = function (id) { return document.getElementById(id); };
  var input = $("ga-after-photos"), statusBox = $("ga-status");

  function show(kind, text, link) {
    statusBox.className = kind; statusBox.textContent = text;
    if (link) {
      var a = document.createElement("a"); a.href = link.href; a.textContent = link.text;
      statusBox.appendChild(document.createTextNode(" ")); statusBox.appendChild(a);
    }
  }
  function send() {
    return GA.flushOutbox().then(function (r) {
      if (r.refused.length) show("err", "照片被拒绝：" + r.refused.join("；"));
      else if (r.left && r.status === 401) {
        show("err", "登录已过期：照片已暂存在本机，重新登录后自动提交。",
             {href: "/login?next=" + encodeURIComponent(location.pathname), text: "重新登录"});
      } else if (r.left) show("warn", "网络不可用，照片已暂存在本机，恢复网络后自动提交。");
      else if (r.sent.indexOf(CFG.incident_id) >= 0) { show("ok", "处置照片已提交。"); location.reload(); }
      return r;
    });
  }

  if (input) {
    input.addEventListener("change", function () {
      var files = Array.prototype.slice.call(input.files || []).slice(0, CFG.room);
      if (!files.length) return;
      show("warn", "正在压缩照片…");
      var photos = [];
      files.reduce(function (p, file) {
        return p.then(function () {
          return GA.readExif(file).then(function (exif) {
            return GA.compressPhoto(file).then(function (blob) {
              photos.push({blob: blob, stage: "handling",
                           taken_at: exif.taken_at || (file.lastModified ? GA.localIso(new Date(file.lastModified)) : null)});
            });
          });
        });
      }, Promise.resolve()).then(function () {
        input.value = "";
        var now = GA.localIso(new Date());
        return GA.outbox.add({incident_id: CFG.incident_id, photos: photos, queued_at: new Date().toISOString(),
                              body: {reported_at: now, kind: "handling"}});
      }).then(send).catch(function (e) { show("err", "无法读取照片：" + e); });
    });
  }
  window.addEventListener("online", send);
  GA.registerServiceWorker();
  if (navigator.onLine) send();
  window.gaCase = {outbox: GA.outbox.all, send: send};
})();
