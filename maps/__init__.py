"""Page rendering for GridAtlas: offline folium maps and their static assets."""
