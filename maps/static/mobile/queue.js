/* The phone's outbox (待发送): reports and their photos kept in IndexedDB until the server has them, and the
   draft being typed. Loaded by /m and /m/report; whichever page is open sends the queue, oldest first, when the
   network is back, when the page opens (e.g. after logging in again) and when asked. A report keeps its original
   report time (reported_at, set when the worker pressed 提交). An item leaves the outbox only once the server
   has answered it for good: accepted (201) or refused (4xx other than 401/408/429); a 401 (session expired) stops
   the run and keeps everything, in order, for after the next login. Photos go after their report, one by one;
   an item remembers its incident id, so a retry never files the report twice (and the server ignores a photo it
   already has). An item that already names its incident (the case page's 处置照片, stage "handling") only sends
   its photos.
   A shared phone (几人共用一部手机): drafts, the cached jurisdiction and places are stored under the signed-in user's
   name (GA.setUser), and an outbox item belongs to the user who filed it: it is sent only while that user is
   signed in (checked with the server before sending), otherwise held until they log in again. */
(function (root) {
  "use strict";
  var GA = root.GA || (root.GA = {});
  var DB_NAME = "gridatlas-phone", STORE = "outbox", DRAFTS = "drafts";
  var dbPromise = null;

  function db() {
    if (dbPromise) return dbPromise;
    dbPromise = new Promise(function (resolve, reject) {
      var req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = function () {
        var d = req.result;
        if (!d.objectStoreNames.contains(STORE)) d.createObjectStore(STORE, {keyPath: "seq", autoIncrement: true});
        if (!d.objectStoreNames.contains(DRAFTS)) d.createObjectStore(DRAFTS);
      };
      req.onsuccess = function () { resolve(req.result); };
      req.onerror = function () { reject(req.error); };
    });
    return dbPromise;
  }
  function tx(store, mode, fn) {
    return db().then(function (d) {
      return new Promise(function (resolve, reject) {
        var t = d.transaction(store, mode), s = t.objectStore(store), result;
        var r = fn(s);
        if (r) r.onsuccess = function () { result = r.result; };
        t.oncomplete = function () { resolve(result); };
        t.onerror = function () { reject(t.error); };
        t.onabort = function () { reject(t.error); };
      });
    });
  }

  /* GA.outbox.items: a synchronous copy of the outbox, refreshed after every read and write (for the page). */
  function mirror(result) {
    return tx(STORE, "readonly", function (s) { return s.getAll(); }).then(function (items) {
      GA.outbox.items = items || []; return result;
    });
  }
  /* Whose storage the page uses: the signed-in user's (null: nobody signed in, nothing is kept or sent). */
  GA.user = null;
  GA.setUser = function (name) { GA.user = name || null; };
  function scoped(key) { return GA.user ? key + "@" + GA.user : key + "@"; }
  GA.scopedKey = scoped;

  GA.outbox = {
    items: [],
    all: function () { return mirror(null).then(function () { return GA.outbox.items; }); },
    /* The signed-in user's items only (what the page shows as 待发送). */
    mine: function () { return GA.outbox.all().then(function (items) { return items.filter(mine); }); },
    add: function (item) {
      if (GA.user && !item.user) item.user = GA.user;
      return tx(STORE, "readwrite", function (s) { return s.add(item); }).then(mirror);
    },
    put: function (item) { return tx(STORE, "readwrite", function (s) { return s.put(item); }).then(mirror); },
    remove: function (seq) { return tx(STORE, "readwrite", function (s) { return s.delete(seq); }).then(mirror); }
  };
  GA.drafts = {
    get: function (key) { return tx(DRAFTS, "readonly", function (s) { return s.get(scoped(key)); }); },
    set: function (key, value) { return tx(DRAFTS, "readwrite", function (s) { return s.put(value, scoped(key)); }); },
    remove: function (key) { return tx(DRAFTS, "readwrite", function (s) { return s.delete(scoped(key)); }); },
    /* A draft stored before drafts were kept per user (under the bare key): read once, then deleted. */
    takeLegacy: function (key) {
      var value;
      return tx(DRAFTS, "readonly", function (s) { return s.get(key); }).then(function (v) {
        value = v;
        return v === undefined ? null : tx(DRAFTS, "readwrite", function (s) { return s.delete(key); });
      }).then(function () { return value; });
    }
  };

  var HEADERS = {"Accept": "application/json", "Accept-Language": "zh-CN"};
  // 0: no answer at all (offline, connection cut)
  function retryable(status) { return status === 0 || status === 401 || status === 408 || status === 429 || status >= 500; }

  function postReport(item) {
    return fetch("/v1/incidents", {
      method: "POST", credentials: "same-origin",
      headers: Object.assign({"Content-Type": "application/json"}, HEADERS), body: JSON.stringify(item.body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) { return {status: r.status, data: data}; });
    });
  }
  function postPhoto(incidentId, photo) {
    var url = "/v1/incidents/" + incidentId + "/photos?stage=" + (photo.stage || "report") +
      (photo.taken_at ? "&taken_at=" + encodeURIComponent(photo.taken_at) : "");
    return fetch(url, {method: "POST", credentials: "same-origin",
                       headers: Object.assign({"Content-Type": photo.blob.type || "image/jpeg"}, HEADERS),
                       body: photo.blob}).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) { return {status: r.status, data: data}; });
    }, function () { return {status: 0, data: {}}; });
  }

  /* Send one item as far as it goes: "done", "refused" (with a message), "later" (network or session). */
  function sendItem(item) {
    var step = item.incident_id ? Promise.resolve({status: 201, data: {id: item.incident_id}}) : postReport(item);
    return step.then(function (res) {
      if (res.status !== 201) {
        if (retryable(res.status)) return {outcome: "later", status: res.status};
        return {outcome: "refused", message: (res.data && res.data.detail) || ("HTTP " + res.status)};
      }
      if (!item.incident_id) {
        item.incident_id = res.data.id;
        item.sent_at = new Date().toISOString();
        item.grid = res.data.attribution && res.data.attribution.grid || null;
      }
      var photos = item.photos || [];
      var chain = GA.outbox.put(item);
      photos.forEach(function (photo, i) {
        chain = chain.then(function (state) {
          if (state === "later" || photo.sent) return state;
          return postPhoto(item.incident_id, photo).then(function (r) {
            if (r.status === 200 || r.status === 201) { photo.sent = r.data.id; return GA.outbox.put(item); }
            if (retryable(r.status)) return "later";
            photo.sent = "refused"; photo.error = (r.data && r.data.detail) || ("HTTP " + r.status);
            return GA.outbox.put(item);
          });
        });
      });
      return chain.then(function (state) {
        return state === "later" ? {outcome: "later"} : {outcome: "done", id: item.incident_id, grid: item.grid};
      });
    }, function () { return {outcome: "later", status: 0}; });
  }

  /* The device session (登录保持): a fresh access cookie from the HttpOnly refresh cookie, no password. */
  GA.deviceRefresh = function () {
    return fetch("/v1/auth/device", {method: "POST", credentials: "same-origin", headers: HEADERS})
      .then(function (r) { return r.status === 204; }, function () { return false; });
  };

  /* Whose an item is: the signed-in user's items only are sent (another user on this phone leaves them queued). */
  function mine(item) { return !!GA.user && item.user === GA.user; }

  /* Whether the session cookie is really GA.user's (a page kept by the service worker may be another user's):
     "yes", "no" (another user: nothing is sent), "later" (no network, or no valid session). */
  function sessionIsMine() {
    return fetch("/v1/auth/me", {credentials: "same-origin", headers: HEADERS}).then(function (r) {
      if (r.status === 401) return "expired";
      if (!r.ok) return "later";
      return r.json().then(function (me) { return me.username === GA.user ? "yes" : "no"; });
    }, function () { return "later"; });
  }

  var running = null;
  /* Send the outbox in order; resolves to {sent: [ids], grids: {id: grid}, refused: [messages], left: n, status}.
     A 401 (the access cookie expired) is answered once by the device session, then the run goes on. */
  GA.flushOutbox = function (retried) {
    if (running) return running;
    var report = {sent: [], grids: {}, refused: [], left: 0, status: null, other_user: false};
    running = GA.outbox.all().then(function (all) {
      var items = all.filter(mine);
      if (!items.length) return null;
      return sessionIsMine().then(function (who) {
        if (who === "yes") return items;
        report.left = items.length;
        report.status = who === "expired" ? 401 : who === "no" ? 403 : 0;
        report.other_user = who === "no";
        if (who === "no" && root.dispatchEvent && root.CustomEvent) {
          root.dispatchEvent(new CustomEvent("ga-other-user"));
        }
        return [];
      });
    }).then(function (items) {
      var chain = Promise.resolve(true);
      (items || []).forEach(function (item) {
        chain = chain.then(function (go) {
          if (!go) { report.left++; return false; }
          return sendItem(item).then(function (r) {
            if (r.outcome === "later") { report.left++; report.status = r.status; return false; }  // keep the order
            if (r.outcome === "done") { report.sent.push(r.id); report.grids[r.id] = r.grid; }
            else report.refused.push(r.message);
            return GA.outbox.remove(item.seq).then(function () { return true; });
          });
        });
      });
      return chain;
    }).then(function () {
      running = null;
      if (report.status === 401 && report.left && !retried) {
        return GA.deviceRefresh().then(function (ok) { return ok ? GA.flushOutbox(true) : report; });
      }
      return report;
    }, function (e) { running = null; throw e; });
    return running;
  };

  /* Logging out on this phone: the server ends the session; the cached jurisdiction (pack, places, the pages the
     service worker kept) is deleted; the outbox and the draft stay, marked as this user's, sent only for them. */
  GA.logout = function () {
    var keep = ["report", "photos"];
    return fetch("/v1/auth/logout", {method: "POST", credentials: "same-origin", headers: HEADERS})
      .catch(function () { return null; })
      .then(function () {
        var jobs = [GA.drafts.remove("pack"), GA.drafts.remove("places")];
        if (root.caches) {
          jobs.push(caches.keys().then(function (keys) {
            return Promise.all(keys.map(function (k) {
              if (k === "gridatlas-data") return caches.delete(k);
              if (k.indexOf("gridatlas-shell-") !== 0) return null;
              return caches.open(k).then(function (cache) {
                return cache.keys().then(function (reqs) {
                  return Promise.all(reqs.filter(function (r) { return new URL(r.url).pathname.indexOf("/static/") !== 0; })
                    .map(function (r) { return cache.delete(r); }));
                });
              });
            }));
          }));
        }
        return Promise.all(jobs).then(function () { return keep; });
      });
  };

  GA.localIso = function (d) {
    var off = -d.getTimezoneOffset(), sign = off >= 0 ? "+" : "-";
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" +
      pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + sign + pad(Math.floor(Math.abs(off) / 60)) + ":" +
      pad(Math.abs(off) % 60);
  };

  GA.registerServiceWorker = function () {
    if (!("serviceWorker" in navigator)) return Promise.resolve(null);
    return navigator.serviceWorker.register("/m/sw.js", {scope: "/m"}).catch(function () { return null; });
  };
})(typeof self !== "undefined" ? self : this);
