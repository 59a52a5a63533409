"""The FastAPI application: the routers listed in ROUTERS, problem+json errors, self-hosted docs and map assets."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from api import access_log, proxies
from api.compression import CompressionMiddleware
from api.concurrency import ConcurrencyLimitMiddleware, pool_capacity
from api.limits import BodyLimitMiddleware
from api.problems import install_problem_handlers
from api.replica import ReplicaLagMiddleware
from api.routers import (
    audit,
    auth,
    basemaps,
    browse,
    classification,
    coverage,
    features,
    health,
    home,
    imports,
    incidents,
    locate,
    maps_classification,
    maps_coverage,
    maps_heatmap,
    maps_plan,
    mobile,
    mobile_report,
    open311,
    photos,
    plan_editor,
    plans,
    staff,
    summary,
    tiles,
    users,
)
from api.security import SecurityHeadersMiddleware
from geo.store import db

log = logging.getLogger("gridatlas")
DOCS_ASSETS = Path(__file__).resolve().parent / "static" / "docs"

#: Every router of the service, in the order their routes are matched. A new concept adds its module here.
ROUTERS = (
    audit.router, auth.router, classification.router, coverage.router, health.router, imports.router,
    incidents.router, locate.router, maps_classification.router, maps_coverage.router, maps_heatmap.router,
    maps_plan.router, mobile.router, mobile_report.router, open311.router, photos.router, plans.router,
    staff.router, users.router, features.router, home.router, tiles.router, plan_editor.router,
    basemaps.router, summary.router, browse.router,
)


def create_app(engine: Engine | None = None) -> FastAPI:
    """Build the app; `engine` defaults to the configured database (tests pass their own)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for hook in app.state.startup_hooks:
            hook(app)
        yield
        for hook in app.state.shutdown_hooks:
            hook(app)

    app = FastAPI(
        title="GridAtlas",
        summary="Grid-mapping service for community governance (网格化管理)",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.engine = engine or db.get_engine()
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    install_problem_handlers(app)
    access_log.install()
    app.add_middleware(ConcurrencyLimitMiddleware, limit=pool_capacity(app.state.engine))
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(CompressionMiddleware)
    app.add_middleware(ReplicaLagMiddleware)  # X-Replica-Lag on answers read from the standby
    proxies.install(app)  # outermost: X-Forwarded-* believed only from GRIDATLAS_TRUSTED_PROXIES
    app.mount("/docs-assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    try:
        from maps.static_mount import mount_static

        mount_static(app)
    except ImportError:  # maps not installed in a minimal deployment
        log.warning("maps static assets not mounted")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        # Browsers ask for it on every page that names no icon (the login page, API answers opened in a tab).
        from fastapi.responses import RedirectResponse

        return RedirectResponse("/static/favicon.svg", status_code=308)

    @app.get("/docs", include_in_schema=False)
    def swagger_ui():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="GridAtlas API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    for router in ROUTERS:
        app.include_router(router)
    app.state.startup_hooks.append(home.warm_at_start)  # the home page's figures, gathered in the background
    return app
