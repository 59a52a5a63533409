"""Problem details in Chinese (中文错误说明) for clients that ask with ``Accept-Language: zh-CN`` (the phone pages
always do): a Chinese title per kind of error, and Chinese details with unit names instead of bare codes where the
refusal names units (out of jurisdiction) or limits (photos); other refusals keep their English detail under the
Chinese title. The English detail is always also in ``detail_en``.

Used by the one domain-error handler in `api.problems`; not a router.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from geo.access.users import jurisdiction_name
from geo.errors import DomainError, Kind, OutOfJurisdiction

TITLES: dict[Kind, str] = {
    "invalid": "请求无法处理", "bad-request": "请求格式有误", "not-found": "未找到", "forbidden": "无权操作",
    "unauthenticated": "需要登录", "conflict": "当前状态不允许", "precondition-failed": "数据已被他人修改",
    "precondition-required": "缺少版本信息", "too-large": "内容过大", "too-many": "操作过于频繁",
    "unsupported": "不支持的格式", "unavailable": "服务暂不可用，请稍后重试", "failed": "操作失败，已撤销",
}


def wants_chinese(accept_language: str | None) -> bool:
    """Whether the client's first language choice is Chinese (zh, zh-CN, zh-Hans …)."""
    if not accept_language:
        return False
    ranked = []
    for i, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip().lower()))
    ranked.sort()
    return bool(ranked) and ranked[0][2].startswith("zh") and ranked[0][0] < 0


def _names(request: Request, codes: list[str | None]) -> list[str | None]:
    engine = request.app.state.engine
    with engine.connect() as conn, Session(bind=conn) as session:
        return [jurisdiction_name(session, c) if c else None for c in codes]


def _unit(code: str | None, name: str | None) -> str:
    if not code:
        return "全区"
    return f"{name}（{code}）" if name else code


async def localize(request: Request, exc: DomainError) -> tuple[str, str, dict[str, Any]] | None:
    """(title, detail, extra members) in Chinese when the request asks for Chinese, else None."""
    if not wants_chinese(request.headers.get("accept-language")):
        return None
    extra = dict(exc.extra)
    extra["detail_en"] = exc.message
    title = TITLES.get(exc.kind, exc.title or "请求无法处理")
    detail = exc.message  # no Chinese wording for this one yet: the English detail, under a Chinese title
    if isinstance(exc, OutOfJurisdiction):
        needed, yours = exc.extra.get("required_jurisdiction"), exc.extra.get("your_jurisdiction")
        try:
            n_needed, n_yours = await run_in_threadpool(_names, request, [needed, yours])
        except Exception:  # names are a courtesy: the codes still say it
            n_needed = n_yours = None
        what = "该位置" if "location" in exc.message else "该对象"
        detail = f"{what}属于 {_unit(needed, n_needed)}，不在您负责的 {_unit(yours, n_yours)}内。"
    elif exc.slug == "photo-too-large":
        detail = f"照片过大：最多 {int(exc.extra.get('max_bytes', 0)) // 1024} KB。"
    elif exc.slug == "unsupported-photo-type":
        detail = "只接受 JPEG、PNG 或 WebP 照片。"
    elif exc.slug == "invalid-photo":
        detail = (f"每个阶段最多 {exc.extra['max_photos']} 张照片。" if "max_photos" in exc.extra
                  else "照片内容与声明的类型不符或无法读取。")
    elif exc.slug == "outside-district":
        detail = "该位置不在本区任何街道内，无法上报。"
    return title, detail, extra
