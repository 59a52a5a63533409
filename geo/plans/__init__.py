"""Redrawing grids (网格调整): draft plans and operations (drafts), validation, diff, publish and rollback, suggestions."""
