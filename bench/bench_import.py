"""Import of 100,000 buildings from a GeoPackage, with validation (target: under 60 s); features/s, peak memory.

The GeoPackage is made in a child process (so the memory figures are the import's): building footprints in
CGCS2000 / 3-degree Gauss-Krüger CM 120°E (EPSG:4549, so every vertex is reprojected), Chinese field names,
about 1 % bow-ties to repair and 1 % footprints cut in two pieces that share an id. The street, its communities
and compounds are imported first, so each building is placed in its community and compound by location.

    .venv/bin/python -m bench.bench_import [--buildings 100000]

`--grids 1300` instead: the dry run of 1,300 grids in 180 communities without units (issue 17's real district:
target under 3 s), GeoJSON in EPSG:4549 with Chinese columns (网格编码, 网格名称, TYPE 综合/专属, 所属社区) and about
4 % invalid outlines (holes touching the shell, pinched rings) repaired losslessly.

    .venv/bin/python -m bench.bench_import --grids 1300
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from bench.common import RESULTS, console, fresh_database

TARGET_S = 60.0
CRS = 4549
X0, Y0 = 640_000.0, 3_455_000.0  # metres in EPSG:4549, near Lujiazui
COLS, CELL = 400, 20.0


def make_geopackage(path: Path, n: int, seed: int = 1) -> None:
    """Write the layers (streets, communities, compounds, buildings) of a synthetic survey to a GeoPackage."""
    import geopandas as gpd
    import pyogrio
    import shapely

    rng = np.random.default_rng(seed)
    rows = int(np.ceil(n / COLS))
    width, height = COLS * CELL, rows * CELL
    street = gpd.GeoDataFrame({"街道编码": ["310115001"], "街道名称": ["演示街道"]},
                              geometry=[shapely.box(X0, Y0, X0 + width, Y0 + height)], crs=CRS)
    cx, cy = 5, 4
    boxes, codes = [], []
    for j in range(cy):
        for i in range(cx):
            boxes.append(shapely.box(X0 + i * width / cx, Y0 + j * height / cy, X0 + (i + 1) * width / cx,
                                     Y0 + (j + 1) * height / cy))
            codes.append(f"310115001{len(codes) + 1:03d}")
    communities = gpd.GeoDataFrame({"社区编码": codes, "社区名称": [f"社区{k}" for k in range(len(codes))]},
                                   geometry=boxes, crs=CRS)
    kx, ky = 20, 20
    ix, iy = np.meshgrid(np.arange(kx), np.arange(ky))
    w, h = width / kx, height / ky
    compounds = gpd.GeoDataFrame(
        {"小区编号": [f"XQ{k:04d}" for k in range(kx * ky)], "小区名称": [f"小区{k}" for k in range(kx * ky)]},
        geometry=shapely.box(X0 + ix.ravel() * w + 5, Y0 + iy.ravel() * h + 5, X0 + (ix.ravel() + 1) * w - 5,
                             Y0 + (iy.ravel() + 1) * h - 5), crs=CRS)

    k = np.arange(n)
    centre_x = X0 + (k % COLS + 0.5) * CELL
    centre_y = Y0 + (k // COLS + 0.5) * CELL
    angle = rng.uniform(0, np.pi / 2, n)
    half = np.array([[-6, -4], [6, -4], [6, 4], [-6, 4], [-6, -4]], dtype=float)  # 12 m × 8 m, closed
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    xs = centre_x[:, None] + half[:, 0] * cos - half[:, 1] * sin
    ys = centre_y[:, None] + half[:, 0] * sin + half[:, 1] * cos
    bow = rng.random(n) < 0.01
    # A bow-tie: the two right-hand corners swapped (a digitising slip GEOS calls a self-intersection).
    xs[bow, 1], xs[bow, 2] = xs[bow, 2].copy(), xs[bow, 1].copy()
    ys[bow, 1], ys[bow, 2] = ys[bow, 2].copy(), ys[bow, 1].copy()
    coords = np.stack([xs, ys], axis=-1).reshape(-1, 2)
    polys = shapely.polygons(shapely.linearrings(coords, indices=np.repeat(k, 5)))
    refs = np.array([f"LD{i:06d}" for i in k], dtype=object)
    floors = rng.integers(2, 33, n)
    names = np.array([f"{i % 40 + 1}号楼" for i in k], dtype=object)
    # About 1 % cut in two at a tile edge: both halves keep the id and attributes.
    cut = np.flatnonzero((rng.random(n) < 0.01) & ~bow)
    left = shapely.intersection(polys[cut], shapely.box(centre_x[cut] - 20, centre_y[cut] - 20, centre_x[cut],
                                                        centre_y[cut] + 20))
    right = shapely.intersection(polys[cut], shapely.box(centre_x[cut], centre_y[cut] - 20, centre_x[cut] + 20,
                                                         centre_y[cut] + 20))
    polys[cut] = left
    geoms = np.concatenate([polys, right])
    order = np.concatenate([k, cut])
    buildings = gpd.GeoDataFrame({"楼栋编号": refs[order], "楼栋名称": names[order], "层数": floors[order]},
                                 geometry=geoms, crs=CRS)
    for name, frame in (("streets", street), ("communities", communities), ("compounds", compounds),
                        ("buildings", buildings)):
        pyogrio.write_dataframe(frame, path, layer=name, append=name != "streets")


def rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(n: int, seed: int) -> dict:
    from geo.io import ImportOptions, import_layer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "survey.gpkg"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.bench_import", "--make", str(path), "--buildings", str(n),
                        "--seed", str(seed)], check=True)
        make_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        with fresh_database("gridatlas_bench_import") as engine:
            prep = {}
            for layer, mapping in (("streets", None), ("communities", None), ("compounds", "ref=小区编号")):
                r = import_layer(engine, layer, path, ImportOptions(source_layer=layer, mapping=mapping))
                prep[layer] = r.imported
            stamps: dict[str, float] = {}
            start = time.perf_counter()

            def progress(stage: str, done: int, total: int) -> None:
                stamps[stage] = time.perf_counter() - start

            base_rss = rss_mb()
            t0 = time.perf_counter()
            result = import_layer(engine, "buildings", path,
                                  ImportOptions(source_layer="buildings", mapping="ref=楼栋编号", progress=progress))
            elapsed = time.perf_counter() - t0
            peak_rss = rss_mb()
            from sqlalchemy import text

            with engine.connect() as conn:
                placed = conn.execute(text("SELECT count(community_id), count(compound_id), count(*), "
                                           "bool_and(ST_IsValid(geom)) FROM buildings")).one()
    kinds = result.counts_by_kind()
    stages, previous = {}, 0.0
    for stage in ("read", "validate", "stage", "check", "write"):
        if stage in stamps:
            stages[f"{stage}_s"] = round(stamps[stage] - previous, 2)
            previous = stamps[stage]
    return {
        "buildings": n, "features_read": result.features_read, "imported": result.imported,
        "repaired": result.repaired, "merged": result.merged, "refused": result.refused,
        "invalid_geometry": kinds.get("invalid-geometry", 0), "split_pieces": kinds.get("split-pieces-merged", 0),
        "in_community": placed[0], "in_compound": placed[1], "all_valid": placed[3],
        "gpkg_mb": round(size_mb, 1), "make_s": round(make_s, 1), "import_s": round(elapsed, 2),
        "features_per_s": round(result.features_read / elapsed), **stages,
        "rss_before_mb": round(base_rss), "peak_rss_mb": round(peak_rss),
        "target_s": TARGET_S, "ok": elapsed < TARGET_S, "communities": prep["communities"],
        "compounds": prep["compounds"],
    }


GRIDS_TARGET_S = 3.0


def make_grids(folder: Path, n: int, n_communities: int = 180, seed: int = 1) -> tuple[Path, Path, Path]:
    """A street, its communities (a row of columns) and `n` grids tiling them, in EPSG:4549, as GeoJSON files."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(seed)
    per = int(np.ceil(n / n_communities))
    side = 400.0  # metres per grid
    street = "320571001"
    c_codes = [f"{street}{k + 1:03d}" for k in range(n_communities)]
    cols = 15
    c_boxes = []
    for k in range(n_communities):
        x, y = X0 + (k % cols) * side * 2, Y0 + (k // cols) * side * (per // 2 + 1)
        # vertices at every grid corner, so edges shared with the grids stay shared after reprojection
        c_boxes.append(shapely.segmentize(shapely.box(x, y, x + side * 2, y + side * (per // 2 + per % 2)), side))
    streets = gpd.GeoDataFrame({"街道编码": [street], "街道名称": ["开发区街道"]},
                               geometry=[shapely.segmentize(shapely.union_all(c_boxes), side)], crs=CRS)
    communities = gpd.GeoDataFrame({"社区编码": c_codes, "社区名称": [f"社区{k}" for k in range(n_communities)],
                                    "所属街道编码": [street] * n_communities}, geometry=c_boxes, crs=CRS)
    codes, names, kinds, parents, geoms = [], [], [], [], []
    for k, box in enumerate(c_boxes):
        x0, y0 = box.bounds[0], box.bounds[1]
        for j in range(per):
            if len(codes) >= n:
                break
            gx, gy = x0 + (j % 2) * side, y0 + (j // 2) * side
            g = shapely.box(gx, gy, gx + side, gy + side)
            r = rng.random()
            if r < 0.02:  # a hole touching the shell along an edge
                g = shapely.Polygon(g.exterior.coords, [[(gx, gy + 100), (gx + 80, gy + 100), (gx + 80, gy + 180),
                                                         (gx, gy + 180)]])
            elif r < 0.04:  # a pinched ring (a spike loop inside)
                g = shapely.Polygon([(gx, gy), (gx + side, gy), (gx + side, gy + side), (gx + 200, gy + side),
                                     (gx + 200, gy + 200), (gx + 240, gy + 200), (gx + 200, gy + side),
                                     (gx, gy + side)])
            codes.append(f"{c_codes[k]}{j + 1:03d}")
            names.append(f"社区{k}第{j + 1}网格")
            kinds.append("专属" if rng.random() < 0.1 else "综合")
            parents.append(f"社区{k}")
            geoms.append(g)
    grids = gpd.GeoDataFrame({"网格编码": codes, "网格名称": names, "TYPE": kinds, "所属社区": parents},
                             geometry=geoms, crs=CRS)
    out = []
    for name, frame in (("streets", streets), ("communities", communities), ("grids", grids)):
        path = folder / f"{name}.geojson"
        frame.to_file(path, driver="GeoJSON")
        out.append(path)
    return out[0], out[1], out[2]


def run_grids(n: int, seed: int) -> dict:
    from geo.io import ImportOptions, import_layer

    with tempfile.TemporaryDirectory() as tmp, fresh_database("gridatlas_bench_grids") as engine:
        streets, communities, grids = make_grids(Path(tmp), n, seed=seed)
        for layer, path in (("streets", streets), ("communities", communities)):
            import_layer(engine, layer, path)
        timings = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = import_layer(engine, "grids", grids, ImportOptions(dry_run=True))
            timings.append(time.perf_counter() - t0)
    kinds = result.counts_by_kind()
    best = min(timings)
    return {"grids": n, "imported": result.imported, "repaired": result.repaired,
            "repair_changed_area": kinds.get("repair-changed-area", 0), "problems": len(result.issues),
            "problems_by_kind": kinds, "checks_skipped": len(result.checks_skipped),
            "dry_run_s_best": round(best, 2), "dry_run_s_runs": [round(t, 2) for t in timings],
            "target_s": GRIDS_TARGET_S, "ok": best < GRIDS_TARGET_S}


def write_results(name: str, rows: list[dict]) -> Path:
    """The rows, with machine facts, as bench/results/<name>.json (the layout of bench.common.report)."""
    import json
    import os
    import platform

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({
        "benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": rows}, indent=2, ensure_ascii=False, default=str))
    console.print(f"written {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buildings", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--grids", type=int, help="instead: dry run of this many grids without units")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # child process: write the GeoPackage only
    args = parser.parse_args()
    if args.make:
        make_geopackage(args.make, args.buildings, args.seed)
        return
    if args.grids:
        row = run_grids(args.grids, args.seed)
        table = Table("measure", "value", title=f"dry run of {args.grids:,} grids without units "
                                                 f"(target < {GRIDS_TARGET_S:.0f} s)")
        for key, value in row.items():
            table.add_row(key, str(value))
        console.print(table)
        write_results("import_grids", [row])
        return
    row = run(args.buildings, args.seed)
    table = Table("measure", "value", title=f"import of {args.buildings:,} buildings from a GeoPackage "
                                             f"(target < {TARGET_S:.0f} s)")
    for key, value in row.items():
        table.add_row(key, f"{value:,}" if isinstance(value, (int, float)) and not isinstance(value, bool)
                      else str(value))
    console.print(table)
    write_results("import", [row])
    if not row["ok"]:
        console.print(f"[red]over target: {row['import_s']} s[/red]")


if __name__ == "__main__":
    main()
