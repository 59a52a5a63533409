"""Offline folium maps: every script, stylesheet and font comes from `/static/vendor/`, never a CDN or a public
tile server.

Government intranets (政务内网) have no internet, so a page that pulls Leaflet from jsdelivr shows nothing.
`offline_map()` returns a folium Map whose own resources, and those of every folium plugin added under it, are
rewritten to the vendored copies when the page is rendered (see `localise`). `render_page()` gives the full page.

Static files are addressed by content (资源版本): `asset_url('leader/leader.css')` is
`/static/leader/leader.css?v=<first 12 hex digits of its SHA-256>`, and `asset` is the same as a Jinja global
(`install_asset_helper(env)`), so a browser may keep a file for a year (`maps/static_mount.py` answers a matching
`v` with `Cache-Control: immutable`) and fetches it anew as soon as its content, hence its URL, changes.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import folium
from branca.element import CssLink, Element, Figure, JavascriptLink, MacroElement
from folium.elements import JSCSSMixin
from folium.template import Template
from jinja2 import Environment, pass_context
from jinja2.runtime import Context

#: URL prefix under which `maps/static` is mounted (see maps/static_mount.py).
STATIC_URL = "/static"
#: The directory served there.
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Hex digits of the SHA-256 kept in an asset's `v` (48 bits: no two versions of one file collide in practice).
HASH_DIGITS = 12

_HASHES: dict[str, tuple[int, int, str]] = {}
_HASHES_LOCK = threading.Lock()


def asset_hash(path: str) -> str | None:
    """The content hash (`HASH_DIGITS` hex digits of SHA-256) of `path` under maps/static; None when there is no
    such file (or the path leaves the directory). Read again only when the file's size or mtime changes."""
    root = STATIC_DIR.resolve()
    file = (root / path.lstrip("/")).resolve()
    if not file.is_relative_to(root) or not file.is_file():
        return None
    st = file.stat()
    key = str(file)
    with _HASHES_LOCK:
        known = _HASHES.get(key)
    if known is not None and known[:2] == (st.st_mtime_ns, st.st_size):
        return known[2]
    digest = hashlib.sha256(file.read_bytes()).hexdigest()[:HASH_DIGITS]
    with _HASHES_LOCK:
        _HASHES[key] = (st.st_mtime_ns, st.st_size, digest)
    return digest


def asset_url(path: str, static_url: str = STATIC_URL) -> str:
    """The URL of a static file with its content hash: `/static/<path>?v=<hash>` (without `v` if it is missing)."""
    path = path.lstrip("/")
    digest = asset_hash(path)
    return f"{static_url}/{path}?v={digest}" if digest else f"{static_url}/{path}"


@pass_context
def asset(context: Context, path: str) -> str:
    """Jinja global: `{{ asset('leader/leader.css') }}`, under the template's `static_url` when it has one."""
    return asset_url(path, str(context.get("static_url") or STATIC_URL))


def install_asset_helper(env: Environment) -> Environment:
    """Make `asset(path)` available to every template of `env`."""
    env.globals["asset"] = asset
    return env

#: folium resource name -> path under `static/vendor/`. Keyed by name, not URL, so a folium upgrade that bumps a
#: CDN version still resolves; None drops a resource that has no use offline.
VENDORED: dict[str, str | None] = {
    # folium.Map
    "leaflet": "leaflet/leaflet.js",
    "jquery": "jquery/jquery.min.js",
    "bootstrap": "bootstrap/js/bootstrap.bundle.min.js",
    "awesome_markers": "leaflet.awesome-markers/leaflet.awesome-markers.min.js",
    "leaflet_css": "leaflet/leaflet.css",
    "bootstrap_css": "bootstrap/css/bootstrap.min.css",
    "glyphicons_css": "bootstrap3-glyphicons/css/bootstrap-glyphicons.css",
    "awesome_markers_font_css": "fontawesome-free/css/all.min.css",
    "awesome_markers_css": "leaflet.awesome-markers/leaflet.awesome-markers.css",
    "awesome_rotate_css": "folium/leaflet.awesome.rotate.css",
    # folium.plugins.HeatMap
    "leaflet-heat.js": "leaflet.heat/leaflet-heat.min.js",
    # folium.plugins.MarkerCluster
    "markerclusterjs": "leaflet.markercluster/leaflet.markercluster.js",
    "markerclustercss": "leaflet.markercluster/MarkerCluster.css",
    "markerclusterdefaultcss": "leaflet.markercluster/MarkerCluster.Default.css",
}

