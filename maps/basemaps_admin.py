"""The basemap admin page (底图设置, `/admin/basemaps`): a table of layers to edit, reorder, add and remove, a
preview map, save and reset. Page rendering only: the page reads and saves through `/v1/basemaps`
(maps/static/leader/basemaps_admin.js)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from maps.assets import STATIC_URL, OfflineAssetError, external_resources, install_asset_helper

_env = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
                   autoescape=select_autoescape(["html"]))
install_asset_helper(_env)  # asset(path): /static/<path>?v=<content hash>


def render_basemaps_admin(username: str, static_url: str = STATIC_URL) -> str:
    """The admin page's HTML (its data comes from `/v1/basemaps`)."""
    page = _env.get_template("basemaps_admin.html").render(username=username, static_url=static_url)
    external = external_resources(page)
    if external:
        raise OfflineAssetError(f"the page would load external resources: {external}")
    return page
