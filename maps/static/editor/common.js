/* GridAtlas planner pages: the API client, Chinese explanations of problem answers, times, and a small dialog. */
(function () {
  "use strict";

  var GA = window.GA = window.GA || {};

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  GA.esc = esc;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  /** "2025-03-01 14:05" in the browser's time zone (the planners' own). */
  GA.fmtTime = function (iso) {
    if (!iso) return "—";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
  };

  GA.formatTimes = function (root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("time[datetime]"), function (t) {
      t.textContent = GA.fmtTime(t.getAttribute("datetime"));
    });
  };

  GA.fmtInt = function (n) { return (n == null || isNaN(n)) ? "—" : Number(n).toLocaleString("zh-CN"); };

  /**
   * One call to the API with the login cookie: {status, ok, data, etag}. A JSON body is sent as JSON;
   * `ifMatch` becomes the If-Match header. Never throws for an HTTP status; a network failure gives status 0.
   */
  GA.api = function (method, url, opts) {
    opts = opts || {};
    var headers = {"Accept": "application/json"};
    var init = {method: method, headers: headers, credentials: "same-origin"};
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    if (opts.ifMatch) headers["If-Match"] = opts.ifMatch;
    return fetch(url, init).then(function (r) {
      var etag = r.headers.get("ETag");
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = {detail: t}; }
        if (r.status === 401) GA.loginExpired();
        return {status: r.status, ok: r.ok, data: data, etag: etag};
      });
    }, function (err) {
      return {status: 0, ok: false, data: {detail: String(err)}, etag: null};
    });
  };

  GA.loginExpired = function () {
    var next = encodeURIComponent(location.pathname + location.search);
    GA.dialog({title: "登录已过期", html: "<p>请重新登录后继续，未保存的操作不会丢失：每一步都已保存在服务器上。</p>",
               buttons: [{label: "重新登录", value: "login", primary: true}]}).then(function () {
      location.href = "/login?next=" + next;
    });
  };

  /** Who published what in between (the `changes` of a 412 stale-version answer), as HTML list items. */
  GA.versionChanges = function (changes) {
    return (changes || []).map(function (c) {
      return "<li>版本 " + esc(c.version_id) + "「" + esc(c.label || "未命名") + "」由 <b>" +
        esc(c.created_by || "未知用户") + "</b> 于 " + esc(GA.fmtTime(c.valid_from)) + " 发布" +
        (c.boundaries != null ? "，改动 " + esc(c.boundaries) + " 个网格或微网格边界" : "") + "</li>";
    }).join("");
  };

  var OP_NAMES = {move_buildings: "移动楼栋", move_compounds: "移动小区", split: "拆分网格", merge: "合并网格",
                  retire: "退役网格", create: "新建网格", replace_geometry: "修改边界", suggestion: "智能建议"};
  GA.opName = function (type) { return OP_NAMES[type] || type; };

  /** Edits made to the same draft in between (the `changes` of a 412 stale-plan answer). */
  GA.planChanges = function (changes) {
    return (changes || []).map(function (c) {
      var op = c.op || {};
      return "<li>" + esc(c.actor || "未知用户") + " 于 " + esc(GA.fmtTime(c.at)) + " " +
        esc(GA.opName(op.type)) + (c.undone_at ? "（已撤销）" : "") + "</li>";
    }).join("");
  };

  /** A Chinese sentence for a problem+json answer (the API's English detail kept as the reason). */
  GA.explain = function (res) {
    var d = res.data || {};
    var t = String(d.type || "").split("/").pop();
    var detail = d.detail ? "（" + d.detail + "）" : "";
    if (res.status === 0) return "无法连接服务器，请检查网络后重试。";
    switch (t) {
      case "stale-plan": return "方案已被其他人修改，页面已重新载入最新内容。";
      case "stale-version": return "社区边界在此期间已有新版本发布。";
      case "plan-not-publishable": return "方案暂不能发布" + detail;
      case "plan-operation": return "该操作无法执行" + detail;
      case "nothing-to-undo": return "没有可以撤销的操作。";
      case "forbidden-role": return "您的角色不能修改方案（需要规划员或管理员）。";
      case "out-of-jurisdiction": return "超出您的辖区" + detail;
      case "plan-suggest": return "无法生成建议" + detail;
      case "rollback": return "无法回滚" + detail;
      case "not-found": return "找不到该对象" + detail;
      case "cross-site-request": return "请求被拒绝：请从本系统页面操作。";
    }
    if (res.status === 401) return "登录已过期，请重新登录。";
    if (res.status === 403) return "没有权限" + detail;
    if (res.status === 413) return "请求过大" + detail;
    if (res.status === 422) return "请求无效" + detail;
    if (res.status >= 500) return "服务器出错（" + res.status + "），请稍后重试。";
    return "请求失败（" + res.status + "）" + detail;
  };

  GA.message = function (el, html, kind) {
    if (!el) return;
    el.innerHTML = html;
    el.className = "ga-message" + (kind ? " ga-" + kind : "");
    el.hidden = !html;
  };

  /**
   * A modal dialog: {title, html, buttons: [{label, value, primary}]}; resolves with the chosen value
   * (null on Escape). Focus goes to the first button and returns where it was.
   */
  GA.dialog = function (spec) {
    return new Promise(function (resolve) {
      var back = document.activeElement;
      var wrap = document.createElement("div");
      wrap.className = "ga-dialog-wrap";
      var id = "ga-dlg-" + Math.random().toString(36).slice(2);
      var buttons = (spec.buttons || [{label: "确定", value: true, primary: true}]).map(function (b, i) {
        return '<button type="button" data-i="' + i + '" class="' + (b.primary ? "ga-primary" : "") + '"' +
          (b.aria ? ' aria-label="' + esc(b.aria) + '"' : "") + ">" + esc(b.label) + "</button>";
      }).join("");
      wrap.innerHTML = '<div class="ga-dialog" role="dialog" aria-modal="true" aria-labelledby="' + id + '">' +
        '<h2 id="' + id + '">' + esc(spec.title || "") + "</h2>" +
        '<div class="ga-dialog-body">' + (spec.html || "") + "</div>" +
        '<div class="ga-dialog-buttons">' + buttons + "</div></div>";
      document.body.appendChild(wrap);
      var list = spec.buttons || [{label: "确定", value: true}];
      function close(value) {
        document.removeEventListener("keydown", onKey, true);
        var inputs = {};
        Array.prototype.forEach.call(wrap.querySelectorAll("[name]"), function (el) { inputs[el.name] = el.value; });
        wrap.remove();
        if (back && back.focus) back.focus();
        resolve(value === null ? null : (spec.withInputs ? {value: value, inputs: inputs} : value));
      }
      function onKey(e) {
        if (e.key === "Escape") { e.preventDefault(); close(null); }
        if (e.key === "Tab") {  // keep focus inside the dialog
          var f = wrap.querySelectorAll("button, input, select, textarea, a[href]");
          if (!f.length) return;
          var first = f[0], last = f[f.length - 1];
          if (e.shiftKey && document.activeElement === first) { e.preventDefault(); last.focus(); }
          else if (!e.shiftKey && document.activeElement === last) { e.preventDefault(); first.focus(); }
        }
      }
      document.addEventListener("keydown", onKey, true);
      Array.prototype.forEach.call(wrap.querySelectorAll(".ga-dialog-buttons button"), function (b) {
        b.addEventListener("click", function () { close(list[+b.getAttribute("data-i")].value); });
      });
      var focus = wrap.querySelector("input, select") || wrap.querySelector(".ga-dialog-buttons .ga-primary") ||
        wrap.querySelector(".ga-dialog-buttons button");
      if (focus) focus.focus();
    });
  };
})();
