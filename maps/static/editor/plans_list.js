/* /plans: create a draft (POST /v1/plans) and roll a published version back (POST /v1/versions/{id}/rollback). */
(function () {
  "use strict";
  var GA = window.GA;
  var msg = document.getElementById("ga-message");
  GA.formatTimes();

  var form = document.getElementById("ga-new-plan");
  if (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var sel = form.querySelector("#ga-area");
      var opt = sel.options[sel.selectedIndex];
      var body = {label: form.querySelector("#ga-label").value.trim() || null};
      body[opt.getAttribute("data-scope") === "street" ? "street_code" : "community_code"] = opt.value;
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      GA.message(msg, "正在从现行边界复制网格…", "info");
      GA.api("POST", "/v1/plans", {body: body}).then(function (res) {
        button.disabled = false;
        if (res.status === 201) {
          location.href = "/plans/" + res.data.id;
        } else {
          GA.message(msg, GA.esc(GA.explain(res)), "error");
        }
      });
    });
  }

  function rollback(button, ifMatch) {
    var id = button.getAttribute("data-version");
    button.disabled = true;
    GA.message(msg, "正在回滚版本 " + GA.esc(id) + "…", "info");
    GA.api("POST", "/v1/versions/" + id + "/rollback", {ifMatch: ifMatch}).then(function (res) {
      button.disabled = false;
      if (res.ok) {
        var out = res.data || {};
        var versions = out.version_id ? [out.version_id] : (out.results || []).map(function (r) { return r.version_id; });
        GA.message(msg, "已回滚：新版本 " + GA.esc(versions.join("、")) + " 恢复了版本 " + GA.esc(id) +
                   " 之前的边界。页面即将刷新。", "ok");
        setTimeout(function () { location.reload(); }, 1200);
        return;
      }
      var t = String((res.data || {}).type || "").split("/").pop();
      if (res.status === 412 && t === "stale-version") {
        GA.message(msg, "", null);
        GA.dialog({
          title: "回滚会覆盖之后的改动",
          html: "<p>版本 " + GA.esc(id) + " 之后，这些社区的边界又有改动：</p><ul>" +
            GA.versionChanges(res.data.changes) + "</ul><p>仍要回滚吗？之后的改动会被覆盖（仍可再次回滚恢复）。</p>",
          buttons: [{label: "取消", value: false}, {label: "仍要回滚", value: true, primary: true,
                                                   aria: "覆盖之后的改动，回滚版本 " + id}]
        }).then(function (yes) { if (yes) rollback(button, res.data.current_etag); });
        return;
      }
      GA.message(msg, GA.esc(GA.explain(res)), "error");
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll(".ga-rollback"), function (b) {
    b.addEventListener("click", function () {
      var id = b.getAttribute("data-version");
      GA.dialog({title: "回滚版本 " + id, html: "<p>以新版本的形式恢复版本 " + GA.esc(id) +
                 " 发布之前的网格边界。继续吗？</p>",
                 buttons: [{label: "取消", value: false}, {label: "回滚", value: true, primary: true}]})
        .then(function (yes) { if (yes) rollback(b, null); });
    });
  });
})();
