/* Place search for the report pin (地点搜索): compounds (小区) and buildings (楼栋) by name or address (地址). Online it
   asks GET /v1/mobile/places/search (the caller's jurisdiction, in PostGIS); offline it searches the cached list
   (GET /v1/mobile/places) with the same rules as geo/features/places.py:
   - names and addresses compare by their search key (GA.placeSearchKey, the SQL function place_search_key):
     NFKC (full-width digits, spaces), lower case, "3号楼"/"3幢"/"3座" → "3栋", "128号" → "128", no spaces;
   - a trailing unit ("3栋2单元", "3栋2单元301") is dropped: units are not places;
   - "阳光小区 3栋", "巴陵东路129号3栋", "阳光小区 3": the buildings numbered 3 in compounds whose name or address
     contains the text; "3栋" alone: every building numbered 3;
   - otherwise (or when there are none) compounds by name or address and buildings by address or own name:
     exact first, then starting with it, then containing it; compounds before buildings, shorter names, id. */
(function (root) {
  "use strict";
  var GA = root.GA || (root.GA = {});
  var SUFFIX = /^(.*?)\s*(\d+)\s*(?:栋|号楼|幢|座)$/, BARE = /^(?:(.*\S)\s+)?(\d+)$/, NUMBER = /^(\d+)\s*(栋|号楼|幢|座)?$/;
  var UNIT = /^(.*?[^\d\s])\s*\d+\s*单元(?:\s*\d+\s*(?:室|号房|号)?)?$/;
  var LIMIT = 20;
  var KEY_STEPS = [
    [/([0-9])[ \t\n\r\f\v]*(号楼|幢|座|栋)/g, "$1栋"],
    [/([0-9])[ \t\n\r\f\v]*号[ \t\n\r\f\v]*/g, "$1#"],
    [/([0-9])[ \t\n\r\f\v]+(?=[0-9])/g, "$1#"],
    [/[ \t\n\r\f\v]+/g, ""],
    [/#(?![0-9])/g, ""]
  ];

  GA.placeSearchKey = function (value) {
    var s = (value || "").normalize("NFKC").toLowerCase();
    KEY_STEPS.forEach(function (step) { s = s.replace(step[0], step[1]); });
    return s;
  };

  function withoutUnit(query) {
    var q = (query || "").normalize("NFKC").split(/\s+/).filter(Boolean).join(" ");
    var u = UNIT.exec(q);
    return u ? u[1] : q;
  }

  GA.parsePlaceQuery = function (query) {
    var q = withoutUnit(query);
    var m = SUFFIX.exec(q) || BARE.exec(q);
    return m ? {text: (m[1] || "").trim(), number: parseInt(m[2], 10)} : {text: q, number: null};
  };

  /* 0 exact, 1 starts with, 2 contains, 3 no match (of the keys). */
  function rank(value, k) {
    if (value === null || value === undefined) return 3;
    var v = GA.placeSearchKey(value);
    return v === k ? 0 : v.indexOf(k) === 0 ? 1 : v.indexOf(k) >= 0 ? 2 : 3;
  }
  function cmp(a, b) {
    for (var i = 0; i < a.length; i++) { if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1; }
    return 0;
  }
  function len(s) { return s ? s.length : 0; }

  GA.placeLabel = function (kind, name, address, compound) {
    var own = name || address || "";
    return kind === "compound" || !compound || !name ? own : compound + " " + name;
  };

  /* The offline answer, shaped like the API's items. Pack rows: compounds [id, name, lon, lat, address],
     buildings [id, name, compound id, lon, lat, address] (address true: the compound's address + the name). */
  GA.searchPlacesOffline = function (places, query, limit) {
    var p = GA.parsePlaceQuery(query), lim = limit || LIMIT;
    if (!p.text && p.number === null) return [];
    var compounds = {};
    places.compounds.forEach(function (c) { compounds[c[0]] = c; });
    function addressOf(b) {
      var a = b.length > 5 ? b[5] : null, k = compounds[b[2]];
      return a === true ? (k && k[4] !== null && k[4] !== undefined ? k[4] : "") + b[1] : a;
    }
    function building(b) {
      var k = compounds[b[2]] || null, addr = addressOf(b);
      return {kind: "building", id: b[0], name: b[1], address: addr === undefined ? null : addr,
              label: GA.placeLabel("building", b[1], addr, k ? k[1] : null),
              compound_id: k ? k[0] : null, compound: k ? k[1] : null, lon: b[3], lat: b[4]};
    }
    function sorted(hits) {
      return hits.sort(function (a, b) { return cmp(a.key, b.key); }).slice(0, lim).map(function (h) { return h.item; });
    }
    function compoundRank(k, key) { return Math.min(rank(k[1], key), rank(k[4], key)); }
    if (p.number !== null) {
      var key = GA.placeSearchKey(p.text);
      var hits = places.buildings.filter(function (b) {
        var m = b[1] === null ? null : NUMBER.exec(b[1]);
        if (!m || parseInt(m[1], 10) !== p.number) return false;
        if (!key) return true;
        var k = compounds[b[2]];
        return !!(k && compoundRank(k, key) < 3);
      }).map(function (b) {
        var k = compounds[b[2]] || null;
        return {key: (key ? [compoundRank(k, key)] : []).concat([k ? len(k[1]) : 0, k ? k[0] : 0, b[0]]),
                item: building(b)};
      });
      if (hits.length || !p.text) return sorted(hits);
    }
    var keys = [GA.placeSearchKey(withoutUnit(query))];
    if (p.number !== null) keys.push(GA.placeSearchKey(p.text));
    for (var i = 0; i < keys.length; i++) {
      var k = keys[i];
      if (!k || keys.indexOf(k) < i) continue;
      var found = [];
      places.compounds.forEach(function (c) {
        var r = compoundRank(c, k);
        if (r < 3) {
          found.push({key: [r, 0, len(c[1]), c[0]],
                      item: {kind: "compound", id: c[0], name: c[1], address: c[4] === undefined ? null : c[4],
                             label: GA.placeLabel("compound", c[1], c[4], null), compound_id: c[0], compound: c[1],
                             lon: c[2], lat: c[3]}});
        }
      });
      places.buildings.forEach(function (b) {
        var r = Math.min(b[1] === null || NUMBER.test(b[1]) ? 3 : rank(b[1], k), rank(addressOf(b), k));
        if (r < 3) found.push({key: [r, 1, len(b[1]), b[0]], item: building(b)});
      });
      if (found.length) return sorted(found);
    }
    return [];
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

  /* A hit's address (地址) in small grey type under its name: drawn from data-address, so the name stays the
     button's text (what screen readers say first). */
  function addressStyle() {
    if (document.getElementById("ga-hit-address-style")) return;
    var st = document.createElement("style");
    st.id = "ga-hit-address-style";
    st.textContent = "button.ga-hit[data-address]::after{content:attr(data-address);display:block;font-size:13px;" +
      "line-height:1.3;color:#555;padding-bottom:4px}";
    document.head.appendChild(st);
  }

  /* A search box: `form` holds an input and a submit button, `list` gets the hits; `pick(item)` on a tap. */
  GA.placeSearchBox = function (form, list, pick) {
    var input = form.querySelector("input");
    addressStyle();
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
          if (item.address && item.address !== item.label) b.setAttribute("data-address", item.address);
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
