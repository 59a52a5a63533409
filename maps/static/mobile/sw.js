/* The phone pages' service worker (served at /m/sw.js, scope /m): the shell (/m, the last /m/report), the
   mobile assets and vendored Leaflet are cached so the pages open without a network. /m is stale-while-revalidate
   (the cached page at once, refreshed in the background: a repeat visit on a slow line costs no round trip);
   when the refreshed page belongs to another user (X-GA-User; a shared phone) the open pages are told
   ({type: "ga-user", user}) and reload. The versioned assets (?v=digest, the cache named after the same digest)
   are cache-first. /m/report and /m/cases/{id} are network-first (they are per point and per case). The JSON
   (locate, the jurisdiction pack, places, the worker's reports) goes to the network only: the pages keep what
   they fetched in IndexedDB under the signed-in user's name (a shared phone never mixes two users' data) and
   fall back to it themselves, saying so, so a stale answer is never passed off as a fresh one. The scope "/m" also matches /maps/…: only the paths below are handled. */
"use strict";
var VERSION = "__VERSION__";
var SHELL = "gridatlas-shell-" + VERSION;
var OLD_DATA = "gridatlas-data";  // the JSON cache of earlier versions (not per user): deleted
var ASSETS = __ASSETS__;

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(SHELL).then(function (cache) {
    return cache.addAll(ASSETS).then(function () {
      return fetch("/m", {credentials: "same-origin"}).then(function (r) { if (r.ok) return cache.put("/m", r); })
        .catch(function () {});
    });
  }).then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) {
      return (k.indexOf("gridatlas-shell-") === 0 && k !== SHELL) || k === OLD_DATA;
    })
      .map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

function pageKey(url) {
  if (url.pathname === "/m") return "/m";
  if (url.pathname === "/m/report") return "/m/report";
  if (/^\/m\/cases\/\d+$/.test(url.pathname)) return url.pathname;
  return null;
}

/* The cached /m at once (when there is one), the network's copy kept for the next visit. */
function staleWhileRevalidate(event, key) {
  var request = event.request;
  return caches.open(SHELL).then(function (cache) {
    return cache.match(key).then(function (hit) {
      var fresh = fetch(request).then(function (response) {
        if (response.ok && !response.redirected) {
          var before = hit ? hit.headers.get("X-GA-User") || "" : null, after = response.headers.get("X-GA-User") || "";
          // An anonymous copy (the access cookie expired; the device session renews it) does not replace a
          // signed-in worker's page: logging out deletes that page itself.
          if (before && !after) return response;
          return cache.put(key, response.clone()).then(function () {
            if (before !== null && before !== after) tell({type: "ga-user", user: after});
            return response;
          });
        }
        if (response.redirected || response.status === 401) return cache.delete(key).then(function () { return response; });
        return response;
      });
      if (!hit) return fresh;
      event.waitUntil(fresh.catch(function () {}));
      return hit;
    });
  });
}

function tell(message) {
  return self.clients.matchAll({type: "window"}).then(function (list) {
    list.forEach(function (c) { c.postMessage(message); });
  });
}

function networkFirst(request, cacheName, key, keep) {
  return fetch(request).then(function (response) {
    // Only a real answer of that page is kept (not a redirect to the login page, not an error); /m with a point
    // in its address is not kept (the kept /m asks the device where it is).
    if (keep !== false && response.ok && !response.redirected) {
      var copy = response.clone();
      caches.open(cacheName).then(function (cache) { cache.put(key, copy); });
    }
    return response;
  }, function (err) {
    return caches.open(cacheName).then(function (cache) { return cache.match(key); }).then(function (hit) {
      if (hit) return hit;
      throw err;
    });
  });
}

function cacheFirst(request) {
  return caches.open(SHELL).then(function (cache) {
    return cache.match(request, {ignoreSearch: true}).then(function (hit) {
      if (hit) return hit;
      return fetch(request).then(function (response) {
        if (response.ok) cache.put(request, response.clone());
        return response;
      });
    });
  });
}

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") return;
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  var key = pageKey(url);
  if (key === "/m" && request.mode === "navigate" && !url.search) {
    event.respondWith(staleWhileRevalidate(event, key));
  } else if (key && request.mode === "navigate") {
    event.respondWith(networkFirst(request, SHELL, key, !(key === "/m" && url.search)));
  } else if (url.pathname.indexOf("/static/mobile/") === 0 || url.pathname.indexOf("/static/vendor/leaflet/") === 0) {
    event.respondWith(cacheFirst(request));
  }
});
