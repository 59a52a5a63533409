/* Offline locate on the phone (离线定位): the same rules as the server's index (geo/locate/index.py) over the
   cached jurisdiction pack (GET /v1/mobile/jurisdiction):
   - a grid covers a point inside it or within pack.boundary_tolerance_m of its outline (the pack's outlines are
     simplified and rounded to about 1 cm); among covering grids the smallest code wins (byte order, as the server's C
     collation); the match is "boundary" when the point is within the tolerance of the winner's outline;
   - a point in no grid goes to the nearest grid within pack.accuracy_m (ties: smallest code).
   Distances in metres on the local tangent plane (the server measures in UTM; they agree to centimetres here). */
(function (root) {
  "use strict";
  var GA = root.GA || (root.GA = {});
  var TIE_M = 0.01;

  function metresPerDegree(lat) {
    var r = lat * Math.PI / 180;
    return [111412.84 * Math.cos(r) - 93.5 * Math.cos(3 * r) + 0.118 * Math.cos(5 * r),
            111132.92 - 559.82 * Math.cos(2 * r) + 1.175 * Math.cos(4 * r) - 0.0023 * Math.cos(6 * r)];
  }

  function inRing(x, y, ring) {
    var inside = false;
    for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
      if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  function inPolygons(x, y, polygons) {
    for (var p = 0; p < polygons.length; p++) {
      var rings = polygons[p];
      if (!inRing(x, y, rings[0])) continue;
      var hole = false;
      for (var h = 1; h < rings.length; h++) { if (inRing(x, y, rings[h])) { hole = true; break; } }
      if (!hole) return true;
    }
    return false;
  }

  /* Distance in metres from (x, y) to the nearest edge of the polygons. */
  function edgeDistance(x, y, polygons, m) {
    var best = Infinity;
    for (var p = 0; p < polygons.length; p++) {
      for (var r = 0; r < polygons[p].length; r++) {
        var ring = polygons[p][r];
        for (var i = 1; i < ring.length; i++) {
          var ax = (ring[i - 1][0] - x) * m[0], ay = (ring[i - 1][1] - y) * m[1];
          var bx = (ring[i][0] - x) * m[0], by = (ring[i][1] - y) * m[1];
          var dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
          var t = len2 > 0 ? Math.max(0, Math.min(1, -(ax * dx + ay * dy) / len2)) : 0;
          var px = ax + t * dx, py = ay + t * dy, d = Math.sqrt(px * px + py * py);
          if (d < best) best = d;
        }
      }
    }
    return best;
  }

  function byCode(a, b) { return a.grid.code < b.grid.code ? -1 : a.grid.code > b.grid.code ? 1 : 0; }

  /* The answer for a WGS-84 point, shaped like GET /v1/locate's (grid, community, street, match, distance_m,
     staff, version), plus offline: true; null grid (and `nearest`) when no grid is within reach. */
  GA.locateOffline = function (pack, lon, lat) {
    var m = metresPerDegree(lat), tol = pack.boundary_tolerance_m, acc = pack.accuracy_m;
    var reach = Math.max(tol, acc);
    var covering = [], near = [], farthest = null;
    pack.grids.forEach(function (g) {
      var b = g.bbox, padX = reach / m[0], padY = reach / m[1];
      if (lon < b[0] - padX || lon > b[2] + padX || lat < b[1] - padY || lat > b[3] + padY) return;
      var d = edgeDistance(lon, lat, g.polygons, m);
      if (inPolygons(lon, lat, g.polygons) || d <= tol) covering.push({grid: g, d: d});
      else if (d <= acc) near.push({grid: g, d: d});
    });
    if (!covering.length && !near.length) {  // out of reach of every grid: say which one is nearest
      pack.grids.forEach(function (g) {
        var d = edgeDistance(lon, lat, g.polygons, m);
        if (farthest === null || d < farthest.d - TIE_M || (d <= farthest.d + TIE_M && g.code < farthest.grid.code)) {
          farthest = {grid: g, d: d};
        }
      });
    }
    var out = {grid: null, community: null, street: null, match: null, distance_m: null, staff: [],
               version: pack.version, offline: true, lon: lon, lat: lat, generated_at: pack.generated_at};
    var pick = null;
    if (covering.length) {
      covering.sort(byCode);
      pick = covering[0];
      out.match = pick.d <= tol ? "boundary" : "inside";
      out.distance_m = 0;
    } else if (near.length) {
      var min = Math.min.apply(null, near.map(function (n) { return n.d; }));
      var tied = near.filter(function (n) { return n.d <= min + TIE_M; }).sort(byCode);
      pick = tied[0];
      out.match = "nearest";
      out.distance_m = Math.round(pick.d * 1000) / 1000;
    } else if (farthest) {
      out.nearest = {grid: {id: farthest.grid.id, code: farthest.grid.code, name: farthest.grid.name},
                     distance_m: Math.round(farthest.d * 1000) / 1000};
    }
    if (pick) {
      var g = pick.grid;
      out.grid = {id: g.id, code: g.code, name: g.name};
      out.community = g.community; out.street = g.street; out.staff = g.staff;
    }
    return out;
  };
})(typeof self !== "undefined" ? self : this);
