"""Basemap layers as admins read and save them (`/v1/basemaps`): bottom layer first."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BasemapLayerBody(BaseModel):
    """One XYZ layer: its tile URL template, base or labels, the coordinate system its tiles are drawn in."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=500, description="http(s) template with {z} {x} {y} (and {s} with subdomains)")
    name: str = Field("底图", max_length=60)
    kind: Literal["base", "labels"] = "base"
    coordsys: Literal["wgs84", "cgcs2000", "gcj02", "bd09"] = "wgs84"
    max_native_zoom: int = Field(18, ge=0, le=22)
    attribution: str = Field("", max_length=200)
    subdomains: str = Field("", max_length=26)


class BasemapSave(BaseModel):
    """The whole list to keep, and the revision it was edited from (a later save by someone else is a 409)."""

    model_config = ConfigDict(extra="forbid")

    layers: list[BasemapLayerBody] = Field(max_length=12)
    revision: int | None = Field(None, ge=0, description="the revision read (0: none saved yet); omit to overwrite")


class BasemapList(BaseModel):
    """The layers pages draw now and where they come from: saved in the database, or the settings' default."""

    source: Literal["database", "settings"]
    revision: int
    updated_at: dt.datetime | None
    updated_by: str | None
    layers: list[BasemapLayerBody]
    defaults: list[BasemapLayerBody]
    tile_origins: list[str]
