"""Bodies of OGC API Features (`/ogc`): landing page, conformance, collections, items, queryables."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from geo.features.crs import CRS84


class Link(BaseModel):
    href: str
    rel: str
    type: str | None = None
    title: str | None = None


class LandingPage(BaseModel):
    title: str
    description: str
    links: list[Link]


class Conformance(BaseModel):
    conformsTo: list[str]  # noqa: N815 (the OGC member name)


class Extent(BaseModel):
    model_config = ConfigDict(extra="allow")
    spatial: dict[str, Any]
    temporal: dict[str, Any] | None = None


class CollectionInfo(BaseModel):
    id: str
    title: str
    description: str
    itemType: str = "feature"  # noqa: N815
    links: list[Link]
    extent: Extent | None = None
    crs: list[str]
    storageCrs: str = CRS84  # noqa: N815


class Collections(BaseModel):
    links: list[Link]
    collections: list[CollectionInfo]


class OgcFeatureCollection(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[dict[str, Any]]
    numberMatched: int | None = None  # noqa: N815
    numberReturned: int  # noqa: N815
    timeStamp: str | None = None  # noqa: N815
    links: list[Link] = Field(default_factory=list)


class OgcFeature(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["Feature"] = "Feature"
    id: int | str
    geometry: dict[str, Any] | None
    properties: dict[str, Any]


class Queryables(BaseModel):
    """A JSON Schema of the queryable properties (its `$schema` and `$id` members ride as extra members)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    properties: dict[str, Any]
