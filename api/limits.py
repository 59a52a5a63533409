"""Request-body size limits, enforced while the body arrives (before any parser buffers it).

Uploads and batch inputs (the paths in `BULK_PATHS`) may be as large as `Settings.max_upload_bytes`; every other
body (JSON edits, forms) as large as `Settings.max_body_bytes`. A declared `Content-Length` over the limit is
refused at once; a chunked body is counted as it streams and refused the moment it passes the limit, so a huge
payload never reaches the disk or the database. The answer is 413 problem+json naming the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from geo.settings import get_settings

#: Routes whose bodies are files or point batches rather than edits.
BULK_PATHS = ("/v1/imports", "/v1/staff/import", "/v1/locate/batch")


class BodyTooLarge(Exception):
    """The request body passed its limit."""


def _problem(path: str, limit: int) -> tuple[dict, bytes]:
    import json

    body = {"type": PROBLEM_BASE + "too-large", "title": "Content Too Large", "status": 413,
            "detail": f"the request body is larger than the limit of {limit:,} bytes for {path}",
            "instance": path, "max_upload_bytes": limit}
    data = json.dumps(body).encode()
    start = {"type": "http.response.start", "status": 413,
             "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(data)).encode()),
                         (b"connection", b"close")]}
    return start, data


class BodyLimitMiddleware:
    """Pure ASGI middleware refusing request bodies over their limit with 413 problem+json."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int | None = None, max_upload_bytes: int | None = None):
        self.app = app
        self._body = max_body_bytes
        self._upload = max_upload_bytes

    def limit_for(self, path: str) -> int:
        """The largest body accepted on `path` (bytes)."""
        settings = get_settings()
        if path in BULK_PATHS:
            return self._upload if self._upload is not None else settings.max_upload_bytes
        return self._body if self._body is not None else settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        limit = self.limit_for(path)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(path, limit, send)
            return

        seen = 0
        state = {"exceeded": False, "started": False, "refused": False}

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    state["exceeded"] = True
                    raise BodyTooLarge()
            return message

        async def refuse_once() -> None:
            if not state["refused"]:
                state["refused"] = True
                await self._refuse(path, limit, send)

        async def guarded_send(message: Message) -> None:
            if state["exceeded"] and not state["started"]:
                # Whatever the app made of the interrupted body (a parse error, most likely), the answer is 413.
                await refuse_once()
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["exceeded"] or state["started"]:
                raise
            await refuse_once()
            return
        if state["exceeded"] and not state["started"]:
            await refuse_once()

    @staticmethod
    async def _refuse(path: str, limit: int, send: Send) -> None:
        start, data = _problem(path, limit)
        await send(start)
        await send({"type": "http.response.body", "body": data})
