/* The phone pages' service worker (served at /m/sw.js, scope /m): the shell (/m, the last /m/report), the
   mobile assets and vendored Leaflet are cached so the pages open without a network; the worker's jurisdiction
   pack (/v1/mobile/jurisdiction) and its named places (/v1/mobile/places: compounds and buildings with a point,
   for the pin search) are fetched network-first and kept for offline locate and search. Locate and reports go to
   the network only: the pages fall back to the pack and to their outbox themselves, so a stale answer is never
   passed off as a fresh one. The scope "/m" also matches /maps/…: only the paths below are handled. */
"use strict";
var VERSION = "__VERSION__";
var SHELL = "gridatlas-shell-" + VERSION;
var DATA = "gridatlas-data";
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
    return Promise.all(keys.filter(function (k) { return k.indexOf("gridatlas-shell-") === 0 && k !== SHELL; })
      .map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

function pageKey(url) {
  if (url.pathname === "/m") return "/m";
  if (url.pathname === "/m/report") return "/m/report";
  if (/^\/m\/cases\/\d+$/.test(url.pathname)) return url.pathname;
  return null;
}

function networkFirst(request, cacheName, key) {
  return fetch(request).then(function (response) {
    // Only a real answer of that page is kept (not a redirect to the login page, not an error).
    if (response.ok && !response.redirected) {
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
  if (key && request.mode === "navigate") {
    event.respondWith(networkFirst(request, SHELL, key));
  } else if (url.pathname === "/v1/mobile/jurisdiction" || url.pathname === "/v1/mobile/places") {
    event.respondWith(networkFirst(request, DATA, url.pathname));
  } else if (url.pathname.indexOf("/static/mobile/") === 0 || url.pathname.indexOf("/static/vendor/leaflet/") === 0) {
    event.respondWith(cacheFirst(request));
  }
});
