"""The errors of feature and tile queries (kinds only: api.problems maps them to HTTP statuses once)."""

from __future__ import annotations

from geo.errors import DomainError, NotFound


class UnknownCollection(NotFound):
    """No collection (or tile layer) has this id."""

    slug = "unknown-collection"


class FeatureNotFound(NotFound):
    """No feature with this id in the collection, or it lies outside the caller's jurisdiction."""

    slug = "feature-not-found"


class InvalidFeatureQuery(DomainError):
    """A query parameter cannot be used (bbox, datetime, crs, limit, a property filter): OGC says 400."""

    slug = "invalid-feature-query"
    kind = "bad-request"
    title = "Invalid query parameter"


class UnsupportedCrs(InvalidFeatureQuery):
    """A coordinate reference system the service does not offer."""

    slug = "unsupported-crs"


class InvalidTile(NotFound):
    """z/x/y outside the tile matrix (WebMercatorQuad): no such tile."""

    slug = "no-such-tile"
