"""Compound vs grid classification (小区与网格的大小关系): same, larger, smaller, straddling, outside, with measures."""
