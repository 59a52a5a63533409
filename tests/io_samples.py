"""Hand-made sample data for the import/export tests: a small district near Lujiazui written in any format.

Everything is generated in the test's tmp_path; nothing here is real data.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

STREET = "310115001"
WEST, EAST = STREET + "001", STREET + "002"
X0, Y0, X1, Y1 = 121.500, 31.230, 121.520, 31.245
XM = (X0 + X1) / 2


def _rows(boxes: list[tuple], **cols) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(cols, geometry=[shapely.box(*b) for b in boxes], crs=4326)


def streets() -> gpd.GeoDataFrame:
    return _rows([(X0, Y0, X1, Y1)], code=[STREET], name=["陆家嘴街道"])


def communities() -> gpd.GeoDataFrame:
    return _rows([(X0, Y0, XM, Y1), (XM, Y0, X1, Y1)], code=[WEST, EAST], name=["梅园社区", "崂山社区"],
                 street_code=[STREET, STREET])


def grid_boxes() -> list[tuple]:
    """Three grids per community, bands north to south."""
    out = []
    for cx0, cx1 in ((X0, XM), (XM, X1)):
        ys = np.linspace(Y1, Y0, 4)
        out += [(cx0, ys[i + 1], cx1, ys[i]) for i in range(3)]
    return out


def grids() -> gpd.GeoDataFrame:
    codes = [c + f"{i:03d}" for c in (WEST, EAST) for i in (1, 2, 3)]
    return _rows(grid_boxes(), code=codes, name=[f"第{i}网格" for i in range(1, 7)],
                 community_code=[c[:12] for c in codes], kind=["comprehensive"] * 5 + ["dedicated"],
                 dedicated_type=[None] * 5 + ["school"])


def micro_grids() -> gpd.GeoDataFrame:
    g = grids()
    boxes, codes, names, parents = [], [], [], []
    for code, geom in zip(g["code"], g.geometry, strict=True):
        x0, y0, x1, y1 = geom.bounds
        xm = (x0 + x1) / 2
        for k, b in enumerate(((x0, y0, xm, y1), (xm, y0, x1, y1)), 1):
            boxes.append(b)
            codes.append(f"{code}{k:02d}")
            names.append(f"{code[-3:]}-{k}")
            parents.append(code)
    return _rows(boxes, code=codes, name=names, grid_code=parents)


def compounds() -> gpd.GeoDataFrame:
    boxes = []
    for b in grid_boxes()[:4]:
        x0, y0, x1, y1 = b
        dx, dy = (x1 - x0) * 0.1, (y1 - y0) * 0.1
        boxes.append((x0 + dx, y0 + dy, x1 - dx, y1 - dy))
    return _rows(boxes, ref=["C1", "C2", "C3", "C4"], name=["崂山三村", "乳山二村", "梅园三街坊", "招远小区"],
                 kind=["old", "commercial", "old", "work_unit"], has_property_management=[True, True, False, True],
                 has_owners_committee=[False, True, False, True], community_code=[WEST, WEST, WEST, EAST])


def buildings() -> gpd.GeoDataFrame:
    rows = []
    for c_ref, geom in zip(compounds()["ref"], compounds().geometry, strict=True):
        x0, y0, x1, y1 = geom.bounds
        w, h = (x1 - x0) / 7, (y1 - y0) / 3
        for k in range(3):
            bx = x0 + w * (1 + 2 * k)
            rows.append((c_ref, k, (bx, y0 + h, bx + w, y0 + 2 * h)))
    return _rows([r[2] for r in rows], ref=[f"{r[0]}-B{r[1] + 1}" for r in rows],
                 code=[f"{i + 1:05d}" for i in range(len(rows))], name=[f"{r[1] + 1}号楼" for r in rows],
                 compound_ref=[r[0] for r in rows], floors=[6, 6, 18] * (len(rows) // 3),
                 use=["residential"] * len(rows))


def units() -> pd.DataFrame:
    b = buildings()
    return pd.DataFrame({"building_ref": np.repeat(b["ref"].to_numpy(), 2), "number": [1, 2] * len(b),
                         "households": [60, 48] * len(b), "population": [150, 120] * len(b)})


def staff() -> pd.DataFrame:
    return pd.DataFrame({"name": ["张伟", "李娜", "王芳"], "phone": ["13800000001", "13800000002", None],
                         "phone_public": [True, False, False], "party_member": [True, False, True],
                         "home_building_ref": ["C1-B1", None, "C2-B2"]})


def staff_assignments() -> pd.DataFrame:
    return pd.DataFrame({
        "person_name": ["张伟", "李娜", "王芳", "李娜"],
        "person_phone": ["13800000001", "13800000002", None, "13800000002"],
        "role": ["grid_chief", "building_head", "steward", "unit_head"],
        "target_type": ["grid", "building", "micro_grid", "unit"],
        "target_code": [WEST + "001", "C1-B2", WEST + "00101", "C1-B1"],
        "unit_number": [None, None, None, 2],
        "households": [None, None, 12, None],
        "valid_from": ["2025-01-01", "2025-02-01", "2025-03-01", "2025-03-01"],
        "valid_to": [None, None, None, "2025-12-31"],
    })


def source_code(chinese: str) -> str:
    """The incident source code the incidents module uses for a Chinese source name."""
    from geo.incidents.closed_loop import SOURCES

    return next(code for code, name in SOURCES.items() if name == chinese)


def incidents() -> gpd.GeoDataFrame:
    pts = [(121.503, 31.243), (121.512, 31.236), (121.518, 31.231), (121.5005, 31.2305)]
    return gpd.GeoDataFrame({
        "reported_at": ["2025-05-01T09:30:00+08:00", "2025-05-02T14:00:00+08:00", "2025-05-03T08:15:00+08:00",
                        "2025-05-04T20:45:00+08:00"],
        "class_code": ["A01", "B01", "C02", "A03"],
        "source": [source_code(n) for n in ("网格员巡查", "12345热线", "群众上报", "视频发现")],
        "state": ["registered"] * 4, "description": ["占道经营", "小广告", "井盖缺失", "噪音扰民"],
        "reporter": ["张伟", None, "市民", None], "department": ["城管", None, None, "派出所"],
    }, geometry=shapely.points(pts), crs=4326)


LAYER_ORDER = ("streets", "communities", "grids", "micro_grids", "compounds", "buildings", "units", "staff",
               "staff_assignments", "incidents")
MAKERS = {"streets": streets, "communities": communities, "grids": grids, "micro_grids": micro_grids,
          "compounds": compounds, "buildings": buildings, "units": units, "staff": staff,
          "staff_assignments": staff_assignments, "incidents": incidents}


def write(frame: pd.DataFrame, path: Path, **kwargs) -> Path:
    """Write a sample frame by extension (GeoJSON, GeoPackage, CSV, zipped Shapefile)."""
    path = Path(path)
    if path.suffix == ".csv":
        out = pd.DataFrame(frame.drop(columns="geometry", errors="ignore"))
        if isinstance(frame, gpd.GeoDataFrame):
            out["wkt"] = shapely.to_wkt(frame.geometry.values, rounding_precision=-1)
        out.to_csv(path, index=False, encoding=kwargs.get("encoding", "utf-8"))
        return path
    if path.suffix == ".zip":
        return zipped_shapefile(frame, path, **kwargs)
    if not isinstance(frame, gpd.GeoDataFrame):
        frame = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([None] * len(frame)), crs=4326)
    pyogrio.write_dataframe(frame, path, **kwargs)
    return path


def zipped_shapefile(frame: gpd.GeoDataFrame, path: Path, encoding: str = "UTF-8", cpg: bool = True,
                     prj: bool = True) -> Path:
    """A zipped Shapefile; `cpg=False` drops the .cpg (as many Chinese desktop tools do), `prj=False` the .prj."""
    tmp = path.parent / (path.stem + "_parts")
    tmp.mkdir()
    shp = tmp / (path.stem + ".shp")
    pyogrio.write_dataframe(frame, shp, encoding=encoding)
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(tmp.iterdir()):
            if (f.suffix == ".cpg" and not cpg) or (f.suffix == ".prj" and not prj):
                continue
            z.write(f, f.name)
    return path


def feature_collection(features: list[tuple[dict, dict | None]], crs: str | None = None) -> dict:
    fc: dict = {"type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": p, "geometry": g} for p, g in features]}
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    return fc


def write_json(obj: dict, path: Path) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


#: The sample boundaries take effect on this date (before the sample incidents, so those are attributed).
VALID_FROM = "2025-01-01"


def load_all(target, tmp_path: Path, layers=LAYER_ORDER, suffix: str = ".geojson") -> dict:
    """Import every sample layer in order (boundaries from VALID_FROM); returns the reports."""
    from geo.io import ImportOptions, import_layer

    reports = {}
    for layer in layers:
        path = write(MAKERS[layer](), tmp_path / f"{layer}{suffix}")
        reports[layer] = import_layer(target, layer, path, ImportOptions(valid_from=VALID_FROM))
    return reports
