"""Response bodies of the phone's case list (我的上报): the signed-in worker's own reports."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel


class MyReport(BaseModel):
    id: int
    state: str
    state_name: str
    class_code: str
    class_name: str | None
    reported_at: dt.datetime
    address: str | None
    grid_name: str | None
    community_name: str | None
    photos: int
    handling_photos: int


class MyReports(BaseModel):
    items: list[MyReport]
    total: int
    limit: int
    generated_at: dt.datetime
