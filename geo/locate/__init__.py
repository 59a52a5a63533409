"""Locate (定位): which grid, micro-grid, compound and building a point lies in, and who is responsible; batch locate."""
