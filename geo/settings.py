"""Settings from the environment (pydantic-settings): the one module where configuration is read.

`Settings` (environment ``GRIDATLAS_*``, or ``.env``) holds the process settings (database, server, limits, tokens)
and one nested group per concept, each a `BaseSettings` with its own environment prefix:

- `Settings.rules` (`Rules`, ``GRIDATLAS_RULE_*``): the domain's numbers (DOMAIN.md);
- `Settings.auth` (`AuthSettings`, ``GRIDATLAS_AUTH_*``): password policy and login throttling;
- `Settings.classify` (`ClassifyRules`, ``GRIDATLAS_CLASSIFY_*``): the compound classification's thresholds.

`get_settings()` reads everything once per process (tests that change the environment call
``get_settings.cache_clear()``). Add a concept's numbers as a group class here and a field on `Settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Rules(BaseSettings):
    """The domain's numbers (DOMAIN.md): configurable defaults, never constants in code."""

    model_config = SettingsConfigDict(env_prefix="GRIDATLAS_RULE_", extra="ignore")

    grid_households_min: int = 300
    grid_households_max: int = 500
    grid_population_max: int = 2500
    #: Whether a redraw plan's grid outside the household band is a 'warning' or an 'error'.
    grid_households_band_severity: Literal["warning", "error"] = "warning"
    steward_households_min: int = 5
    steward_households_max: int = 15
    grid_parttime_workers_max: int = 3
    locate_accuracy_m: float = 30.0
    #: An incident's deadline light as fractions of its time limit used: yellow from 80 %, red beyond 100 %.
    deadline_yellow_fraction: float = 0.8
    deadline_red_fraction: float = 1.0


class AuthSettings(BaseSettings):
    """Numbers of the access-control rules (environment GRIDATLAS_AUTH_*): configurable defaults."""

    model_config = SettingsConfigDict(env_prefix="GRIDATLAS_AUTH_", extra="ignore")

    password_min_length: int = 10
    #: Failed logins for one account from one address (since that pair's last success) within the window before
    #: that pair is slowed down (exponential delay). The owner at another address is not affected.
    max_failures_per_pair: int = 5
    #: Failed logins for one account from all addresses within the window before addresses the account has not
    #: logged in from lately are slowed down too (a distributed guess); its usual addresses are not.
    max_failures_per_account: int = 20
    #: Failed logins from one address (any accounts) within the window before that address is slowed down for
    #: every account that has not logged in from it lately (password spraying).
    max_failures_per_address: int = 20
    #: Failures older than this do not count.
    window_seconds: int = 3600
    #: The delay once a limit is reached; it doubles with every further failure, up to `backoff_max_seconds`.
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: int = 900
    #: A successful login makes its address "usual" for the account for this many days.
    known_address_days: int = 30


#: The classification thresholds (names of `ClassifyRules` fields): what stored results depend on.
CLASSIFY_THRESHOLDS = ("sliver_area_m2", "sliver_width_m", "contain_share_min", "within_share_min", "same_iou_min",
                       "same_hausdorff_m")


class ClassifyRules(BaseSettings):
    """Thresholds of the compound classification (env GRIDATLAS_CLASSIFY_*); defaults tolerate a 1–3 m redraw."""

    model_config = SettingsConfigDict(env_prefix="GRIDATLAS_CLASSIFY_", extra="ignore")

    sliver_area_m2: float = Field(
        20.0, gt=0, description="an overlap smaller than this (m²) is a digitising sliver, not a shared area")
    sliver_width_m: float = Field(
        5.0, gt=0, description="an overlap narrower on average than this (m) is a sliver: a line redrawn 1–3 m off "
                               "leaves a strip 1–3 m wide, and 5 m keeps such strips slivers even at +/-5%")
    contain_share_min: float = Field(
        0.9, gt=0, le=1, description="a compound contains a unit when it covers at least this share of the unit")
    within_share_min: float = Field(
        0.9, gt=0, le=1, description="a compound lies within its main unit when this share of it lies inside")
    same_iou_min: float = Field(
        0.7, gt=0, le=1, description="'same' needs at least this intersection-over-union with the main unit "
                                     "(a 50 m micro-grid redrawn 3 m off diagonally still has IoU 0.79)")
    same_hausdorff_m: float = Field(
        5.0, gt=0, description="'same' needs the outlines within this Hausdorff distance (m): a redraw 3 m off "
                               "in both axes is 4.2 m (4.75 m at -5% still admits it); a wall set back ~3.5 m or "
                               "more from the grid line is over 5 m at a right-angled corner, and a hole or a "
                               "missing strip wider than this is other land")
    sensitivity_step: float = Field(0.05, gt=0, lt=1, description="relative step of the sensitivity analysis")
    implementation: Literal["sql", "shapely"] = Field(
        "shapely", description="measure implementation: 'shapely' (vectorised, the faster in "
                               "bench/bench_classify.py) or 'sql' (set-based PostGIS)")

    def thresholds(self) -> dict[str, float]:
        """The classification thresholds by name (what results depend on)."""
        return {name: float(getattr(self, name)) for name in CLASSIFY_THRESHOLDS}