#: Our shared stylesheet (legend box, popup tables, CJK fonts), linked last so it wins over the vendored CSS.
APP_CSS = "app.css"

#: Street/community scale: a grid (网格) of ~50,000 m² fills a good part of the screen.
DEFAULT_ZOOM = 15
DEFAULT_MAX_ZOOM = 20

_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)


class OfflineAssetError(ValueError):
    """A map element needs a JS/CSS resource that is not vendored (it would be fetched from a CDN)."""


def _is_external(url: str) -> bool:
    return bool(_EXTERNAL.match(url.strip()))


def _walk(element: Element) -> Iterable[Element]:
    yield element
    for child in list(element._children.values()):
        yield from _walk(child)
    if isinstance(element, Figure):
        for part in (element.header, element.html, element.script):
            yield from _walk(part)


def _local_links(links: Sequence[tuple[str, str]], owner: str, static_url: str) -> list[tuple[str, str]]:
    out = []
    for name, url in links:
        if not _is_external(url):
            out.append((name, url))
            continue
        if name not in VENDORED:
            raise OfflineAssetError(
                f"{owner} loads {name!r} from {url}; vendor it under maps/static/vendor "
                f"(maps/vendor_fetch.py) and add it to maps.assets.VENDORED"
            )
        path = VENDORED[name]
        if path is not None:
            out.append((name, asset_url(f"vendor/{path}", static_url)))
    return out


def page_root(m: folium.Map) -> Figure:
    """The HTML page (branca Figure) a map renders into: its header, html and script sections."""
    root = m.get_root()
    assert isinstance(root, Figure)
    return root


def localise(element: Element, static_url: str = STATIC_URL) -> Element:
    """Point every folium JS/CSS resource in `element`'s tree at `/static/vendor/`; raise if one is not vendored.

    Tile layers must be the configured intranet server (settings.tile_url or the map's `tile_url`): a public
    tile server such as folium's default OpenStreetMap is refused.
    """
    elements = list(_walk(element))
    allowed_tiles = {_settings_tile_url()} | {getattr(el, "tile_url", None) for el in elements}
    for el in elements:
        if isinstance(el, folium.TileLayer) and _is_external(str(el.tiles)) and el.tiles not in allowed_tiles:
            raise OfflineAssetError(
                f"tile layer {el.tiles} is not the configured intranet tile server; "
                "build the map with maps.assets.offline_map (tiles=None, or tile_url=...)"
            )
        if isinstance(el, JSCSSMixin):
            # Instance attributes: folium's add_js_link mutates the class-level list, which we must not share.
            owner = type(el).__name__
            el.default_js = _local_links(el.default_js, owner, static_url)
            el.default_css = _local_links(el.default_css, owner, static_url)
        elif isinstance(el, (JavascriptLink, CssLink)) and _is_external(el.url):
            raise OfflineAssetError(f"a {type(el).__name__} points at {el.url}; serve it from /static instead")
    return element


