"""The HTML view of the OGC API Features endpoints (`/ogc…?f=html`): links, collections, and a page of features
as a table beside a small offline map (vendored Leaflet, no tiles)."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from maps.assets import STATIC_URL, OfflineAssetError, external_resources, install_asset_helper

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
install_asset_helper(_env)  # asset(path): /static/<path>?v=<content hash>

TITLES = {"landing": "网格要素服务", "conformance": "符合性声明", "collections": "要素集合",
          "collection": "要素集合", "items": "要素", "item": "要素"}


def render_ogc_page(kind: str, body: dict, path: str, static_url: str = STATIC_URL) -> str:
    """The page for one OGC API answer (`kind`: landing, conformance, collections, collection, items, item)."""
    features = body.get("features") if kind == "items" else ([body] if kind == "item" else [])
    columns: list[str] = []
    for feat in features or []:
        for key in feat.get("properties", {}):
            if key not in columns:
                columns.append(key)
    geojson = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f.get("id"), "geometry": f.get("geometry"), "properties": {}}
        for f in features or []]}, ensure_ascii=False).replace("</", "<\\/")
    page = _env.get_template("ogc.html").render(
        kind=kind, body=body, title=body.get("title") or TITLES.get(kind, "网格要素服务"), path=path,
        features=features, columns=columns, geojson=geojson, static_url=static_url)
    external = external_resources(page)
    if external:
        raise OfflineAssetError(f"the OGC page would load external resources: {external}")
    return page
