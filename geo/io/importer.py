"""Importing a layer from a file (导入): read, map fields, reproject, validate, and write in one transaction.

`import_layer(engine, layer, path, options)` reads the file, maps its columns, converts its coordinates to
EPSG:4326, checks and repairs geometries, merges split pieces, then stages the rows in a temporary table and
checks them against the database (parents, overlaps, coverage gaps, households) before writing. Everything
happens in one transaction (a savepoint when given a Connection): a failure at any point, or ``strict`` with any
problem, or ``dry_run``, leaves the database exactly as it was.

Boundaries are never overwritten: an import of streets, communities, grids or micro-grids creates a boundary
version (or joins an existing one), ends the boundary rows in force for the same codes at its start, and adds new
rows from then on. It first takes the per-community lock publish and rollback take (`geo.store.locks`) for every
existing community it touches, in id order, so a plan drafted before the import can no longer be published over it
(the publish waits, then finds the community's token changed: 412).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from geo.errors import DomainError, NotFound
from geo.io import overlaps as overlap_resolution
from geo.io.codes import load_scheme
from geo.io.fields import (
    LayerSpec,
    MappingError,
    columns_read,
    convert_column,
    layer_spec,
    match_fields,
    parse_mapping,
    required_missing,
    with_osm_address,
)
from geo.io.readers import SourceData, read_source
from geo.io.reproject import likely_crs, source_crs, to_storage
from geo.io.validate import (
    Issue,
    check_geometries,
    code_prefix_collisions,
    colliding_codes,
    coverage_gaps,
    household_band,
    issues_geojson,
    merge_and_deduplicate,
    outside_parent,
    overlaps,
)
from geo.settings import get_settings
from geo.spatial.geometry import ewkb_hex
from geo.store.load import BOUNDARY_TABLES, LEVELS, copy_rows, create_version, parse_at
from geo.store.locks import lock_communities
from geo.store.models import Community, Grid, MicroGrid, Street
from geo.store.transactions import dry_run_transaction
from geo.store.versions import in_force

#: Parent level, the column naming it in the file, the foreign key and the parent code length.
PARENTS = {
    "communities": ("streets", "street_code", "street_id", 9),
    "grids": ("communities", "community_code", "community_id", 12),
    "micro_grids": ("grids", "grid_code", "grid_id", 15),
}
SINGULAR = {"streets": "street", "communities": "community", "grids": "grid", "micro_grids": "micro-grid"}
STAGE = "import_stage"
PLACE = "import_place"
RESULT = "import_result"
PROGRESS_EVERY = 5000


class ImportRefused(DomainError, RuntimeError):
    """Strict mode found problems: nothing was written; `report` lists them (the problem's `report` member)."""

    slug = "import-refused"
    title = "Import refused"

    def __init__(self, report: ImportReport):
        kinds = ", ".join(f"{n} {k}" for k, n in report.counts_by_kind().items())
        super().__init__(f"strict import refused: {len(report.issues)} problem(s) ({kinds}); nothing was written",
                         report=report.as_answer())
        self.report = report


class ImportFailed(DomainError, RuntimeError):
    """The import failed part-way (database error, interruption): the transaction was rolled back."""

    slug = "import-failed"
    kind = "failed"
    title = "Import failed"


class UnknownVersion(NotFound, LookupError):
    """No boundary version has this id."""


@dataclass
class ImportOptions:
    """How to import: field mapping, CRS override, source layer, strictness, dry run, version and checks."""

    mapping: str | dict[str, str] | None = None
    crs: str | None = None
    source_layer: str | None = None
    encoding: str | None = None
    strict: bool = False
    dry_run: bool = False
    #: 'auto' (swapped-looking coordinates are an error), 'swap' (the file is latitude first) or 'as-is'.
    axis_order: str = "auto"
    allow_outside_china: bool = False
    #: When new boundaries take effect (default: now); ignored when `version_id` is given.
    valid_from: dt.datetime | dt.date | str | None = None
    #: Import boundaries into this existing version (its valid_from) instead of creating one.
    version_id: int | None = None
    label: str | None = None
    actor: str | None = None
    #: Overlaps, gaps and parts outside the parent smaller than this (m²) are digitising noise, not problems.
    tolerance_m2: float = 1.0
    #: The code scheme (data/code_schemes/<name>.json, or a .json path): code lengths per level, parent prefixes.
    code_scheme: str | None = None
    #: Features further than this (km) from their parents, or from the boundaries in the database, are flagged as
    #: read in an implausible CRS (with the likely intended one).
    crs_check_km: float = 30.0
    #: Create streets and communities named by grid and community codes (and a 所属社区 column) but missing.
    derive_parents: bool = True
    #: A geometry repair may change the drawn area by at most this fraction (0.001 = 0.1 %) …
    repair_tolerance: float = 0.001
    #: … else the feature is refused ("refuse") or imported as repaired and flagged ("flag").
    repair_over_tolerance: str = "refuse"
    #: The name the file was uploaded under (picks the format when the stored path has none).
    filename: str | None = None
    #: Called inside the transaction with the jurisdiction code of every feature to be written (None when a
    #: feature lies in no unit); raising aborts the import and rolls everything back.
    authorize: Callable[[str, list[str | None]], None] | None = None
    #: Give every overlap between siblings to one of the two (the named owner, else the longer shared edge), all
    #: or nothing; without it overlaps are flagged with the proposed resolution only.
    resolve_overlaps: bool = False
    #: Owners named per overlapping pair, 'A/B=A,C/D=D' (applied even without `resolve_overlaps`).
    overlap_owners: str | dict[str, str] | None = None
    #: progress(stage, done, total) during long imports.
    progress: Callable[[str, int, int], None] | None = None
    #: audit(action, target_type, target_id, jurisdiction_code, after) records the import (default: geo.access.audit
    #: with the actor above, from "local"); runs inside the import's transaction.
    audit: Callable[..., object] | None = None


@dataclass
class ImportReport:
    """What an import read, wrote, repaired and refused, with every problem found."""

    layer: str
    source: str
    format: str = ""
    crs: str = ""
    encoding: str | None = None
    source_layer: str | None = None
    field_mapping: dict[str, str] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    #: "we read column X as Y", one line per column used (what the dry run shows).
    columns_read: list[str] = field(default_factory=list)
    #: Streets and communities the import created from codes and names in the file (hierarchy as found).
    parents_derived: list[dict] = field(default_factory=list)
    #: Checks that could not apply to this data and were skipped, each with the reason.
    checks_skipped: list[str] = field(default_factory=list)
    #: Source columns no stored field takes (所属社区, 网格全称, 面积 …), kept per boundary as attributes.
    attributes_kept: list[str] = field(default_factory=list)
    features_read: int = 0
    features: int = 0
    imported: int = 0
    repaired: int = 0
    merged: int = 0
    refused: int = 0
    created: int = 0
    updated: int = 0
    boundaries_ended: int = 0
    version_id: int | None = None
    valid_from: dt.datetime | None = None
    #: Where valid_from came from: 'given', 'version' (an existing version's), 'now', or 'earliest-incident' (the
    #: start of the day of the earliest incident in the new units' area that no boundary covered).
    valid_from_source: str = "now"
    #: Boundary rows written as history: they end where the unit's existing later boundary begins.
    boundaries_before_existing: int = 0
    #: Incidents in the imported area attributed again by the boundaries in force at their report time.
    incidents_attributed: int = 0
    dry_run: bool = False
    strict: bool = False
    committed: bool = False
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def counts_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.issues:
            out[i.kind] = out.get(i.kind, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> dict:
        """The headline figures: features read, imported, repaired, merged, refused."""
        return {"features_read": self.features_read, "features": self.features, "imported": self.imported,
                "repaired": self.repaired, "merged": self.merged, "refused": self.refused}

    def to_json(self) -> dict:
        """The whole report as JSON-ready data (problems without their geometries)."""
        return {
            "layer": self.layer, "source": self.source, "format": self.format, "crs": self.crs,
            "encoding": self.encoding, "source_layer": self.source_layer, "field_mapping": self.field_mapping,
            "ignored_columns": self.ignored_columns, "columns_read": self.columns_read,
            "checks_skipped": self.checks_skipped, "parents_derived": self.parents_derived,
            "attributes_kept": self.attributes_kept, **self.summary(),
            "created": self.created,
            "updated": self.updated, "boundaries_ended": self.boundaries_ended, "version_id": self.version_id,
            "valid_from": self.valid_from.isoformat() if self.valid_from else None,
            "valid_from_source": self.valid_from_source, "boundaries_before_existing": self.boundaries_before_existing,
            "incidents_attributed": self.incidents_attributed, "dry_run": self.dry_run,
            "strict": self.strict, "committed": self.committed, "problems_by_kind": self.counts_by_kind(),
            "problems": [i.as_dict() for i in self.issues], "notes": self.notes,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def problems_geojson(self) -> dict:
        """The problem locations as a GeoJSON FeatureCollection."""
        return issues_geojson(self.issues)

    def as_answer(self) -> dict:
        """The report as the API answers it: `to_json` plus the problem locations (``problems_geojson``)."""
        return {**self.to_json(), "problems_geojson": self.problems_geojson()}


# --- preparation: everything that needs only the file ---------------------------------------------------------

@dataclass
class Prepared:
    """A file read, mapped, reprojected and checked, ready to stage."""

    spec: LayerSpec
    values: pd.DataFrame
    geoms: np.ndarray
    keep: np.ndarray
    repaired: np.ndarray
    labels: list[str]
    records: list[list[int]]
    issues: list[Issue]
    report: ImportReport
    #: Jurisdiction codes of the features written (filled inside the transaction).
    codes: list[str | None] = field(default_factory=list)
    #: A sample of the features' points in the file's own coordinates, and whether those are metres (for
    #: guessing the intended CRS when the declared one puts the features far from where they belong).
    source_points: np.ndarray | None = None
    source_projected: bool = False
    #: Per record, the kept columns' values as a JSON object text (None when the record has none), or None.
    attributes: np.ndarray | None = None


def _labels(spec: LayerSpec, values: pd.DataFrame) -> list[str]:
    """'record 3 · 320505001001001 · 东湖一网格' for messages; vectorised string assembly."""
    label = pd.Series([f"record {i + 1}" for i in range(len(values))], index=values.index, dtype=object)
    for col in ("code", "ref", "name", "person_name", "building_ref", "number", "class_code"):
        if col in values.columns:
            v = values[col]
            label = label.where(v.isna(), label + " · " + v.astype(str))
    return label.tolist()


def prepare(spec: LayerSpec, path: Path, options: ImportOptions, report: ImportReport) -> Prepared:
    """Read, map, convert, reproject and check a file (no database access)."""
    settings = get_settings()
    data: SourceData = read_source(path, options.source_layer, options.encoding, spec.geometry, spec.name,
                                   options.filename)
    n = len(data)
    report.format, report.encoding, report.source_layer = data.format, data.encoding, data.layer
    report.features_read = n
    report.notes += data.notes
    data.frame = with_osm_address(spec, data.frame)  # OSM's addr:street + addr:housenumber as one address
    match = match_fields(spec, list(data.frame.columns), parse_mapping(options.mapping))
    missing = required_missing(spec, match)
    if missing:
        raise MappingError(
            f"no column for the required field(s) {', '.join(missing)} of {spec.name}; the file's columns are "
            f"{', '.join(map(str, data.frame.columns))}. Name them with --map, e.g. --map "
            + ",".join(f"{m}=<column>" for m in missing))
    report.field_mapping = dict(match.mapping)
    report.ignored_columns = [str(c) for c in match.ignored]
    report.columns_read = columns_read(match)
    _progress(options, "read", n, n)

    values = pd.DataFrame(index=pd.RangeIndex(n))
    bad_cells: list[tuple[np.ndarray, str, pd.Series]] = []
    for f in spec.fields:
        if f.name in match.mapping:
            raw = data.frame[match.mapping[f.name]].reset_index(drop=True)
            converted, bad = convert_column(f, raw, settings.timezone)
            given = int(raw.notna().sum())
            if (match.how[f.name] == "automatic" and not f.required and f.guessable and given
                    and bad.sum() > given / 2):
                # A same-named column meaning something else (OSM's kind=residential is no compound kind).
                sample = ", ".join(map(str, raw[bad].drop_duplicates().head(3)))
                report.notes.append(f"column {match.mapping[f.name]!r} not used for {f.name}: most of its values "
                                    f"({sample}) are not valid; map it with --map to insist")
                report.field_mapping.pop(f.name, None)
                report.ignored_columns.append(str(match.mapping[f.name]))
                report.columns_read = [c for c in report.columns_read
                                       if not c.startswith(f"we read column {match.mapping[f.name]!r} ")]
                values[f.name] = pd.Series([None] * n, dtype=object)
                continue
            values[f.name] = converted
            if bad.any():
                bad_cells.append((bad, f.name, raw))
        else:
            values[f.name] = pd.Series([None] * n, dtype=object)
    kept = kept_columns(spec, report.field_mapping, report.ignored_columns)
    attributes = attribute_texts(data.frame, kept) if kept else None
    if kept:
        report.attributes_kept = kept
        report.notes.append(f"kept as attributes (stored with each boundary and exported back): {', '.join(kept)}")
    labels = _labels(spec, values)
    records = [[i + 1] for i in range(n)]
    issues: list[Issue] = []
    refused = np.zeros(n, dtype=bool)
    for bad, name, raw in bad_cells:
        f = spec.field(name)
        allowed = f" (allowed: {', '.join(sorted(set(f.choices.values())))})" if f.choices else ""
        for i in np.flatnonzero(bad):
            issues.append(Issue("bad-value", "refused", f"{name}: {raw.iloc[i]!r} is not a valid {f.kind}{allowed}",
                                records[i], labels[i], details={"field": name, "value": str(raw.iloc[i])}))
        refused |= bad
    for f in spec.fields:
        if f.required:
            blank = values[f.name].isna().to_numpy() & ~refused
            for i in np.flatnonzero(blank):
                issues.append(Issue("missing-value", "refused", f"{f.name} is empty", records[i], labels[i]))
            refused |= blank
    level_codes = load_scheme(options.code_scheme).level(spec.name)
    refused |= _check_codes(spec, values, labels, records, issues, refused,
                            level_codes.parent_lengths if level_codes else ())
    _check_layer_values(spec, values, labels, records, issues, refused)

    geoms = np.full(n, None, dtype=object)
    repaired = np.zeros(n, dtype=bool)
    if spec.geometry:
        crs = source_crs(data.crs, options.crs)
        report.crs = crs.label + (" (from --crs)" if options.crs else f" ({data.crs_from})")
        if crs.crs is None and crs.named is None:
            report.crs = "EPSG:4326 WGS 84 (assumed: the file declares none)"
        source_points, source_projected = _sample_points(data.geometry, crs)
        geoms = to_storage(data.geometry, crs, labels, options.axis_order, options.allow_outside_china)
        check = check_geometries(geoms, spec.geometry, labels, records, data.ring_fixed, data.curved,
                                 options.repair_tolerance, options.repair_over_tolerance)
        geoms, repaired = check.geoms, check.repaired
        issues += [i for i in check.issues]
        refused |= check.refused
        _progress(options, "validate", n, n)
    merge = merge_and_deduplicate(values, geoms, spec.key, labels, records, ~refused)
    issues += merge.issues
    report.merged = merge.merged_records
    keep = merge.keep & ~refused & ~merge.refused
    # A merged feature counts as repaired when any of its pieces was.
    prep = Prepared(spec, values, merge.geoms, keep, repaired, labels, merge.records, issues, report,
                    attributes=attributes)
    if spec.geometry:
        prep.source_points, prep.source_projected = source_points, source_projected
    return prep


def _sample_points(geoms: np.ndarray, crs) -> tuple[np.ndarray | None, bool]:
    """Up to 200 points on the features, in the file's coordinates (evenly spread over the records)."""
    geoms = np.asarray(geoms, dtype=object)
    present = np.flatnonzero(~shapely.is_missing(geoms) & ~shapely.is_empty(geoms))
    if not present.size:
        return None, False
    pick = present[np.linspace(0, present.size - 1, min(200, present.size)).astype(int)]
    with np.errstate(all="ignore"):
        pts = shapely.get_coordinates(shapely.centroid(geoms[pick]))
    pts = pts[np.isfinite(pts).all(axis=1)]
    metres = bool(len(pts)) and bool((np.abs(pts) > 400).any())
    return (pts if len(pts) else None), metres


#: Fields a level's file may give that no table stores (they serve checks and derived parents): their columns are
#: kept as attributes too, so an export gives them back.
_UNSTORED = {"grids": ("community_name", "households", "population")}


def kept_columns(spec: LayerSpec, mapping: dict[str, str], ignored: list[str]) -> list[str]:
    """The source columns an administrative level keeps as attributes: those no field took, and those read only
    for checks (所属社区, 户数 …); other layers keep none."""
    if spec.name not in LEVELS:
        return []
    unstored = [str(mapping[f]) for f in _UNSTORED.get(spec.name, ()) if f in mapping]
    return list(dict.fromkeys([*unstored, *map(str, ignored)]))


def _json_value(value):
    """A cell as a JSON value (None when missing): numbers, text, booleans, dates as ISO text."""
    if value is None or (not isinstance(value, (str, bytes, list, dict)) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (dt.date, dt.datetime, dt.time, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, bytes):
        return None  # binary blobs are no attribute anyone reads back
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def attribute_texts(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Per row, a JSON object of the non-empty values of `columns` (None for a row with none)."""
    out = np.full(len(frame), None, dtype=object)
    sub = frame.rename(columns=str)[columns].reset_index(drop=True)
    for i, row in enumerate(sub.itertuples(index=False, name=None)):
        kept = {c: v for c, v in zip(columns, map(_json_value, row), strict=True) if v is not None and v != ""}
        if kept:
            out[i] = orjson.dumps(kept).decode()
    return out


#: The code widths the tables hold (their `<table>_code_format` constraints).
_STORE_DIGITS = {"streets": Street.code_digits, "communities": Community.code_digits, "grids": Grid.code_digits,
                 "micro_grids": MicroGrid.code_digits}


#: Codes up to this long are read as codes (and checked against the scheme); longer ones are not codes at all.
CODE_MAX_LENGTH = 24


def with_scheme(spec: LayerSpec, scheme: str | None) -> LayerSpec:
    """The layer's spec with the code scheme's lengths (an administrative level's codes)."""
    level = load_scheme(scheme).level(spec.name)
    if level is None or not spec.code_lengths:
        return spec
    # Longer codes than the scheme's are read as codes and reported as bad-code (with the lengths the scheme and
    # the database allow), not refused as unreadable values.
    longest = max(CODE_MAX_LENGTH, *level.lengths)
    fields = tuple(replace(f, max_length=longest) if f.name == "code" else f for f in spec.fields)
    return replace(spec, fields=fields, code_lengths=level.lengths)


def _check_codes(spec: LayerSpec, values: pd.DataFrame, labels, records, issues, refused,
                 parent_lengths: tuple[int, ...] = ()) -> np.ndarray:
    """Codes of administrative levels: one of the level's lengths (the code scheme's), and under the parent's code
    when one is given; the parent's code is derived from the code's leading digits when none is."""
    bad = np.zeros(len(values), dtype=bool)
    if not spec.code_lengths:
        return bad
    code = values["code"]
    wrong_len = (code.notna() & ~code.fillna("").str.len().isin(spec.code_lengths)).to_numpy() & ~refused
    for i in np.flatnonzero(wrong_len):
        issues.append(Issue("bad-code", "refused",
                            f"code {code.iloc[i]} has {len(code.iloc[i])} digits; a {spec.label} code has "
                            f"{' or '.join(map(str, spec.code_lengths))}", records[i], labels[i]))
    bad |= wrong_len
    stored = _STORE_DIGITS.get(spec.name)
    if stored is not None:
        lo, hi = stored
        unstorable = (code.notna() & ~code.fillna("").str.len().between(lo, hi)).to_numpy() & ~refused & ~bad
        for i in np.flatnonzero(unstorable):
            issues.append(Issue("bad-code", "refused",
                                f"code {code.iloc[i]} has {len(code.iloc[i])} digits: the code scheme allows it, but "
                                f"the database holds {spec.label} codes of {lo}–{hi} digits only", records[i],
                                labels[i]))
        bad |= unstorable
    if spec.name in PARENTS:
        _, col, _, plen = PARENTS[spec.name]
        lengths = parent_lengths or (plen,)
        given = values[col]
        text_code = code.fillna("")
        derived = pd.Series([None] * len(code), index=code.index, dtype=object)
        for n in lengths:  # the first parent length shorter than the code
            take = derived.isna() & code.notna() & (text_code.str.len() > n)
            derived = derived.where(~take, text_code.str[:n])
        prefix_ok = pd.Series([c.startswith(g) if isinstance(c, str) and isinstance(g, str) else True
                               for c, g in zip(code, given, strict=True)], index=code.index)
        mismatch = (given.notna() & code.notna() & ~prefix_ok).to_numpy() & ~refused & ~bad
        for i in np.flatnonzero(mismatch):
            issues.append(Issue("bad-code", "refused", f"code {code.iloc[i]} does not start with its parent's code "
                                f"{given.iloc[i]}", records[i], labels[i]))
        bad |= mismatch
        values[col] = given.where(given.notna(), derived)
    return bad


def _check_layer_values(spec: LayerSpec, values: pd.DataFrame, labels, records, issues, refused) -> None:
    """Layer rules on attribute combinations (refusing in place)."""
    if spec.name == "staff_assignments":
        vf, vt = values["valid_from"], values["valid_to"]
        backwards = (vf.notna() & vt.notna()).to_numpy() & ~refused
        backwards[backwards] = [a > b for a, b in zip(vf[backwards], vt[backwards], strict=True)]
        for i in np.flatnonzero(backwards):
            issues.append(Issue("bad-value", "refused", f"valid_to {vt.iloc[i]} is before valid_from {vf.iloc[i]}",
                                records[i], labels[i]))
        refused |= backwards
        code = values["target_code"].fillna("")
        inferred = np.where(values["unit_number"].notna(), "unit",
                            np.where(code.str.fullmatch(r"[0-9]{15,16}"), "grid",  # 16: dedicated grids
                                     np.where(code.str.fullmatch(r"[0-9]{17,19}"), "micro_grid", "building")))
        values["target_type"] = values["target_type"].where(values["target_type"].notna(), pd.Series(inferred))
    if spec.name == "units":
        no_building = (values["building_ref"].isna() & values["building_code"].isna()).to_numpy() & ~refused
        for i in np.flatnonzero(no_building):
            issues.append(Issue("missing-value", "refused", "neither building_ref nor building_code is given",
                                records[i], labels[i]))
        refused |= no_building


def _progress(options: ImportOptions, stage: str, done: int, total: int) -> None:
    if options.progress:
        options.progress(stage, done, total)


# --- the transaction ---------------------------------------------------------------------------------------------

def _session_settings(conn: Connection) -> None:
    # PostGIS functions carry high costs, so the planner JIT-compiles the checks; that alone takes longer than the
    # checks on 100,000 features. Local to the transaction.
    conn.execute(text("SET LOCAL jit = off"))


@contextmanager
def _transaction(target: Engine | Connection, dry_run: bool) -> Iterator[Connection]:
    """One transaction on an engine, or a savepoint inside the caller's; rolled back on error or dry run."""
    with dry_run_transaction(target, dry_run) as conn:
        _session_settings(conn)
        yield conn


def _sql_type(kind: str) -> str:
    return {"code": "text", "str": "text", "int": "integer", "float": "double precision", "bool": "boolean",
            "date": "date", "datetime": "timestamptz", "choice": "text"}[kind]


def _stage(conn: Connection, prep: Prepared, extra: dict[str, str], options: ImportOptions,
           computed: dict[str, tuple[str, np.ndarray]] | None = None, index: bool = True) -> np.ndarray:
    """Create the staging table and COPY the kept rows into it (with `computed` columns: name → (SQL type, values
    for every record)); `extra` columns start empty. Returns the staged row indexes."""
    spec = prep.spec
    computed = computed or {}
    cols = {f.name: _sql_type(f.kind) for f in spec.fields}
    geom_type = {"polygon": "MultiPolygon", "point": "Point"}.get(spec.geometry or "")
    defs = ["row_idx integer PRIMARY KEY", "refused boolean NOT NULL DEFAULT false",
            *[f'"{c}" {t}' for c, t in cols.items()], *[f"{c} {t}" for c, t in extra.items()],
            *[f"{c} {t}" for c, (t, _) in computed.items()]]
    if geom_type:
        defs.append(f"geom geometry({geom_type}, 4326)")
    conn.execute(text(f"DROP TABLE IF EXISTS pg_temp.{STAGE}"))
    conn.execute(text(f"CREATE TEMP TABLE {STAGE} ({', '.join(defs)}) ON COMMIT DROP"))
    rows = np.flatnonzero(prep.keep)
    names = list(cols)
    columns = [prep.values[c].to_numpy(dtype=object)[rows] for c in names]
    columns += [np.asarray(v, dtype=object)[rows] for _, v in computed.values()]
    if geom_type:
        columns.append(ewkb_hex(prep.geoms[rows]) if rows.size else np.array([], dtype=object))
    copy_rows(conn, STAGE, ["row_idx", *[f'"{c}"' for c in names], *computed, *(["geom"] if geom_type else [])],
              _counted(zip(rows.tolist(), *[c.tolist() for c in columns], strict=True), len(rows), options, "stage"))
    if geom_type and index:
        conn.execute(text(f"CREATE INDEX ON {STAGE} USING gist (geom)"))
    if index:
        conn.execute(text(f"ANALYZE {STAGE}"))
    return rows


def _counted(rows: Iterable, total: int, options: ImportOptions, stage: str) -> Iterator:
    for i, row in enumerate(rows, 1):
        yield row
        if i % PROGRESS_EVERY == 0:
            _progress(options, stage, i, total)
    _progress(options, stage, total, total)


def _refuse(conn: Connection, prep: Prepared, condition: str, kind: str, message_sql: str,
            params: dict | None = None, action: str = "refused", place: bool = False) -> list[Issue]:
    """Mark staged rows matching `condition` refused (or only report them when action='flagged'); with `place`,
    the condition and message may use the resolved links `pl` (see `_write_features`)."""
    join_from = f" FROM {PLACE} pl" if place else ""
    join_on = " AND pl.row_idx = s.row_idx" if place else ""
    if action == "refused":
        sql = (f"UPDATE {STAGE} s SET refused = true{join_from} WHERE NOT s.refused{join_on} AND ({condition}) "
               f"RETURNING s.row_idx, {message_sql} AS message")
    else:
        sql = (f"SELECT s.row_idx, {message_sql} AS message FROM {STAGE} s"
               f"{' JOIN ' + PLACE + ' pl USING (row_idx)' if place else ''} WHERE NOT s.refused AND ({condition})")
    rows = conn.execute(text(sql), params or {}).all()
    return [Issue(kind, action, r.message, list(prep.records[r.row_idx]), prep.labels[r.row_idx])
            for r in sorted(rows)]


def _now(conn: Connection) -> dt.datetime:
    # clock_timestamp, not now(): two imports inside one outer transaction still get distinct, ordered times.
    return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def _effective_time(conn: Connection, options: ImportOptions) -> tuple[dt.datetime, int | None]:
    """(valid_from of the new boundaries, existing version id or None)."""
    if options.version_id is not None:
        row = conn.execute(text("SELECT valid_from FROM boundary_versions WHERE id = :v"),
                           {"v": options.version_id}).first()
        if row is None:
            raise UnknownVersion(f"boundary version {options.version_id} does not exist")
        return row.valid_from, options.version_id
    if options.valid_from is None or options.valid_from == "":
        return _now(conn), None
    at = options.valid_from
    if isinstance(at, dt.date) and not isinstance(at, dt.datetime):
        at = dt.datetime.combine(at, dt.time.min)
    if isinstance(at, str) and "T" not in at and " " not in at:
        at = dt.datetime.combine(dt.date.fromisoformat(at), dt.time.min)
    parsed = parse_at(at, get_settings().timezone)
    return (parsed if parsed is not None else _now(conn)), None  # parse_at gives None only for "" (handled above)


def _start_covering_incidents(conn: Connection, prep: Prepared, level: str, now: dt.datetime) -> dt.datetime:
    """The default start of new boundaries: now, unless incidents already in the database lie in the new units'
    area at times no boundary of the level covered them; then the start of the local day of the earliest, so the
    import covers them. Only when every staged unit is new: an import that redraws units keeps their history and
    starts now (the report says how to cover the incidents instead)."""
    btable, fk = BOUNDARY_TABLES[level]
    if not conn.execute(text("SELECT EXISTS (SELECT 1 FROM incidents)")).scalar():
        return now
    row = conn.execute(text(f"""
        SELECT min(i.reported_at) AS first, count(*) AS n FROM incidents i
        WHERE i.reported_at < :now
          AND EXISTS (SELECT 1 FROM {STAGE} s WHERE NOT s.refused AND ST_Covers(s.geom, i.geom))
          AND NOT EXISTS (SELECT 1 FROM {btable} b WHERE ST_Covers(b.geom, i.geom) AND {in_force("b", "i.reported_at")})
    """), {"now": now}).mappings().one()
    if not row["n"]:
        return now
    redrawn = conn.execute(text(f"""
        SELECT count(*) FROM {STAGE} s JOIN {level} u ON u.code = s.code
        WHERE NOT s.refused AND EXISTS (SELECT 1 FROM {btable} b WHERE b.{fk} = u.id)""")).scalar()
    first = row["first"]
    tz = get_settings().timezone
    if redrawn:
        prep.report.notes.append(
            f"{row['n']} incident(s) in this area, the earliest on {first.astimezone(ZoneInfo(tz)):%Y-%m-%d}, lie "
            f"in no {SINGULAR[level]} at "
            f"their report time; the boundaries start now because {redrawn} of the file's units have boundaries "
            "already: give valid_from to cover them")
        return now
    start = conn.execute(text("SELECT date_trunc('day', CAST(:t AS timestamptz) AT TIME ZONE :tz) AT TIME ZONE :tz"),
                         {"t": first, "tz": tz}).scalar_one()
    prep.report.valid_from_source = "earliest-incident"
    local = ZoneInfo(tz)
    prep.report.notes.append(
        f"valid_from defaults to {start.astimezone(local):%Y-%m-%d} (local time): {row['n']} incident(s) in the new "
        f"units' area, the earliest reported {first.astimezone(local):%Y-%m-%d %H:%M}, lay in no "
        f"{SINGULAR[level]}; give valid_from to choose another")
    return start


def _attribute_incidents(conn: Connection, at: dt.datetime) -> int:
    """Attribute again the incidents in the staged area reported since `at` (by the boundaries in force then)."""
    if not conn.execute(text("SELECT EXISTS (SELECT 1 FROM incidents)")).scalar():
        return 0
    from geo.incidents.attribution import attribute_incidents

    return attribute_incidents(conn, f"i.reported_at >= :t AND EXISTS (SELECT 1 FROM {STAGE} s "
                                     "WHERE NOT s.refused AND ST_Covers(s.geom, i.geom))", {"t": at})


def _existing_version_at(conn: Connection, at: dt.datetime) -> int | None:
    return conn.execute(text("SELECT id FROM boundary_versions WHERE valid_from = :t"), {"t": at}).scalar()


def _authorize(conn: Connection, prep: Prepared, options: ImportOptions, code_sql: str,
               source: str = f"{STAGE} s") -> None:
    prep.codes = [r[0] for r in conn.execute(text(f"SELECT DISTINCT {code_sql} FROM {source} WHERE NOT s.refused"))]
    if options.authorize is not None:
        options.authorize(prep.spec.name, prep.codes)


def _strict(prep: Prepared, options: ImportOptions) -> None:
    if options.strict and prep.issues:
        prep.report.issues = prep.issues
        raise ImportRefused(prep.report)


def _communities_exist(conn: Connection) -> bool:
    return bool(conn.execute(text("SELECT EXISTS (SELECT 1 FROM communities)")).scalar())


# --- writers per kind of layer -------------------------------------------------------------------------------------

#: The communities whose boundaries (or whose grids' and micro-grids' boundaries) an import of a level writes,
#: by the staged rows' codes: those that exist (a community created by the import is locked by no one else).
_TOUCHED = {
    # a street's boundary frames its communities (and a street plan covers them all): lock every one of them
    "streets": f"""SELECT c.id FROM communities c JOIN streets t ON t.id = c.street_id
                   JOIN {STAGE} s ON s.code = t.code""",
    # the communities imported, and their streets' other communities (new ones are checked against them)
    "communities": f"""SELECT c.id FROM communities c JOIN {STAGE} s ON s.code = c.code
                       UNION SELECT c.id FROM communities c JOIN streets t ON t.id = c.street_id
                       JOIN {STAGE} s ON s.street_code = t.code""",
    "grids": f"""SELECT c.id FROM communities c JOIN {STAGE} s ON s.community_code = c.code
                 UNION SELECT g.community_id FROM grids g JOIN {STAGE} s ON s.code = g.code""",
    "micro_grids": f"""SELECT g.community_id FROM grids g JOIN {STAGE} s ON s.grid_code = g.code
                       UNION SELECT g.community_id FROM micro_grids m JOIN grids g ON g.id = m.grid_id
                       JOIN {STAGE} s ON s.code = m.code""",
}


def _communities_touched(conn: Connection, level: str) -> list[int]:
    """Ids of the existing communities an import of `level` (staged) writes boundaries in or around."""
    return list(conn.execute(text(_TOUCHED[level])).scalars().all())


def _parents_by_longer_prefix(conn: Connection, prep: Prepared, level: str, options: ImportOptions) -> None:
    """Where the scheme lets a code name its parent with several lengths (an 18-digit micro-grid: a 15-digit grid + 3
    or a 16-digit dedicated grid + 2) and the parent read does not exist, the existing unit of the parent level whose
    code starts the code (prefix checks keep it to one) is the parent; the report says so."""
    plevel = PARENTS[level][0]
    codes = load_scheme(options.code_scheme).level(level)
    lengths = sorted(codes.parent_lengths) if codes else []
    if len(lengths) < 2:
        return
    moved = conn.execute(text(f"""
        UPDATE {STAGE} s SET parent_code = c.code FROM (
            SELECT DISTINCT ON (t.row_idx) t.row_idx, p.code
            FROM {STAGE} t CROSS JOIN unnest(CAST(:lens AS integer[])) AS n
            JOIN {plevel} p ON p.code = left(t.code, n)
            WHERE NOT t.refused AND n < length(t.code)
              AND NOT EXISTS (SELECT 1 FROM {plevel} q WHERE q.code = t.parent_code)
            ORDER BY t.row_idx, n DESC) c
        WHERE s.row_idx = c.row_idx AND s.parent_code IS DISTINCT FROM c.code
        RETURNING s.code, c.code AS parent
    """), {"lens": lengths}).all()
    if moved:
        shown = ", ".join(f"{r.code} → {r.parent}" for r in sorted(moved)[:5]) + (" …" if len(moved) > 5 else "")
        prep.report.notes.append(
            f"{len(moved)} {SINGULAR[level]}(s) placed under the {SINGULAR[plevel]} whose code starts theirs (the "
            f"code scheme allows parent codes of {'/'.join(map(str, lengths))} digits): {shown}")


def _derived_collision(conn: Connection, prep: Prepared, parent_level: str, code: str, others: list[str],
                       condition: str) -> list[Issue]:
    """Refuse the staged rows (`condition`, with :pc the parent's code) whose derived parent `code` collides by
    prefix with `others` (codes in use)."""
    what = SINGULAR[parent_level]
    relation = "; ".join(f"{code} {'starts with' if len(o) < len(code) else 'is the start of'} {o}" for o in others)
    message = (f"the {what} {code} derived from the code's leading digits collides with the {what} code(s) "
               f"{', '.join(others)} in use ({relation}): jurisdiction is a code-prefix test; not created "
               f"(派生的上级编码与在用编码前缀冲突)")
    issues = _refuse(conn, prep, condition, "code-prefix-collision", "CAST(:m AS text)", {"m": message, "pc": code})
    for issue in issues:
        issue.details = {"codes": sorted([code, *others], key=len), "derived_parent": code}
    return issues


def _derive_parents(conn: Connection, prep: Prepared, level: str, options: ImportOptions,
                    at: dt.datetime) -> list[dict]:
    """Create the missing parents the staged rows name (hierarchy as found): for grids, their communities (codes
    from the grid codes' leading digits, names from a 所属社区-style column) and those communities' streets; for
    communities, their streets. Identities only, without boundaries; each listed with where it came from.
    """
    scheme = load_scheme(options.code_scheme)
    community_codes = scheme.level("communities")
    names_col = "community_name" if level == "grids" and "community_name" in prep.report.field_mapping else None
    source_col = prep.report.field_mapping.get("community_name")
    name_sql = f"mode() WITHIN GROUP (ORDER BY s.{names_col})" if names_col else "NULL::text"
    distinct_sql = f"count(DISTINCT s.{names_col})" if names_col else "0"
    parent_table = "communities" if level == "grids" else "streets"
    rows = conn.execute(text(f"""
        SELECT s.parent_code AS code, {name_sql} AS name, {distinct_sql} AS names, count(*) AS children
        FROM {STAGE} s
        WHERE NOT s.refused AND s.parent_code IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM {parent_table} p WHERE p.code = s.parent_code)
        GROUP BY s.parent_code ORDER BY s.parent_code
    """)).mappings().all()
    derived: list[dict] = []
    child = SINGULAR[level]
    # a derived parent's code passes the prefix check of imported codes (a community 310115001001 derived beside
    # the village 3101150010 in use would put it in the village's jurisdiction): its children are refused instead
    collide = colliding_codes(conn, parent_table, [r["code"] for r in rows], _STORE_DIGITS[parent_table][0], at)
    for code, others in sorted(collide.items()):
        prep.issues += _derived_collision(conn, prep, parent_table, code, others, "s.parent_code = :pc")
    rows = [r for r in rows if r["code"] not in collide]

    def street_id(code: str, children: int) -> int | None:
        found = conn.execute(text("SELECT id FROM streets WHERE code = :c"), {"c": code}).scalar()
        if found is not None:
            return found
        if len(code) not in _range(Street.code_digits):
            return None
        others = colliding_codes(conn, "streets", [code], _STORE_DIGITS["streets"][0], at).get(code)
        if others:
            prep.issues.extend(_derived_collision(conn, prep, "streets", code, others,
                                                  "left(s.parent_code, length(CAST(:pc AS text))) = :pc"))
            return None
        derived.append({"level": "streets", "code": code, "name": f"街道 {code}",
                        "from": f"the leading digits of the {child} codes; no name in the file"})
        return conn.execute(text("INSERT INTO streets (code, name) VALUES (:c, :n) RETURNING id"),
                            {"c": code, "n": f"街道 {code}"}).scalar_one()

    for r in rows:
        code = r["code"]
        if level == "communities":
            street_id(code, r["children"])
            continue
        if len(code) not in _range(Community.code_digits):
            continue  # left to missing-parent: no community can hold this code
        street_code = community_codes.parent_of(code) if community_codes else code[:9]
        sid = street_id(street_code, r["children"]) if street_code else None
        if sid is None:
            continue
        name = r["name"] or f"社区 {code}"
        how = (f"name from column {source_col!r}" + (f" (the most common of {r['names']} names)"
                                                      if r["names"] > 1 else "")
               if r["name"] else "no name in the file")
        conn.execute(text("INSERT INTO communities (code, name, street_id) VALUES (:c, :n, :s)"),
                     {"c": code, "n": name[:100], "s": sid})
        derived.append({"level": "communities", "code": code, "name": name,
                        "from": f"the leading digits of {r['children']} grid code(s); {how}"})
    if derived:
        prep.report.notes.append(
            f"hierarchy as found: {len(derived)} missing parent(s) created from the file "
            f"({', '.join(d['level'] + ' ' + d['code'] for d in derived[:5])}{' …' if len(derived) > 5 else ''}); "
            "they have no boundary yet, so containment in them is not checked")
        prep.report.checks_skipped.append("outside-parent and coverage-gap for the derived parents: they have no "
                                          "boundary yet")
    return derived


def _crs_plausibility(conn: Connection, prep: Prepared, level: str, at: dt.datetime,
                      options: ImportOptions) -> list[Issue]:
    """The staged features far (more than `crs_check_km`) from their parents' boundaries, or from the boundaries
    already in the database: a wrong CRS (a plausible EPSG code that puts a district in the sea). Flagged with the
    usual CRSs that would put them where they belong, nearest first."""
    parent = PARENTS.get(level)
    reference = None
    if parent:
        reference = conn.execute(text(f"""
            SELECT ST_X(c), ST_Y(c), 'their parents' AS what FROM (
                SELECT ST_Centroid(ST_Extent(p.geom)::geometry) AS c FROM {parent[0]}_at(CAST(:t AS timestamptz)) p
                WHERE p.code IN (SELECT parent_code FROM {STAGE} WHERE NOT refused)) x WHERE c IS NOT NULL
        """), {"t": at}).first()
    if reference is None:
        reference = conn.execute(text("""
            SELECT ST_X(c), ST_Y(c), 'the boundaries already in the database' FROM (
                SELECT ST_Centroid(ST_Extent(geom)::geometry) AS c FROM (
                    SELECT geom FROM streets_at(CAST(:t AS timestamptz)) UNION ALL
                    SELECT geom FROM communities_at(CAST(:t AS timestamptz)) UNION ALL
                    SELECT geom FROM grids_at(CAST(:t AS timestamptz))) b) x WHERE c IS NOT NULL
        """), {"t": at}).first()
    if reference is None:
        prep.report.checks_skipped.append("crs-plausibility: nothing in the database to compare the features with")
        return []
    ref_lon, ref_lat, what = reference
    here = conn.execute(text(f"""
        SELECT ST_X(c), ST_Y(c), ST_Distance(c::geography, ST_SetSRID(ST_Point(:x, :y), 4326)::geography) / 1000
        FROM (SELECT ST_Centroid(ST_Extent(geom)::geometry) AS c FROM {STAGE} WHERE NOT refused) s
        WHERE c IS NOT NULL
    """), {"x": ref_lon, "y": ref_lat}).first()
    if here is None or here[2] <= options.crs_check_km:
        return []
    candidates = []
    if prep.source_points is not None:
        candidates = likely_crs(prep.source_points, ref_lon, ref_lat, prep.source_projected)
    near = [c for c in candidates if c["distance_km"] <= options.crs_check_km]
    hint = (f"; the likely intended CRS is {near[0]['crs']} (puts them {near[0]['distance_km']:.1f} km from "
            f"{what})" if near else "; none of the usual CRSs puts them near either: check the file's CRS")
    return [Issue("implausible-crs", "flagged",
                  f"the features lie {here[2]:,.0f} km from {what} when read as {prep.report.crs}{hint}",
                  [], None, geom=shapely.Point(here[0], here[1]),
                  details={"distance_km": round(float(here[2]), 1), "reference": what,
                           "candidates": candidates})]


def _range(digits: tuple[int, int]) -> range:
    return range(digits[0], digits[1] + 1)


def _build_result(conn: Connection, level: str, at: dt.datetime) -> None:
    """The layer as it would be after the import (RESULT): the staged rows, and the units in force not in the file."""
    parent = PARENTS.get(level)
    parent_code = "p.code" if parent else "NULL::text"
    parent_join = f"JOIN {parent[0]} p ON p.id = h.{parent[2]}" if parent else ""
    conn.execute(text(f"DROP TABLE IF EXISTS pg_temp.{RESULT}"))
    conn.execute(text(f"""
        CREATE TEMP TABLE {RESULT} ON COMMIT DROP AS
        SELECT s.row_idx, s.code, s.parent_code, s.geom FROM {STAGE} s WHERE NOT s.refused
        UNION ALL
        SELECT NULL::integer, h.code, {parent_code}, h.geom FROM {level}_at(CAST(:t AS timestamptz)) h {parent_join}
        WHERE NOT EXISTS (SELECT 1 FROM {STAGE} s WHERE NOT s.refused AND s.code = h.code)
    """), {"t": at})
    conn.execute(text(f"CREATE INDEX ON {RESULT} USING gist (geom)"))
    conn.execute(text(f"ANALYZE {RESULT}"))


def _overlaps_resolved(conn: Connection, prep: Prepared, options: ImportOptions) -> list[Issue]:
    """The overlaps between siblings, each with its proposed resolution; with `resolve_overlaps` (or owners named
    for some pairs) those resolutions applied to the staged rows, all or nothing, and RESULT rebuilt."""
    tol = options.tolerance_m2
    found = overlaps(conn, RESULT, tol, prep.labels, prep.records)
    if not found:
        return found
    owners = overlap_resolution.parse_owners(options.overlap_owners)
    proposals = overlap_resolution.propose(conn, RESULT, tol, owners)
    unknown = overlap_resolution.unknown_owners(owners, proposals)
    if unknown:
        raise overlap_resolution.OverlapNotResolvable(
            f"overlap owners named for pairs that do not overlap here: {', '.join(unknown)}", pairs=unknown)
    by_pair = {p.codes: p for p in proposals}
    chosen = proposals if options.resolve_overlaps else [p for p in proposals if p.rule == "named"]
    if chosen:
        overlap_resolution.apply(conn, STAGE, RESULT, chosen)
        _build_result(conn, prep.spec.name, prep.report.valid_from or _now(conn))
    applied = {p.codes for p in chosen}
    out = []
    for issue in found:
        proposal = by_pair.get(tuple(issue.details.get("codes", ())))
        if proposal is None:
            out.append(issue)
            continue
        issue.details["resolution"] = proposal.as_dict()
        if proposal.codes in applied:
            issue.action = "repaired"
            issue.message += f": resolved, {proposal.describe()}"
        else:
            issue.message += f"; proposed: {proposal.describe()}" + (
                "" if proposal.applicable else f" (not applicable: {proposal.codes[proposal.loser]} is not in "
                                               "this file)")
        out.append(issue)
    if chosen:
        # What is left after the resolutions (nothing above the tolerance, unless three units shared a part).
        out += [i for i in overlaps(conn, RESULT, tol, prep.labels, prep.records)
                if tuple(i.details.get("codes", ())) not in applied]
    return out


def _write_level(conn: Connection, prep: Prepared, options: ImportOptions) -> None:
    spec, report = prep.spec, prep.report
    level = spec.name
    btable, fk = BOUNDARY_TABLES[level]
    parent = PARENTS.get(level)
    extra = {"unit_id": "integer", "parent_id": "integer", "parent_code": "text"}
    attributes = prep.attributes if prep.attributes is not None else np.full(len(prep.keep), None, dtype=object)
    _stage(conn, prep, extra, options, {"attributes": ("jsonb", attributes)})
    # serialised with publish and rollback per community (geo.store.locks) before reading the boundaries it checks and
    # ends, and before taking its time: an import that waited for a publish starts after it and ends its rows, and a
    # publish that waited for this import finds its community's token changed (412)
    lock_communities(conn, _communities_touched(conn, level))
    at, version_id = _effective_time(conn, options)
    report.valid_from_source = ("version" if options.version_id is not None else
                                "now" if options.valid_from in (None, "") else "given")
    if report.valid_from_source == "now":
        at = _start_covering_incidents(conn, prep, level, at)
    report.valid_from = at
    # against the codes in use from the new boundaries' start: a retired unit's code blocks nothing
    prep.issues += code_prefix_collisions(conn, STAGE, level, _STORE_DIGITS[level][0], prep.labels, prep.records,
                                          at=at)
    if parent:
        plevel, pcol, pfk, _ = parent
        conn.execute(text(f'UPDATE {STAGE} SET parent_code = "{pcol}"'))
        _parents_by_longer_prefix(conn, prep, level, options)
        if options.derive_parents and level in ("grids", "communities"):
            report.parents_derived = _derive_parents(conn, prep, level, options, at)
        conn.execute(text(f"UPDATE {STAGE} s SET parent_id = p.id FROM {plevel} p WHERE p.code = s.parent_code"))
        prep.issues += _refuse(conn, prep, "s.parent_id IS NULL", "missing-parent",
                               f"'{SINGULAR[plevel]} ' || s.parent_code || ' does not exist: import {plevel} first'")
    conn.execute(text(f"UPDATE {STAGE} s SET unit_id = u.id FROM {level} u WHERE u.code = s.code"))
    prep.issues += _refuse(
        conn, prep, f"EXISTS (SELECT 1 FROM {btable} b WHERE b.{fk} = s.unit_id AND b.valid_from = :t)",
        "boundary-exists-in-version", "'already has a boundary starting at this version; import into a new version'",
        {"t": at})

    tol = options.tolerance_m2
    prep.issues += _crs_plausibility(conn, prep, level, at, options)
    if parent:
        derived_codes = {d["code"] for d in report.parents_derived if d["level"] == parent[0]}
        prep.issues += [i for i in outside_parent(conn, STAGE, parent[0], at, tol, prep.labels, prep.records)
                        if not (i.kind == "parent-without-boundary" and any(
                            i.message.startswith(f"parent {c} ") for c in derived_codes))]
    _build_result(conn, level, at)
    prep.issues += _overlaps_resolved(conn, prep, options)
    if parent:
        prep.issues += coverage_gaps(conn, RESULT, parent[0], at, tol)
    if level == "grids":
        rules = get_settings().rules
        band, source = household_band(conn, STAGE, rules.grid_households_min, rules.grid_households_max,
                                      prep.labels, prep.records)
        prep.issues += band
        report.notes.append(f"households per grid from: {source}")
        if source.startswith("none: check skipped"):
            report.checks_skipped.append("households-out-of-band: the file gives no households and no units lie in "
                                         "these grids")
    _progress(options, "check", 1, 1)
    _strict(prep, options)
    _authorize(conn, prep, options, "s.code")
    if not conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {STAGE} WHERE NOT refused)")).scalar():
        report.notes.append("nothing to import: no boundary version created")
        return

    if version_id is None:
        version_id = _existing_version_at(conn, at)
    if version_id is None:
        label = options.label or f"导入 {spec.label} {report.source}"
        version_id = create_version(conn, at, label[:200], options.actor)
    report.version_id = version_id
    from geo.locate.holder import apply_after_commit

    apply_after_commit(conn)  # this process's locate index takes the import in as the caller's session commits

    ident_cols = ["code", "name", *([parent[2]] if parent else []),
                  *(["kind", "dedicated_type"] if level == "grids" else [])]
    ident_vals = ["s.code", "s.name", *(["s.parent_id"] if parent else []),
                  *(["coalesce(s.kind, 'comprehensive')", "s.dedicated_type"] if level == "grids" else [])]
    report.created = conn.execute(text(f"""
        INSERT INTO {level} ({', '.join(ident_cols)})
        SELECT {', '.join(ident_vals)} FROM {STAGE} s WHERE NOT s.refused AND s.unit_id IS NULL ORDER BY s.code
    """)).rowcount
    # Identity attributes the file gives replace the stored ones; those it does not give stay as they are.
    given = {"name": "s.name"}
    if level == "grids":
        given["kind"] = "coalesce(s.kind, u.kind)"
        if "dedicated_type" in report.field_mapping:
            given["dedicated_type"] = "s.dedicated_type"
    sets = ", ".join(f"{c} = {v}" for c, v in given.items())
    differs = " OR ".join(f"u.{c} IS DISTINCT FROM {v}" for c, v in given.items())
    report.updated = conn.execute(text(f"""
        UPDATE {level} u SET {sets} FROM {STAGE} s
        WHERE NOT s.refused AND s.unit_id = u.id AND ({differs})
    """)).rowcount
    conn.execute(text(f"UPDATE {STAGE} s SET unit_id = u.id FROM {level} u WHERE u.code = s.code AND NOT s.refused"))
    # Not in_force(): a boundary starting exactly at :t is not ended (it was refused above as
    # boundary-exists-in-version), only those that started before and are still running.
    report.boundaries_ended = conn.execute(text(f"""
        UPDATE {btable} b SET valid_to = :t FROM {STAGE} s
        WHERE NOT s.refused AND b.{fk} = s.unit_id AND b.valid_from < :t AND (b.valid_to IS NULL OR b.valid_to > :t)
    """), {"t": at}).rowcount
    written = conn.execute(text(f"""
        INSERT INTO {btable} ({fk}, version_id, valid_from, valid_to, geom, attributes)
        SELECT s.unit_id, :v, :t,
               (SELECT min(b.valid_from) FROM {btable} b WHERE b.{fk} = s.unit_id AND b.valid_from > :t), s.geom,
               s.attributes
        FROM {STAGE} s WHERE NOT s.refused ORDER BY s.code
        RETURNING valid_to
    """), {"v": version_id, "t": at}).all()
    report.imported = len(written)
    report.boundaries_before_existing = sum(1 for r in written if r.valid_to is not None)
    if report.boundaries_before_existing:
        report.notes.append(f"{report.boundaries_before_existing} boundary row(s) written as history: they end where "
                            "their unit's existing later boundary begins (it stays in force)")
    report.incidents_attributed = _attribute_incidents(conn, at)
    if report.incidents_attributed:
        since = at.astimezone(ZoneInfo(get_settings().timezone))
        report.notes.append(f"{report.incidents_attributed} incident(s) in the imported area reported since "
                            f"{since:%Y-%m-%d %H:%M} attributed again by the boundaries in force at their report "
                            "time")


def _place_features(conn: Connection, buildings: bool, at: dt.datetime) -> None:
    """Resolve each staged feature's community (by code, else the boundary covering it; a point on a shared edge
    goes to the smallest code) and, for buildings, compound (by ref, else the compound covering it) into PLACE.

    The spatial joins are driven from the (few) communities and compounds through the index on the staged points,
    so each polygon is prepared once; results go to a side table rather than rewriting the staged rows.
    """
    compound_cols = compound_joins = ""
    if buildings:
        compound_cols = """, coalesce(cr.id, ck.id) AS compound_id,
                           (s.compound_ref IS NOT NULL AND cr.id IS NULL) AS compound_missing"""
        compound_joins = f"""
            LEFT JOIN (SELECT source_ref, min(id) AS id FROM compounds GROUP BY source_ref) cr
                   ON cr.source_ref = s.compound_ref
            LEFT JOIN (SELECT DISTINCT ON (p.row_idx) p.row_idx, k.id
                       FROM compounds k JOIN {STAGE} p ON ST_Covers(k.geom, p.pos)
                       WHERE p.compound_ref IS NULL ORDER BY p.row_idx, k.id) ck ON ck.row_idx = s.row_idx"""
    conn.execute(text(f"DROP TABLE IF EXISTS pg_temp.{PLACE}"))
    conn.execute(text(f"""
        CREATE TEMP TABLE {PLACE} ON COMMIT DROP AS
        SELECT s.row_idx, coalesce(c.id, sp.id) AS community_id, coalesce(s.community_code, sp.code) AS parent_code,
               (s.community_code IS NOT NULL AND c.id IS NULL) AS parent_missing {compound_cols}
        FROM {STAGE} s
        LEFT JOIN communities c ON c.code = s.community_code
        LEFT JOIN (SELECT DISTINCT ON (p.row_idx) p.row_idx, h.id, h.code
                   FROM communities_at(CAST(:t AS timestamptz)) h JOIN {STAGE} p ON ST_Covers(h.geom, p.pos)
                   WHERE p.community_code IS NULL ORDER BY p.row_idx, h.code) sp ON sp.row_idx = s.row_idx
        {compound_joins}
    """), {"t": at})
    conn.execute(text(f"ALTER TABLE {PLACE} ADD PRIMARY KEY (row_idx)"))


def _write_features(conn: Connection, prep: Prepared, options: ImportOptions) -> None:
    """Compounds and buildings: community by code or by location, compound by reference or location."""
    spec, report = prep.spec, prep.report
    table = spec.table
    buildings = table == "buildings"
    pos = np.full(len(prep.geoms), None, dtype=object)
    live = np.flatnonzero(prep.keep)
    if live.size:
        pos[live] = ewkb_hex(shapely.point_on_surface(prep.geoms[live]))
    _stage(conn, prep, {}, options, {"pos": ("geometry(Point, 4326)", pos)}, index=False)
    conn.execute(text(f"CREATE INDEX ON {STAGE} USING gist (pos)"))
    conn.execute(text(f"ANALYZE {STAGE}"))
    at = _now(conn)
    _place_features(conn, buildings, at)
    prep.issues += _refuse(conn, prep, "pl.parent_missing", "missing-parent",
                           "'community ' || s.community_code || ' does not exist: import communities first'",
                           place=True)
    if _communities_exist(conn):
        prep.issues += _refuse(conn, prep, "pl.community_id IS NULL", "outside-every-community",
                               "'lies in no community: imported without one'", action="flagged", place=True)
    prep.issues += _refuse(conn, prep, f"s.ref IS NOT NULL AND EXISTS (SELECT 1 FROM {table} t "
                                       "WHERE t.source_ref = s.ref)", "exists",
                           f"'a {spec.label} with ref ' || s.ref || ' exists already'")
    placed = f"(SELECT s.row_idx, s.refused, s.geom, pl.parent_code FROM {STAGE} s JOIN {PLACE} pl USING (row_idx))"
    prep.issues += outside_parent(conn, placed, "communities", at, options.tolerance_m2, prep.labels, prep.records)
    if buildings:
        prep.issues += _refuse(conn, prep, "pl.compound_missing", "not-found",
                               "'compound ' || s.compound_ref || ' does not exist: imported without a compound'",
                               action="flagged", place=True)
    _progress(options, "check", 1, 1)
    _strict(prep, options)
    _authorize(conn, prep, options, "pl.parent_code", f"{STAGE} s JOIN {PLACE} pl USING (row_idx)")
    if buildings:
        sql = f"""
            INSERT INTO buildings (code, name, community_id, compound_id, floors, use, source_ref, geom, address)
            SELECT s.code, s.name, pl.community_id, pl.compound_id, s.floors, coalesce(s.use, 'residential'),
                   s.ref, s.geom, s.address
            FROM {STAGE} s JOIN {PLACE} pl USING (row_idx) WHERE NOT s.refused ORDER BY s.row_idx
        """
    else:
        sql = f"""
            INSERT INTO compounds (name, kind, has_property_management, has_owners_committee, community_id,
                                   source_ref, geom, address)
            SELECT s.name, coalesce(s.kind, 'commercial'), coalesce(s.has_property_management, false),
                   coalesce(s.has_owners_committee, false), pl.community_id, s.ref, s.geom, s.address
            FROM {STAGE} s JOIN {PLACE} pl USING (row_idx) WHERE NOT s.refused ORDER BY s.row_idx
        """
    report.imported = report.created = conn.execute(text(sql)).rowcount


def _resolve_building(conn: Connection, prep: Prepared, ref_col: str, code_col: str, id_col: str,
                      action: str = "refused") -> None:
    """Building by its ref (source_ref, or the id when it has none), else by a code that is unique."""
    conn.execute(text(f"""
        UPDATE {STAGE} s SET {id_col} = b.id
        FROM (SELECT coalesce(source_ref, id::text) AS ref, min(id) AS id FROM buildings GROUP BY 1) b
        WHERE b.ref = s.{ref_col}
    """))
    prep.issues += _refuse(conn, prep, f"s.{id_col} IS NULL AND s.{code_col} IS NOT NULL AND "
                                       f"(SELECT count(*) FROM buildings b WHERE b.code = s.{code_col}) > 1",
                           "ambiguous-reference", f"'several buildings have the code ' || s.{code_col}")
    conn.execute(text(f"""
        UPDATE {STAGE} s SET {id_col} = b.id FROM buildings b
        WHERE s.{id_col} IS NULL AND NOT s.refused AND b.code = s.{code_col}
    """))
    prep.issues += _refuse(conn, prep, f"s.{id_col} IS NULL AND coalesce(s.{ref_col}, s.{code_col}) IS NOT NULL",
                           "not-found", f"'no building ' || coalesce(s.{ref_col}, s.{code_col})"
                           + (" || ': imported without it'" if action == "flagged" else ""), action=action)


def _community_of_building(id_col: str) -> str:
    return (f"(SELECT c.code FROM buildings b JOIN communities c ON c.id = b.community_id "
            f"WHERE b.id = s.{id_col})")


def _write_units(conn: Connection, prep: Prepared, options: ImportOptions) -> None:
    _stage(conn, prep, {"building_id": "integer"}, options)
    _resolve_building(conn, prep, "building_ref", "building_code", "building_id")
    prep.issues += _refuse(conn, prep, "EXISTS (SELECT 1 FROM units u WHERE u.building_id = s.building_id "
                                       "AND u.number = s.number)", "exists",
                           "'unit ' || s.number || ' of this building exists already'")
    _strict(prep, options)
    _authorize(conn, prep, options, _community_of_building("building_id"))
    prep.report.imported = prep.report.created = conn.execute(text(f"""
        INSERT INTO units (building_id, number, households, population)
        SELECT building_id, number, coalesce(households, 0), coalesce(population, 0)
        FROM {STAGE} s WHERE NOT s.refused ORDER BY s.row_idx
    """)).rowcount


def _write_staff(conn: Connection, prep: Prepared, options: ImportOptions) -> None:
    _stage(conn, prep, {"home_building_id": "integer", "home_building_code": "text"}, options)
    _resolve_building(conn, prep, "home_building_ref", "home_building_code", "home_building_id", action="flagged")
    prep.issues += _refuse(conn, prep, "EXISTS (SELECT 1 FROM people p WHERE p.name = s.name AND "
                                       "p.phone IS NOT DISTINCT FROM s.phone)", "exists",
                           "'a person named ' || s.name || ' with this phone exists already'")
    _strict(prep, options)
    _authorize(conn, prep, options, _community_of_building("home_building_id"))
    prep.report.imported = prep.report.created = conn.execute(text(f"""
        INSERT INTO people (name, phone, phone_public, party_member, home_building_id)
        SELECT name, phone, coalesce(phone_public, false), coalesce(party_member, false), home_building_id
        FROM {STAGE} s WHERE NOT s.refused ORDER BY s.row_idx
    """)).rowcount


def _write_assignments(conn: Connection, prep: Prepared, options: ImportOptions) -> None:
    extra = {"person_id": "integer", "grid_id": "integer", "micro_grid_id": "integer", "building_id": "integer",
             "unit_id": "integer", "juris": "text", "no_code": "text"}
    _stage(conn, prep, extra, options)
    conn.execute(text(f"""
        UPDATE {STAGE} s SET person_id = p.id FROM (
            SELECT name, phone, min(id) AS id, count(*) OVER (PARTITION BY name) AS same_name FROM people
            GROUP BY name, phone) p
        WHERE p.name = s.person_name AND (p.phone IS NOT DISTINCT FROM s.person_phone
                                          OR (s.person_phone IS NULL AND p.same_name = 1))
    """))
    prep.issues += _refuse(conn, prep, "s.person_id IS NULL AND s.person_phone IS NULL AND "
                                       "(SELECT count(*) FROM people p WHERE p.name = s.person_name) > 1",
                           "ambiguous-reference", "'several people are named ' || s.person_name || "
                                                  "': give their phone'")
    prep.issues += _refuse(conn, prep, "s.person_id IS NULL", "not-found",
                           "'no person ' || s.person_name || coalesce(' (' || s.person_phone || ')', '') || "
                           "': import staff first'")
    conn.execute(text(f"UPDATE {STAGE} s SET grid_id = g.id, juris = g.code FROM grids g "
                      "WHERE s.target_type = 'grid' AND g.code = s.target_code"))
    conn.execute(text(f"UPDATE {STAGE} s SET micro_grid_id = m.id, juris = m.code FROM micro_grids m "
                      "WHERE s.target_type = 'micro_grid' AND m.code = s.target_code"))
    # Buildings and units are named by the building's ref or code ("ref" then unit_number for units).
    conn.execute(text(f"UPDATE {STAGE} SET no_code = target_code WHERE target_type IN ('building', 'unit')"))
    _resolve_building(conn, prep, "no_code", "no_code", "building_id")
    conn.execute(text(f"""
        UPDATE {STAGE} s SET unit_id = u.id FROM units u
        WHERE s.target_type = 'unit' AND u.building_id = s.building_id AND u.number = s.unit_number
    """))
    conn.execute(text(f"UPDATE {STAGE} s SET building_id = NULL WHERE s.target_type = 'unit'"))
    conn.execute(text(f"UPDATE {STAGE} s SET juris = {_community_of_building('building_id')} "
                      "WHERE s.target_type = 'building'"))
    conn.execute(text(f"""UPDATE {STAGE} s SET juris = (SELECT c.code FROM units u JOIN buildings b
                          ON b.id = u.building_id JOIN communities c ON c.id = b.community_id WHERE u.id = s.unit_id)
                          WHERE s.target_type = 'unit'"""))
    prep.issues += _refuse(conn, prep, "coalesce(s.grid_id, s.micro_grid_id, s.building_id, s.unit_id) IS NULL",
                           "not-found", "'no ' || replace(s.target_type, '_', '-') || ' ' || s.target_code || "
                                        "coalesce(' unit ' || s.unit_number, '')")
    prep.issues += _refuse(conn, prep, """EXISTS (SELECT 1 FROM staff_assignments a WHERE a.person_id = s.person_id
        AND a.role = s.role AND a.valid_from = coalesce(s.valid_from, current_date)
        AND a.grid_id IS NOT DISTINCT FROM s.grid_id AND a.micro_grid_id IS NOT DISTINCT FROM s.micro_grid_id
        AND a.building_id IS NOT DISTINCT FROM s.building_id AND a.unit_id IS NOT DISTINCT FROM s.unit_id)""",
                           "exists", "'this assignment exists already'")
    _strict(prep, options)
    _authorize(conn, prep, options, "s.juris")
    prep.report.imported = prep.report.created = conn.execute(text(f"""
        INSERT INTO staff_assignments (person_id, role, target_type, grid_id, micro_grid_id, building_id, unit_id,
                                       households, valid_from, valid_to)
        SELECT person_id, role, target_type, grid_id, micro_grid_id, building_id, unit_id, households,
               coalesce(valid_from, CAST(now() AT TIME ZONE :tz AS date)), valid_to
        FROM {STAGE} s WHERE NOT s.refused ORDER BY s.row_idx
    """), {"tz": get_settings().timezone}).rowcount


def _write_incidents(conn: Connection, prep: Prepared, options: ImportOptions) -> None:
    from geo.incidents.attribution import attribute_incidents

    _stage(conn, prep, {}, options)
    prep.issues += _refuse(conn, prep, "NOT EXISTS (SELECT 1 FROM incident_classes c WHERE c.code = s.class_code)",
                           "not-found", "'no incident class ' || s.class_code")
    if _communities_exist(conn):
        prep.issues += _refuse(conn, prep, f"""NOT EXISTS (SELECT 1 FROM community_boundaries b
            WHERE ST_Covers(b.geom, s.geom) AND {in_force("b", "s.reported_at")})""",
                               "outside-every-community", "'lies in no community at its report time'",
                               action="flagged")
    _strict(prep, options)
    ids = [r[0] for r in conn.execute(text(f"""
        INSERT INTO incidents (geom, reported_at, class_code, source, state, description, reporter, reporter_phone,
                               department, due_at, closed_at)
        SELECT geom, reported_at, class_code, coalesce(source, 'department'), coalesce(state, 'collected'), description,
               reporter, reporter_phone, department, due_at, closed_at
        FROM {STAGE} s WHERE NOT s.refused ORDER BY s.row_idx RETURNING id
    """))]
    prep.report.imported = prep.report.created = len(ids)
    if ids:
        attribute_incidents(conn, "i.id = ANY(:ids)", {"ids": ids})
    prep.codes = [r[0] for r in conn.execute(text("""
        SELECT DISTINCT coalesce(g.code, c.code) FROM incidents i LEFT JOIN grids g ON g.id = i.grid_id
        LEFT JOIN communities c ON c.id = i.community_id WHERE i.id = ANY(:ids)"""), {"ids": ids})]
    if options.authorize is not None:
        options.authorize(prep.spec.name, prep.codes)


WRITERS = {**{lv: _write_level for lv in LEVELS}, "compounds": _write_features, "buildings": _write_features,
           "units": _write_units, "staff": _write_staff, "staff_assignments": _write_assignments,
           "incidents": _write_incidents}


def _jurisdiction_of(codes: list[str | None]) -> str | None:
    """The smallest street, community or grid code containing every code (None when there is none)."""
    present = [c for c in codes if c]
    if not present or len(present) < len(codes):
        return None
    if len(set(present)) == 1:
        return present[0]  # one unit (a 16-digit dedicated grid too)
    prefix = present[0]
    for c in present[1:]:
        while not c.startswith(prefix):
            prefix = prefix[:-1]
    # several units: their grid, community or street (a 15-digit prefix shared by 16-digit codes names no grid)
    for n in ((12, 9) if any(len(c) == 16 for c in present) else (15, 12, 9)):
        if len(prefix) >= n:
            return prefix[:n]
    return None


def _audit(conn: Connection, report: ImportReport, options: ImportOptions, codes: list[str | None]) -> bool:
    """Record the import in the audit log (geo.access.audit), in the import's transaction; False when unavailable."""
    summary = {k: v for k, v in report.to_json().items() if k != "problems"}
    juris = _jurisdiction_of(codes)
    if options.audit is not None:
        options.audit(f"import.{report.layer}", report.layer, report.version_id, juris, summary)
        return True
    try:
        from sqlalchemy.orm import Session

        from geo.access import audit
    except ImportError:
        return False
    with Session(bind=conn) as session:
        audit.record(session, options.actor or "cli", f"import.{report.layer}", report.layer, report.version_id,
                     juris, None, summary, audit.LOCAL)
    return True


def import_layer(target: Engine | Connection, layer: str, path: str | Path,
                 options: ImportOptions | None = None) -> ImportReport:
    """Import one layer from a file in one transaction; returns the report (ImportRefused under strict)."""
    options = options or ImportOptions()
    spec = with_scheme(layer_spec(layer), options.code_scheme)
    started = time.perf_counter()
    path = Path(path)
    report = ImportReport(spec.name, options.filename or path.name, dry_run=options.dry_run, strict=options.strict)
    prep = prepare(spec, path, options, report)
    try:
        with _transaction(target, options.dry_run) as conn:
            WRITERS[spec.name](conn, prep, options)
            _finish(prep)
            if not options.dry_run and not _audit(conn, report, options, prep.codes):
                report.notes.append("not audited: geo.access.audit is not available")
            _progress(options, "write", report.imported, report.imported)
    except (DomainError, LookupError, ValueError, PermissionError):
        raise  # refusals the caller answers (strict mode, out of jurisdiction, unknown version …)
    except Exception as exc:
        if type(exc).__module__.startswith(("api.", "fastapi", "starlette")):
            raise  # the caller's own errors (e.g. 403 from authorize) pass through unchanged
        raise ImportFailed(f"the import of {spec.name} from {report.source} failed and was rolled back, nothing "
                           f"was written: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    report.committed = not options.dry_run
    report.elapsed_s = time.perf_counter() - started
    return report


def _finish(prep: Prepared) -> None:
    """Fill the report's counts from the staged outcome."""
    report = prep.report
    refused_rows = {r for i in prep.issues if i.action == "refused" for r in i.records}
    report.issues = sorted(prep.issues, key=lambda i: (min(i.records) if i.records else 0, i.kind))
    report.features = report.features_read - report.merged
    report.refused = report.features - report.imported
    repaired_records = {r for i in prep.issues if i.action == "repaired" for r in i.records}
    report.repaired = len({idx for idx in np.flatnonzero(prep.keep)
                           if set(prep.records[idx]) & repaired_records and not set(prep.records[idx]) & refused_rows})


def problems_summary(report: ImportReport, limit: int = 20) -> list[dict]:
    """The first problems as plain dicts (for tables and API answers)."""
    return [i.as_dict() for i in report.issues[:limit]]


__all__ = ["ImportOptions", "ImportReport", "ImportRefused", "ImportFailed", "import_layer", "prepare",
           "problems_summary"]
