"""The read replica as /readyz reports it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ReplicaStatus(BaseModel):
    """The hot standby serving lag-tolerant reads (GRIDATLAS_READ_DATABASE_URL)."""

    reachable: bool = Field(description="false: reads go to the primary until it answers again")
    standby: bool | None = Field(None, description="still a standby (false once promoted to a primary)")
    lag_s: float | None = Field(None, description="seconds behind the primary (0: all it received is replayed)")
    error: str | None = None
