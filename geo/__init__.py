"""GridAtlas domain and spatial logic: the grid hierarchy (网格化管理) and its storage in PostGIS."""
