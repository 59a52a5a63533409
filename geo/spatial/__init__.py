"""Spatial helpers shared by every concept: geometry validation and repair, CRS handling, GCJ-02/BD-09 conversion."""
