"""Response bodies of incident photos (事件照片)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field


class PhotoOut(BaseModel):
    """One photo of a case; `url` serves its bytes to callers allowed to see the case."""

    id: int
    incident_id: int
    stage: Literal["report", "handling"] = Field(description="report: taken when reporting; handling: 处置 evidence")
    media_type: str
    size_bytes: int
    sha256: str
    taken_at: dt.datetime | None = Field(None, description="when the phone took it (as it says), if known")
    uploaded_at: dt.datetime
    uploaded_by: str | None
    url: str


class PhotoList(BaseModel):
    """The photos of a case, oldest first."""

    items: list[PhotoOut]
