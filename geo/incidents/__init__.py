"""Incidents (事件): the closed loop (closed_loop), attribution to boundaries in force, KPIs (kpi), heatmaps and hot spots (heatmap)."""
