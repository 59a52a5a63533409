"""Errors as RFC 9457 problem details (application/problem+json).

Domain errors (`geo.errors.DomainError`) are turned into problem documents here, once: their kind picks the status
(`KIND_STATUS`), their slug the `type`, their extra members join the document. Routers do not catch them.
`problem_responses` declares the problem answers of an operation in OpenAPI.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from geo.errors import DomainError, Kind

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://gridatlas.dev/problems/"  # identifiers, not fetched: documented in README


#: The HTTP status of each kind of domain error: the one place the domain's failures meet HTTP.
KIND_STATUS: dict[Kind, int] = {
    "invalid": 422,
    "bad-request": 400,
    "not-found": 404,
    "forbidden": 403,
    "unauthenticated": 401,
    "conflict": 409,
    "precondition-failed": 412,
    "precondition-required": 428,
    "too-large": 413,
    "too-many": 429,
    "unsupported": 415,
    "unavailable": 503,
    "failed": 500,
}


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document; members beyond these depend on the problem `type`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="problem identifier: https://gridatlas.dev/problems/<slug> (not a page to fetch)")
    title: str
    status: int
    detail: str
    instance: str | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring problem+json answers with these statuses (for a route decorator)."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "model": ProblemDetails,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for status in statuses
    }


#: Seconds a client is asked to wait before trying again while the database is unreachable.
RETRY_AFTER_S = 5


def is_outage(exc: BaseException) -> bool:
    """Whether a database error means the server is unreachable or going away (not a bad query): the connection
    was lost, never made (no SQLSTATE), or the server said it is shutting down or starting up."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc.orig, (psycopg.OperationalError, psycopg.InterfaceError)):
        return False
    state = exc.orig.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def is_bad_value(exc: BaseException) -> bool:
    """Whether a database error was caused by a value the caller sent that slipped past validation (a NUL byte in
    text, a number out of a column's range, an impossible date): a 422, never a 500."""
    return isinstance(exc, DBAPIError) and isinstance(exc.orig, psycopg.DataError)


class Problem(Exception):
    """An error answered as problem+json: `type` slug, HTTP status, human title and detail, extra members."""

    def __init__(self, status: int, detail: str, *, type: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers
        self.extra = extra


def problem_response(request: Request, status: int, detail: str, *, type: str | None = None,
                     title: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response for `request`."""
    body = {
        "type": PROBLEM_BASE + type if type else "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": str(request.url.path),
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, including validation errors and unexpected ones, as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(request, exc.status, exc.detail, type=exc.type, title=exc.title,
                                headers=exc.headers, **exc.extra)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError):
        headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.kind == "unavailable" else None
        from api.problems_zh import localize  # Accept-Language: zh-CN → Chinese title and detail, with names

        zh = await localize(request, exc)
        if zh is not None:
            return problem_response(request, KIND_STATUS[exc.kind], zh[1], type=exc.slug, title=zh[0],
                                    headers={**(headers or {}), "Content-Language": "zh-CN"}, **zh[2])
        return problem_response(request, KIND_STATUS[exc.kind], exc.message, type=exc.slug, title=exc.title,
                                headers=headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not UTF-8: the same as any other malformed JSON (422 json_invalid)
            return problem_response(request, 422, "body: the request body is not JSON (UTF-8)",
                                    type="validation-error", title="Invalid request",
                                    errors=[{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}])
        return problem_response(request, exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return problem_response(request, 422, f"{where}: {first['msg']}", type="validation-error",
                                title="Invalid request", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        if is_outage(exc):
            return problem_response(request, 503, "the database is unreachable; try again shortly",
                                    type="database-unavailable", title="Service Unavailable",
                                    headers={"Retry-After": str(RETRY_AFTER_S)})
        if is_bad_value(exc):
            reason = str(getattr(exc, "orig", exc)).splitlines()[0]
            return problem_response(request, 422, f"a value in the request cannot be stored or compared: {reason}",
                                    type="invalid-value", title="Invalid value")
        return problem_response(request, 500, "an unexpected error occurred; it has been logged",
                                type="internal-error")