class BasemapLayer(BaseModel):
    """One XYZ layer of an intranet basemap (``GRIDATLAS_BASEMAPS``, a JSON list of these, bottom layer first).

    Tianditu serves the base and its labels as two layers (e.g. ``vec`` + ``cva``); AMap/Tencent tiles are drawn
    in GCJ-02 (``coordsys: gcj02``), so the pages shift their overlays to line up; ``bd09`` likewise for tiles in
    BD-09 coordinates on the standard Web Mercator matrix. ``wgs84`` also stands for CGCS2000 (within a metre)."""

    url: str
    name: str = "底图"
    kind: Literal["base", "labels"] = "base"
    coordsys: Literal["wgs84", "cgcs2000", "gcj02", "bd09"] = "wgs84"
    max_native_zoom: int = Field(18, ge=0, le=22)
    attribution: str = ""
    subdomains: str = ""


class Settings(BaseSettings):
    """Process settings. `DATABASE_URL` picks an external PostGIS; without it the project-managed cluster is used."""

    model_config = SettingsConfigDict(env_prefix="GRIDATLAS_", env_file=".env", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "GRIDATLAS_DATABASE_URL")
    )
    #: The schema owner's URL, for migrations and demo loads (``GRIDATLAS_ADMIN_DATABASE_URL``); `database_url`
    #: when unset. The service itself should connect as a role that is not a superuser (see `app_role`).
    admin_database_url: str | None = None
    #: The privilege group that migrations grant the service's rights to (data read/write, audit log insert-only).
    app_role: str = "gridatlas_app"
    var_dir: Path = PROJECT_ROOT / "var"
    host: str = "127.0.0.1"
    port: int = 8000
    timezone: str = "Asia/Shanghai"
    #: Optional intranet tile server (``https://tiles.example/{z}/{x}/{y}.png``); none by default: pages stay offline.
    tile_url: str | None = None
    #: Basemap layers (JSON list of `BasemapLayer`); when empty, `tile_url` (if set) is the one WGS-84 base layer.
    basemaps: list[BasemapLayer] = Field(default_factory=list)
    #: After a boundary change heard from elsewhere, how long (s) lookups wait for the locate index to take it in
    #: before they answer from the previous index (each answer names its grid's version); geo.locate.holder. No
    #: wait by default: a small change is patched in (a fraction of a full build), and the writing process applies
    #: it before its request answers.
    locate_stale_wait_s: float = 0.0
    #: Largest file upload or point batch (imports, staff sheets, POST /v1/locate/batch).
    max_upload_bytes: int = 200 * 1024 * 1024
    #: Largest body of any other request (JSON edits such as a plan operation's GeoJSON).
    max_body_bytes: int = 32 * 1024 * 1024
    #: A plan operation's geometry: most vertices it may have, and how far (metres) it may reach past its community.
    plan_max_vertices: int = 20_000
    plan_max_outside_m: float = 100.0
    #: A reshape (vertex edit): metres within which a vertex lands on a neighbour's or a compound wall's vertex.
    plan_snap_m: float = 1.0
    #: Incident photos: the largest one accepted, how many per case and stage, and the types (magic bytes checked).
    photo_dir: Path | None = None  # var_dir/photos when unset
    photo_max_bytes: int = 2 * 1024 * 1024
    photo_max_per_stage: int = 3
    photo_types: tuple[str, ...] = ("image/jpeg", "image/png", "image/webp")
    #: Rows (grids + buildings + units + stewards) of coverage reports each process keeps for reuse; a whole
    #: scale-1 district is ~50,000 rows and ~80 MB (GRIDATLAS_COVERAGE_CACHE_ROWS; 0 turns the reuse off).
    coverage_cache_rows: int = 150_000
    #: At start, gather the home page's district figures in the background (coverage report cached, classification
    #: stored), so a leader's first view after a start or a demo load is quick (GRIDATLAS_WARM_AT_START).
    warm_at_start: bool = True
    #: Finished vector tiles each process keeps in memory (MiB, GRIDATLAS_TILE_CACHE_MB; 0 turns the cache off).
    tile_cache_mb: float = 64.0
    jwt_secret: str | None = None
    access_token_minutes: int = 30
    refresh_token_days: int = 7
    #: A phone's (browser's) login session: its refresh token rotates in an HttpOnly cookie for this many days.
    device_session_days: int = 30
    #: Addresses (IPs or CIDR networks, comma-separated) of reverse proxies whose X-Forwarded-For and
    #: X-Forwarded-Proto are believed (GRIDATLAS_TRUSTED_PROXIES); none by default: the peer's address is used.
    trusted_proxies: str = ""
    #: A hot standby for reads that tolerate lag (tiles, OGC features, maps data, KPIs, exports); none: the
    #: primary (GRIDATLAS_READ_DATABASE_URL). Writes always go to DATABASE_URL.
    read_database_url: str | None = None
    #: DATABASE_URL goes through a transaction-mode pooler (PgBouncer): no server-side prepared statements, and the
    #: change listener's LISTEN on `direct_database_url` (GRIDATLAS_DATABASE_TRANSACTION_POOLING).
    database_transaction_pooling: bool = False
    #: The primary itself, bypassing the pooler, for LISTEN (GRIDATLAS_DIRECT_DATABASE_URL); DATABASE_URL when unset.
    direct_database_url: str | None = None
    rules: Rules = Field(default_factory=Rules)
    classify: ClassifyRules = Field(default_factory=ClassifyRules)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    def basemap_layers(self) -> list[BasemapLayer]:
        """The basemap layers pages draw under their overlays (none: the pages orient by their own outlines)."""
        if self.basemaps:
            return list(self.basemaps)
        return [BasemapLayer(url=self.tile_url)] if self.tile_url else []


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
