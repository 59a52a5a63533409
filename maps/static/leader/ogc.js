// The small map of an OGC API Features HTML page: the page's features over no tiles (offline), fitted.
(function () {
  var data = JSON.parse(document.getElementById("ga-ogc-data").textContent);
  var map = L.map("ga-ogc-map", { zoomControl: true, attributionControl: false });
  var layer = L.geoJSON(data, {
    style: { color: "#0d47a1", weight: 1.5, fillOpacity: 0.15 },
    pointToLayer: function (f, latlng) { return L.circleMarker(latlng, { radius: 5, color: "#c62828", weight: 1 }); },
  }).addTo(map);
  var b = layer.getBounds();
  if (b.isValid()) { map.fitBounds(b, { padding: [12, 12] }); } else { map.setView([0, 0], 2); }
  L.control.scale({ imperial: false }).addTo(map);
})();
