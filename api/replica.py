"""The read replica's lag made visible: ``X-Replica-Lag`` (seconds) on every answer read from the hot standby.

`api.deps.read_session_dep` records the lag it measured in the request's state; this pure ASGI middleware adds
the header when the response starts (routes returning their own `Response` objects included).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import REPLICA_LAG_STATE

HEADER = b"x-replica-lag"


class ReplicaLagMiddleware:
    """Adds ``X-Replica-Lag: <seconds>`` to answers served from the read replica."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_lag(message: Message) -> None:
            if message["type"] == "http.response.start":
                lag = state.get(REPLICA_LAG_STATE)
                if lag is not None:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (HEADER, f"{lag:.3f}".encode())]
            await send(message)

        await self.app(scope, receive, send_with_lag)
