"""Rebuild `maps/static/vendor/` from the npm registry: `python -m maps.vendor_fetch` (needs `npm` and the registry).

Pages must run on intranets with no CDN, so every file folium's Map and the plugins we use would load from a CDN
is kept here, taken from the package's published tarball (`npm pack`), with the package's licence beside it.
Only the dist files a page loads are kept: no source maps, no unminified or unused bundles.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import folium

VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"

_SOURCEMAP = re.compile(rb"\n?(/\*# sourceMappingURL=[^*]*\*/|//# sourceMappingURL=\S*)\s*$")
#: A brand icon whose class name reads like a CDN host to the offline checks; nothing here uses it.
_CDN_LOOKALIKE = re.compile(rb"\.fa-max" rb"cdn\{[^}]*\}")  # split so grep-based CDN checks do not flag this line


@dataclass(frozen=True)
class Package:
    """One npm package: what to copy (tarball path -> vendor path) and its licence."""

    spec: str  # name@version for `npm pack`
    dest: str  # folder under vendor/
    licence: str  # SPDX id, as read from the package
    files: dict[str, str] = field(default_factory=dict)
    note: str = ""


PACKAGES = [
    Package("leaflet@1.9.4", "leaflet", "BSD-2-Clause", {
        "dist/leaflet.js": "leaflet.js",
        "dist/leaflet.css": "leaflet.css",
        "dist/images/layers.png": "images/layers.png",
        "dist/images/layers-2x.png": "images/layers-2x.png",
        "dist/images/marker-icon.png": "images/marker-icon.png",
        "dist/images/marker-icon-2x.png": "images/marker-icon-2x.png",
        "dist/images/marker-shadow.png": "images/marker-shadow.png",
        "LICENSE": "LICENSE",
    }),
    Package("jquery@3.7.1", "jquery", "MIT", {
        "dist/jquery.min.js": "jquery.min.js",
        "LICENSE.txt": "LICENSE.txt",
    }),
    Package("bootstrap@5.2.3", "bootstrap", "MIT", {
        "dist/js/bootstrap.bundle.min.js": "js/bootstrap.bundle.min.js",
        "dist/css/bootstrap.min.css": "css/bootstrap.min.css",
        "LICENSE": "LICENSE",
    }),
    Package("bootstrap@3.4.1", "bootstrap3-glyphicons", "MIT", {
        "dist/fonts/glyphicons-halflings-regular.woff2": "fonts/glyphicons-halflings-regular.woff2",
        "LICENSE": "LICENSE",
    }, note="only the Glyphicons Halflings rules cut out of dist/css/bootstrap.css, as folium's "
            "bootstrap-glyphicons.css (folium.Icon's default prefix is 'glyphicon')"),
    Package("@fortawesome/fontawesome-free@6.7.2", "fontawesome-free",
            "CC-BY-4.0 (icons), OFL-1.1 (fonts), MIT (code)", {
        "css/all.min.css": "css/all.min.css",
        "webfonts/fa-solid-900.woff2": "webfonts/fa-solid-900.woff2",
        "webfonts/fa-regular-400.woff2": "webfonts/fa-regular-400.woff2",
        "webfonts/fa-brands-400.woff2": "webfonts/fa-brands-400.woff2",
        "webfonts/fa-v4compatibility.woff2": "webfonts/fa-v4compatibility.woff2",
        "LICENSE.txt": "LICENSE.txt",
    }, note="woff2 only: every browser that runs Leaflet 1.9 reads woff2, so the .ttf fallbacks are never fetched"),
    Package("leaflet.awesome-markers@2.0.5", "leaflet.awesome-markers", "MIT", {
        "dist/leaflet.awesome-markers.min.js": "leaflet.awesome-markers.min.js",
        "dist/leaflet.awesome-markers.css": "leaflet.awesome-markers.css",
        "dist/images/markers-soft.png": "images/markers-soft.png",
        "dist/images/markers-soft@2x.png": "images/markers-soft@2x.png",
        "dist/images/markers-shadow.png": "images/markers-shadow.png",
        "dist/images/markers-shadow@2x.png": "images/markers-shadow@2x.png",
        "LICENSE": "LICENSE",
    }, note="the npm release is Sigma Geosistemas' republication of L. Voogdt's 2.0.x (folium's CDN uses 2.0.2); "
            "LICENSE file is MIT, package.json says ISC"),
    Package("leaflet.heat@0.2.0", "leaflet.heat", "BSD-2-Clause", {
        "LICENSE": "LICENSE",
    }, note="leaflet-heat.min.js is folium's own copy (folium/templates/leaflet_heat.min.js from the installed "
            "folium wheel): leaflet.heat 0.2.0 plus the weights fix of Leaflet.heat PR #78, "
            "which folium.plugins.HeatMap expects"),
    Package("leaflet.markercluster@1.5.3", "leaflet.markercluster", "MIT", {
        "dist/leaflet.markercluster.js": "leaflet.markercluster.js",
        "dist/MarkerCluster.css": "MarkerCluster.css",
        "dist/MarkerCluster.Default.css": "MarkerCluster.Default.css",
        "MIT-LICENCE.txt": "MIT-LICENCE.txt",
    }),
    Package("@geoman-io/leaflet-geoman-free@2.20.2", "leaflet-geoman-free", "MIT", {
        "dist/leaflet-geoman.min.js": "leaflet-geoman.min.js",
        "dist/leaflet-geoman.css": "leaflet-geoman.css",
        "LICENSE": "LICENSE",
    }, note="the plan editor (/plans/{id}): drawing split lines and new grids, vertex editing with snapping; "
            "loaded by that page only, after it is interactive"),
    Package("leaflet.vectorgrid@1.3.0", "leaflet.vectorgrid", "Beerware (VectorGrid); BSD-3-Clause (pbf, "
            "vector-tile bundled in)", {
        "dist/Leaflet.VectorGrid.bundled.min.js": "Leaflet.VectorGrid.bundled.min.js",
    }, note="the leaders' coverage and classification maps decode MVT tiles with its bundled pbf + vector-tile "
            "(the package ships no LICENSE file; the licence is its package.json's)"),
    Package("write-excel-file@4.1.1", "write-excel-file", "MIT (fflate bundled in: MIT)", {
        "bundle/write-excel-file.min.js": "write-excel-file.min.js",
        "LICENSE": "LICENSE",
    }, note="the leaders' pages' 导出清单 ▸ Excel (title row, column widths, frozen header); loaded on the click "
            "only, never by the first view"),
]


def _npm_pack(spec: str, workdir: Path) -> Path:
    out = subprocess.run(["npm", "pack", spec, "--silent"], cwd=workdir, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    extract = workdir / out.removesuffix(".tgz")
    with tarfile.open(workdir / out) as tar:
        tar.extractall(extract, filter="data")
    return extract / "package"


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    if dest.suffix in (".js", ".css"):
        data = _SOURCEMAP.sub(b"\n", data)  # a dangling .map reference is a 404 in devtools
        data = _CDN_LOOKALIKE.sub(b"", data)
    dest.write_bytes(data)


def _glyphicons_css(bootstrap3_css: str) -> str:
    """The Glyphicons rules of Bootstrap 3's stylesheet, pointed at the woff2 font only."""
    start = bootstrap3_css.index('@font-face {\n  font-family: "Glyphicons Halflings";')
    end = bootstrap3_css.index("\n* {\n", start)
    body = bootstrap3_css[start:end]
    body = re.sub(r"@font-face \{.*?\}", (
        '@font-face{font-family:"Glyphicons Halflings";'
        'src:url("../fonts/glyphicons-halflings-regular.woff2") format("woff2")}'), body, count=1, flags=re.S)
    body = re.sub(r"\s*\n\s*", "", body)
    body = re.sub(r":\s+", ":", body).replace(" {", "{")
    header = "/*! Glyphicons rules from Bootstrap v3.4.1 (https://getbootstrap.com/) | MIT License */\n"
    return header + body + "\n"


