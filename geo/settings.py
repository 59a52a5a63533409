"""Settings from the environment (pydantic-settings): database, server, and the domain rules' numbers."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
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
    #: Largest file upload or point batch (imports, staff sheets, POST /v1/locate/batch).
    max_upload_bytes: int = 200 * 1024 * 1024
    #: Largest body of any other request (JSON edits such as a plan operation's GeoJSON).
    max_body_bytes: int = 32 * 1024 * 1024
    jwt_secret: str | None = None
    access_token_minutes: int = 30
    refresh_token_days: int = 7
    rules: Rules = Field(default_factory=Rules)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