class OfflineMap(folium.Map):
    """A folium Map that localises itself and everything under it each time it renders."""

    def __init__(self, *args, static_url: str = STATIC_URL, tile_url: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.static_url = static_url
        self.tile_url = tile_url  # the intranet tile server this map was built with, if any

    def render(self, **kwargs):
        localise(self, self.static_url)
        super().render(**kwargs)


class MetricScale(MacroElement):
    """A scale bar in metres only (folium's control_scale adds feet and miles too)."""

    _template = Template(
        """
{% macro script(this, kwargs) %}
    L.control.scale({imperial: false, maxWidth: 150}).addTo({{ this._parent.get_name() }});
{% endmacro %}
"""
    )

    def __init__(self):
        super().__init__()
        self._name = "MetricScale"


def _settings_tile_url() -> str | None:
    # An intranet tile server, when the deployment has one (GRIDATLAS_TILE_URL); a public one would break offline use.
    from geo.settings import get_settings

    return get_settings().tile_url or None


def offline_map(
    location: Sequence[float] | None = None,
    zoom_start: int = DEFAULT_ZOOM,
    bounds: Sequence[Sequence[float]] | None = None,
    *,
    tile_url: str | None = None,
    tile_attribution: str | None = None,
    max_zoom: int = DEFAULT_MAX_ZOOM,
    tile_max_native_zoom: int = 18,
    static_url: str = STATIC_URL,
    **kw,
) -> folium.Map:
    """A folium Map with vendored assets and no tiles (or the intranet `tile_url`, default settings.tile_url).

    `location` is (lat, lon); `bounds` is ((south, west), (north, east)) and, when given, the map fits it.
    Extra keywords go to folium.Map (e.g. width, height, prefer_canvas).
    """
    if tile_url is None:
        tile_url = _settings_tile_url()
    if bounds is not None:
        (south, west), (north, east) = bounds
        if location is None:
            location = ((south + north) / 2.0, (west + east) / 2.0)
    metric_scale = kw.pop("control_scale", True)
    m = OfflineMap(location=location, zoom_start=zoom_start, tiles=None, static_url=static_url,
                   tile_url=tile_url or None, **kw)
    if metric_scale:
        MetricScale().add_to(m)
    # Without a tile layer Leaflet has no max zoom, and fitting a tiny bounds would zoom without limit.
    m.options["max_zoom"] = max_zoom
    if tile_url:
        folium.TileLayer(
            tiles=tile_url,
            attr=tile_attribution or "内网底图",
            name="底图",
            max_zoom=max_zoom,
            max_native_zoom=min(tile_max_native_zoom, max_zoom),  # over-zoom instead of requesting missing tiles
        ).add_to(m)
    if bounds is not None:
        m.fit_bounds([list(bounds[0]), list(bounds[1])])
    return m


def render_page(m: folium.Map, title: str, static_url: str | None = None) -> str:
    """The full HTML page for a map: lang zh-CN, UTF-8, a title, vendored assets plus /static/app.css."""
    static_url = str(static_url or getattr(m, "static_url", STATIC_URL))
    figure = page_root(m)
    localise(figure, static_url)
    page = figure.render()
    head = (
        '<meta charset="utf-8">\n'
        f"    <title>{html.escape(title)}</title>\n"
        # An explicit icon, so browsers do not ask for /favicon.ico (a 404 in every page's console otherwise).
        f'    <link rel="icon" href="{asset_url("favicon.svg", static_url)}" type="image/svg+xml">\n'
    )
    # a function, not a template: the title is user text, never a regex replacement (its backslashes are text)
    opening = f'<html lang="zh-CN">\n<head>\n    {head}'
    page, n = re.subn(r"<html[^>]*>\s*<head>", lambda _: opening, page, count=1)
    if n != 1:
        raise RuntimeError("unexpected folium page template: no <html><head>")
    page = page.replace("</head>", f'    <link rel="stylesheet" href="{asset_url(APP_CSS, static_url)}"/>\n</head>', 1)
    external = external_resources(page)
    if external:
        raise OfflineAssetError(f"page still loads external resources: {external}")
    return page


_RESOURCE = re.compile(r"""<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)


def external_resources(page: str) -> list[str]:
    """URLs of scripts, stylesheets, images and frames in `page` that point off this server."""
    return [url for url in _RESOURCE.findall(page) if _is_external(url)]


_LEGEND_TEMPLATE = Template(
    """
{% macro script(this, kwargs) %}
    var {{ this.get_name() }} = L.control({position: {{ this.position|tojson }}});
    {{ this.get_name() }}.onAdd = function (map) {
        var div = L.DomUtil.create("div", "ga-legend");
        div.innerHTML = {{ this.body|tojson }};
        L.DomEvent.disableClickPropagation(div);
        L.DomEvent.disableScrollPropagation(div);
        return div;
    };
    {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
{% endmacro %}
"""
)

_COLOR = re.compile(r"^(#[0-9a-fA-F]{3,8}|[a-zA-Z]+|(rgb|rgba|hsl|hsla)\([0-9.,%\s]+\))$")


class Legend(MacroElement):
    """A legend (图例) box drawn as a Leaflet control: a title and coloured swatches with labels."""

    _template = _LEGEND_TEMPLATE

    def __init__(self, title: str, items: Sequence[tuple[str, str]], position: str = "bottomright"):
        super().__init__()
        self._name = "Legend"
        if position not in {"topleft", "topright", "bottomleft", "bottomright"}:
            raise ValueError(f"bad legend position {position!r}")
        self.position = position
        rows = []
        for color, label in items:
            if not _COLOR.match(str(color).strip()):
                raise ValueError(f"not a CSS colour: {color!r}")
            rows.append(
                f'<li><span class="ga-swatch" style="background:{color}"></span>{html.escape(str(label))}</li>'
            )
        self.body = f'<div class="ga-legend-title">{html.escape(title)}</div><ul>{"".join(rows)}</ul>'


def legend_html(title: str, items: Sequence[tuple[str, str]], position: str = "bottomright") -> Legend:
    """A legend element to add to a map: `legend_html("类型", [("#1b9e77", "同等"), ...]).add_to(m)`."""
    return Legend(title, items, position)


def js_literal(value) -> str:
    """JSON safe to embed inside a <script> element (no ``<``, ``>`` or ``&`` to end or confuse it)."""
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


#: Where a map with nothing to fit opens (lat, lon), at town zoom.
FALLBACK_LOCATION = (31.3, 120.6)
FALLBACK_ZOOM = 13


def fitted_map(bounds: Sequence[Sequence[float]] | None, **kw) -> folium.Map:
    """An offline map fitted to `bounds` ((south, west), (north, east)); a town-wide view when there are none."""
    if bounds:
        return offline_map(bounds=bounds, **kw)
    return offline_map(location=FALLBACK_LOCATION, zoom_start=FALLBACK_ZOOM, **kw)


_PANEL_TEMPLATE = Template(
    """
{% macro script(this, kwargs) %}
    (function (map) {
        var panel = L.control({position: {{ this.position|tojson }}});
        panel.onAdd = function () {
            var div = L.DomUtil.create("div", {{ this.css_class|tojson }});
            div.innerHTML = {{ this.body }};
            L.DomEvent.disableClickPropagation(div);
            L.DomEvent.disableScrollPropagation(div);{{ this.on_add }}
            return div;
        };
        panel.addTo(map);
    })({{ this._parent.get_name() }});
{% endmacro %}
"""
)


class Panel(MacroElement):
    """A control panel (说明面板) on the map: an HTML box that keeps clicks and scrolls from reaching the map.

    `on_add` is JavaScript run when the box is built, with the box as `div` (e.g. to bind its form controls).
    """

    _template = _PANEL_TEMPLATE

    def __init__(self, body_html: str, css_class: str = "ga-legend", position: str = "topright", on_add: str = "",
                 name: str = "Panel"):
        super().__init__()
        self._name = name
        if position not in {"topleft", "topright", "bottomleft", "bottomright"}:
            raise ValueError(f"bad panel position {position!r}")
        self.position = position
        self.css_class = css_class
        self.body = js_literal(body_html)
        self.on_add = "\n" + on_add.rstrip("\n") if on_add else ""
