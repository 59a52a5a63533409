"""The basemap layers of a page and the Content-Security-Policy letting it load their tiles (not a router).

Pages that draw basemaps (coverage, classification, heatmap) take their layers from here, so a list an admin
saved applies at once; the policy they answer with names those layers' tile hosts (the middleware's default policy
only knows the settings' layers).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.security import content_security_policy
from geo.features import basemaps
from geo.settings import Settings


def page_basemaps(session: Session, settings: Settings) -> tuple[list[dict], dict[str, str]]:
    """(the layers as the pages' config wants them, the response headers with the page's CSP)."""
    layers = basemaps.effective_layers(session.connection(), settings)
    return ([b.model_dump() for b in layers],
            {"Content-Security-Policy": content_security_policy(basemaps.tile_origins(layers))})
