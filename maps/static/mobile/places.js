/* Place search for the report pin (地点搜索): compounds (小区) and buildings (楼栋) by name. Online it asks
   GET /v1/mobile/places/search (the caller's jurisdiction, in PostGIS); offline it searches the cached list
   (GET /v1/mobile/places) with the same rules as geo/features/places.py:
   - "阳光小区 3栋", "阳光小区3号楼", "阳光小区 3": the buildings numbered 3 in compounds whose name contains
     "阳光小区" (none: the compounds instead); "3栋" alone: every building numbered 3;
   - otherwise the compounds whose name contains the text: exact name first, then names starting with it, then
     shorter names, then by id. */
(function (root) {
  "use strict";
  var GA = root.GA || (root.GA = {});
  var SUFFIX = /^(.*?)\s*(\d+)\s*(?:栋|号楼|幢|座)$/, BARE = /^(?:(.*\S)\s+)?(\d+)$/, NUMBER = /^(\d+)\s*(栋|号楼|幢|座)?$/;
  var LIMIT = 20;

  GA.parsePlaceQuery = function (query) {
    var q = (query || "").normalize("NFKC").split(/\s+/).filter(Boolean).join(" ");
    var m = SUFFIX.exec(q) || BARE.exec(q);
    return m ? {text: (m[1] || "").trim(), number: parseInt(m[2], 10)} : {text: q, number: null};
  };

  function rank(name, q) {
    var n = name.toLowerCase();
    return n === q ? 0 : n.indexOf(q) === 0 ? 1 : 2;
  }
  function cmp(a, b) {
    for (var i = 0; i < a.length; i++) { if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1; }
    return 0;
  }

  /* The offline answer, shaped like the API's items. */
  GA.searchPlacesOffline = function (places, query, limit) {
    var p = GA.parsePlaceQuery(query), q = p.text.toLowerCase(), lim = limit || LIMIT;
    if (!q && p.number === null) return [];
    var compounds = {};
    places.compounds.forEach(function (c) { compounds[c[0]] = c; });
    function contains(name) { return name.toLowerCase().indexOf(q) >= 0; }
    if (p.number !== null) {
      var hits = places.buildings.filter(function (b) {
        var m = NUMBER.exec(b[1]);
        if (!m || parseInt(m[1], 10) !== p.number) return false;
        if (!q) return true;
        var k = compounds[b[2]];
        return !!(k && contains(k[1]));
      }).map(function (b) {
        var k = compounds[b[2]] || null;
        return {key: (q ? [rank(k[1], q)] : []).concat([k ? k[1].length : 0, k ? k[0] : 0, b[0]]),
                item: {kind: "building", id: b[0], name: b[1], label: k ? k[1] + " " + b[1] : b[1],
                       compound_id: k ? k[0] : null, compound: k ? k[1] : null, lon: b[3], lat: b[4]}};
      });
      if (hits.length || !q) {
        return hits.sort(function (a, b) { return cmp(a.key, b.key); }).slice(0, lim)
          .map(function (h) { return h.item; });
      }
    }
    return places.compounds.filter(function (c) { return contains(c[1]); }).map(function (c) {
      return {key: [rank(c[1], q), c[1].length, c[0]],
              item: {kind: "compound", id: c[0], name: c[1], label: c[1], compound_id: c[0], compound: c[1],
                     lon: c[2], lat: c[3]}};
    }).sort(function (a, b) { return cmp(a.key, b.key); }).slice(0, lim).map(function (h) { return h.item; });
  };

  var cached = null;
  GA.loadPlaces = function () {
    if (cached) return Promise.resolve(cached);
    return GA.drafts.get("places").then(function (p) { cached = p || null; return cached; }, function () { return null; });
  };
  /* Fetch the jurisdiction's places and keep them for offline search (signed-in pages only). */
  GA.refreshPlaces = function () {
    return fetch("/v1/mobile/places", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) return null;
        cached = p;
        return GA.drafts.set("places", p).then(function () { return p; });
      }).catch(function () { return null; });
  };

  /* Online first; offline (or the server unreachable) from the cached list. Resolves {items, offline}. */
  GA.searchPlaces = function (query) {
    function offline() {
      return GA.loadPlaces().then(function (p) {
        return {items: p ? GA.searchPlacesOffline(p, query) : [], offline: true, cached: !!p};
      });
    }
    if (!navigator.onLine) return offline();
    return fetch("/v1/mobile/places/search?q=" + encodeURIComponent(query), {
      credentials: "same-origin", headers: {"Accept": "application/json", "Accept-Language": "zh-CN"}
    }).then(function (r) {
      if (r.ok) return r.json().then(function (b) { return {items: b.items, offline: false}; });
      if (r.status >= 500 || r.status === 401) return offline();
      return r.json().catch(function () { return {}; }).then(function (b) {
        return {items: [], offline: false, error: b.detail || ("HTTP " + r.status)};
      });
    }, offline);
  };

  /* A search box: `form` holds an input and a submit button, `list` gets the hits; `pick(item)` on a tap. */
  GA.placeSearchBox = function (form, list, pick) {
    var input = form.querySelector("input");
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var q = input.value.trim();
      if (!q) return;
      list.textContent = "正在搜索…";
      GA.searchPlaces(q).then(function (res) {
        list.textContent = "";
        if (res.error) { list.textContent = res.error; return; }
        if (!res.items.length) {
          list.textContent = res.offline && !res.cached ? "离线且本机没有缓存的地名，无法搜索。" : "没有找到“" + q + "”。";
          return;
        }
        res.items.forEach(function (item) {
          var b = document.createElement("button");
          b.type = "button"; b.className = "ga-hit"; b.textContent = item.label;
          b.setAttribute("data-kind", item.kind); b.setAttribute("data-id", item.id);
          b.addEventListener("click", function () { list.textContent = ""; pick(item); });
          list.appendChild(b);
        });
        if (res.offline) {
          var note = document.createElement("div"); note.className = "muted"; note.textContent = "离线搜索（本机缓存的地名）";
          list.appendChild(note);
        }
      });
    });
  };
})(typeof self !== "undefined" ? self : this);