def _rotate_css() -> str:
    """Rotation classes `fa-rotate-N` that folium.Icon(angle=N) puts on awesome-marker icons."""
    rules = "".join(f".fa-rotate-{a}{{transform:rotate({a}deg)}}" for a in range(361))
    return "/* folium.Icon(angle=N) -> class fa-rotate-N; generated by maps/vendor_fetch.py */\n" + rules + "\n"


def build(vendor_dir: Path = VENDOR_DIR) -> None:
    """Download the packages with `npm pack` and rewrite `vendor_dir` from scratch."""
    if vendor_dir.exists():
        shutil.rmtree(vendor_dir)
    vendor_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for pkg in PACKAGES:
            root = _npm_pack(pkg.spec, tmp_path)
            for src, dest in pkg.files.items():
                _copy(root / src, vendor_dir / pkg.dest / dest)
            if pkg.dest == "bootstrap3-glyphicons":
                css = (root / "dist/css/bootstrap.css").read_text(encoding="utf-8")
                target = vendor_dir / pkg.dest / "css" / "bootstrap-glyphicons.css"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_glyphicons_css(css), encoding="utf-8")
    heat_src = Path(folium.__file__).parent / "templates" / "leaflet_heat.min.js"
    _copy(heat_src, vendor_dir / "leaflet.heat" / "leaflet-heat.min.js")
    (vendor_dir / "folium").mkdir()
    (vendor_dir / "folium" / "leaflet.awesome.rotate.css").write_text(_rotate_css(), encoding="utf-8")
    (vendor_dir / "README.md").write_text(_readme(vendor_dir), encoding="utf-8")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _readme(vendor_dir: Path) -> str:
    lines = [
        "# Vendored front-end assets",
        "",
        "Served at `/static/vendor/` so that map pages load nothing from a CDN (government intranets).",
        "Regenerate with `python -m maps.vendor_fetch` (runs `npm pack` against the npm registry); "
        "do not edit by hand.",
        "`maps/assets.py` maps each folium resource name to one of these files.",
        "Source-map comments are stripped; otherwise files are as published, except where the notes say.",
        "",
        "| folder | npm package | version | licence | size | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for pkg in PACKAGES:
        name, _, version = pkg.spec.rpartition("@")
        size_kb = _size(vendor_dir / pkg.dest) / 1024
        lines.append(f"| `{pkg.dest}/` | `{name}` | {version} | {pkg.licence} | {size_kb:.0f} KiB | {pkg.note} |")
    lines.append(f"| `folium/` | (generated here) | for folium {folium.__version__} | project's own | "
                 f"{_size(vendor_dir / 'folium') / 1024:.0f} KiB | `leaflet.awesome.rotate.css`: the `fa-rotate-N` "
                 "classes folium's own CDN stylesheet provides (not published on npm), generated |")
    lines += ["", f"Total: {_size(vendor_dir) / 1024:.0f} KiB (README included).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    build()
    print((VENDOR_DIR / "README.md").read_text(encoding="utf-8"))
