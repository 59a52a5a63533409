"""Periods (统计期) of incident listings, KPIs and heatmaps: what `from` and `to` mean, in local time.

A period is half-open, [start, end). A bound is an ISO datetime (a naive one is local time), a date (YYYY-MM-DD)
or a month (YYYY-MM): `from` starts at the beginning of that day or month, and `to` includes it (the period ends
at the start of the next day or month). Local time is the configured time zone (Asia/Shanghai by default); months
are local calendar months (`month_starts`), the months the rollups count in.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from geo.incidents.errors import InvalidQuery


def parse_bound(value: str | None, tz: str, is_end: bool = False) -> dt.datetime | None:
    """One bound of a period (None when empty): a datetime as given, a day's or month's start, or for an end the
    start of the day or month after."""
    if not value:
        return None
    zone = ZoneInfo(tz)
    try:
        if "T" in value or " " in value:
            t = dt.datetime.fromisoformat(value)
            return t if t.tzinfo else t.replace(tzinfo=zone)
        if len(value) == 7:  # YYYY-MM: a whole month
            d = dt.date.fromisoformat(value + "-01")
            if is_end:
                d = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            return dt.datetime.combine(d, dt.time.min, tzinfo=zone)
        d = dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidQuery(f"{value!r} is not a date (YYYY-MM-DD or YYYY-MM) or ISO datetime") from None
    return dt.datetime.combine(d + dt.timedelta(days=1) if is_end else d, dt.time.min, tzinfo=zone)


def parse_period(start: str | None, end: str | None, tz: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """`from`/`to` as a half-open period: a bare date `from` is that day's start, a bare date `to` includes the day."""
    s, e = parse_bound(start, tz), parse_bound(end, tz, is_end=True)
    if s and e and e <= s:
        raise InvalidQuery("'to' must come after 'from'")
    return s, e


def month_to_date(start: dt.datetime | None, end: dt.datetime | None, tz: str,
                  now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The period with its open ends filled in: from the start of the current local month, until now."""
    now = now or dt.datetime.now(ZoneInfo(tz))
    return (start or now.astimezone(ZoneInfo(tz)).replace(day=1, hour=0, minute=0, second=0, microsecond=0),
            end or now)


def month_starts(start: dt.datetime, end: dt.datetime, tz: str) -> list[dt.datetime]:
    """The local month boundaries from the month holding `start` to the first one after `end`."""
    zone = ZoneInfo(tz)
    m = start.astimezone(zone).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    out = [m]
    while out[-1] < end:
        nxt = (out[-1].replace(tzinfo=None) + dt.timedelta(days=32)).replace(day=1)
        out.append(nxt.replace(tzinfo=zone))
    return out


def whole_months(start: dt.datetime, end: dt.datetime, tz: str) -> tuple[dt.datetime, dt.datetime] | None:
    """(first, last) local month boundaries inside [start, end) with at least one whole month between, else None."""
    bounds = month_starts(start, end, tz)
    inside = [m for m in bounds if start <= m <= end]
    if len(inside) < 2:
        return None
    return inside[0], inside[-1]
