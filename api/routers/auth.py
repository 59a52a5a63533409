"""Logging in: OAuth2 password flow (access + refresh JWTs), the caller's identity, and a browser login page.

A browser login is also a device session (设备登录): besides the short access cookie it gets an HttpOnly cookie
holding the session's refresh token (`DEVICE_COOKIE`, `Settings.device_session_days`), which
`POST /v1/auth/device` spends for a fresh access cookie (rotation with reuse detection, `geo.access.sessions`).
The phone pages call it when an answer says 401 and the login page calls it before asking for a password, so a
worker signs in again only after the device session ends or an admin revokes it (`/v1/sessions`).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.auth import (
    COOKIE_NAME,
    LOGIN_PATH,
    Admin,
    AuditDep,
    CurrentUser,
    OptionalUser,
    decode_token,
    is_https,
    issue_token,
    request_info,
    token_lifetime,
)
from api.deps import SessionDep
from api.problems import Problem, problem_response, problem_responses
from api.schemas.access import DeviceSession, DeviceSessionList, Me, PasswordChange, RefreshRequest, TokenPair
from geo.access import audit, sessions, throttle
from geo.access.users import (
    authenticate,
    change_own_password,
    get_user,
    jurisdiction_name,
    revoke_tokens,
    user_for_token,
    verify_password,
)
from geo.errors import NotFound
from geo.settings import get_settings

log = logging.getLogger("gridatlas.auth")
router = APIRouter(tags=["auth"])

INVALID_LOGIN = "incorrect username or password"
#: The device session's refresh token (HttpOnly; only /v1/auth/device reads it).
DEVICE_COOKIE = "gridatlas_device"
DEVICE_COOKIE_PATH = "/v1/auth/device"
#: Readable by the login page only (no secret in it): this browser has a device session, so it is tried first.
DEVICE_HINT = "gridatlas_device_hint"


class SessionNotFound(NotFound):
    """No such login session."""

    slug = "session-not-found"


def device_lifetime() -> dt.timedelta:
    """How long a device session lasts without use (GRIDATLAS_DEVICE_SESSION_DAYS)."""
    return dt.timedelta(days=get_settings().device_session_days)


def _set_cookies(response: Response, request: Request, access: str, refresh: str | None) -> None:
    """The access cookie (short) and, for a device session, its refresh cookie (long, seen only by its path)."""
    secure = is_https(request)
    response.set_cookie(COOKIE_NAME, access, max_age=int(token_lifetime("access").total_seconds()), httponly=True,
                        samesite="lax", secure=secure, path="/")
    if refresh is not None:
        age = int(device_lifetime().total_seconds())
        response.set_cookie(DEVICE_COOKIE, refresh, max_age=age, httponly=True, samesite="strict", secure=secure,
                            path=DEVICE_COOKIE_PATH)
        response.set_cookie(DEVICE_HINT, "1", max_age=age, samesite="strict", secure=secure, path=LOGIN_PATH)


def _clear_device(response: Response) -> None:
    response.delete_cookie(DEVICE_COOKIE, path=DEVICE_COOKIE_PATH, httponly=True, samesite="strict")
    response.delete_cookie(DEVICE_HINT, path=LOGIN_PATH, samesite="strict")
ROLE_NAMES = {"admin": "管理员", "planner": "规划员", "leader": "领导", "worker": "网格员"}


def _tokens(session, user) -> TokenPair:
    """A fresh pair for a new login session (a new refresh-token family)."""
    family = sessions.start(session, user.username, token_lifetime("refresh"))
    return _pair(user, family.id, family.current_jti)


def _pair(user, family: str, refresh_jti: str) -> TokenPair:
    return TokenPair(
        access_token=issue_token(user, "access", family=family),
        expires_in=int(token_lifetime("access").total_seconds()),
        refresh_token=issue_token(user, "refresh", family=family, jti=refresh_jti),
        refresh_expires_in=int(token_lifetime("refresh").total_seconds()),
    )


def _safe_next(request: Request, target: str | None) -> str:
    """A local path to go to after logging in (never another site)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"  # the home page: the caller's jurisdiction, its figures and every map


def _login_redirect(request: Request, error: str, next_path: str | None, retry: int | None = None) -> Response:
    query = f"error={error}&next={quote(_safe_next(request, next_path), safe='')}"
    if retry:
        query += f"&retry={retry}"
    return RedirectResponse(f"{LOGIN_PATH}?{query}", status_code=303)


@router.post("/v1/auth/token", response_model=TokenPair,
             responses={**problem_responses(401, 422, 429), 303: {"description": "the browser form: to `next`"}})
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
    scope: Annotated[str, Form()] = "",
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
    cookie: Annotated[bool, Form(description="set the browser session cookie and redirect to `next`")] = False,
    next: Annotated[str | None, Form(description="where the browser goes after logging in")] = None,
):
    """Exchange a username and password for an access and a refresh token (OAuth2 password flow).

    Unknown user, wrong password and disabled user get the same answer. After repeated failures for one account
    from one address (or many accounts from one address, or one account from many addresses, for addresses the
    account does not usually log in from), further attempts wait an exponentially growing delay: 429 with
    Retry-After. The owner at their usual address is not locked out; an admin can clear the failures
    (`POST /v1/users/{username}/unlock`). Every refusal is audited.
    """
    info = request_info(request)
    verdict = throttle.check(session, username, info.remote_addr)
    if not verdict.allowed:
        log.warning("login refused (throttled by %s) for %r from %s; retry in %ss",
                    verdict.reason, username, info.remote_addr, verdict.retry_after)
        audit.record(session, None, "auth.login_refused", "login", username[:64], None, None,
                     {"reason": verdict.reason, "retry_after": verdict.retry_after,
                      "remote_addr": info.remote_addr}, info)
        if cookie:
            return _login_redirect(request, "throttled", next, verdict.retry_after)
        return problem_response(request, 429, f"too many failed logins; try again in {verdict.retry_after} s",
                                type="login-throttled", headers={"Retry-After": str(verdict.retry_after)},
                                retry_after=verdict.retry_after)
    user = authenticate(session, username, password)
    outcome = throttle.record_attempt(session, username, info.remote_addr, success=user is not None)
    if user is None:
        log.warning("failed login for %r from %s", username, info.remote_addr)
        audit.record(session, None, "auth.login_failed", "login", username[:64], None, None,
                     {"remote_addr": info.remote_addr}, info)
        if not outcome.allowed:
            log.warning("login throttle tripped (%s) for %r from %s for %ss",
                        outcome.reason, username, info.remote_addr, outcome.retry_after)
            audit.record(session, None, "auth.throttled", "login", username[:64], None, None,
                         {"reason": outcome.reason, "retry_after": outcome.retry_after,
                          "remote_addr": info.remote_addr}, info)
        # answered, not raised: the failed attempt must be committed for throttling to see it
        if cookie:
            return _login_redirect(request, "invalid", next)
        return problem_response(request, 401, INVALID_LOGIN, type="invalid-credentials",
                                headers={"WWW-Authenticate": "Bearer"})
    audit.record(session, user.username, "auth.login", "user", user.username, user.jurisdiction_code,
                 None, {"via": "cookie" if cookie else "token"}, info)
    if cookie:
        # a browser: a device session, its refresh token in a cookie of its own
        family = sessions.start(session, user.username, device_lifetime(),
                                device=request.headers.get("user-agent", "")[:200] or "browser")
        response = RedirectResponse(_safe_next(request, next), status_code=303)
        # Secure when the browser came over https, directly or through a trusted proxy (X-Forwarded-Proto)
        _set_cookies(response, request, issue_token(user, "access", family=family.id),
                     issue_token(user, "refresh", lifetime=device_lifetime(), family=family.id,
                                 jti=family.current_jti))
        return response
    return _tokens(session, user)


@router.post("/v1/auth/refresh", response_model=TokenPair, responses=problem_responses(401, 422))
def refresh(body: RefreshRequest, request: Request, session: SessionDep):
    """A new access token and a new refresh token for the current refresh token of a session (rotation).

    The refresh token presented is spent. Presenting a spent one again (it was copied) revokes the whole session:
    every access and refresh token of that login stops working. Refused once the user is disabled, their tokens
    revoked or the session logged out. Refusals are audited.
    """
    info = request_info(request)
    claims = decode_token(body.refresh_token, kind="refresh")
    family, jti = claims.get("fam"), claims.get("jti")
    user = user_for_token(session, claims["sub"], claims.get("tv"))  # the name is signed: ours
    outcome = sessions.Rotation.UNKNOWN
    new_jti = None
    if user is not None and isinstance(family, str) and isinstance(jti, str):
        outcome, new_jti = sessions.rotate(session, family, jti, user.username, token_lifetime("refresh"))
    if user is None or outcome is not sessions.Rotation.ROTATED or new_jti is None:
        reason = "user" if user is None else outcome.value
        action = "auth.refresh_reused" if outcome is sessions.Rotation.REUSED else "auth.refresh_refused"
        log.warning("refresh refused (%s) for %r from %s", reason, claims.get("sub"), info.remote_addr)
        audit.record(session, None, action, "user", str(claims.get("sub"))[:64],
                     user.jurisdiction_code if user else None, None,
                     {"reason": reason, "remote_addr": info.remote_addr}, info)
        detail = ("this refresh token was already used: the session is revoked, log in again"
                  if outcome is sessions.Rotation.REUSED else
                  "the refresh token is no longer valid (rotated, logged out, revoked or user disabled)")
        # answered, not raised: the revocation and the audit entry must be committed
        return problem_response(request, 401, detail, type="unauthorised", headers={"WWW-Authenticate": "Bearer"})
    audit.record(session, user.username, "auth.refresh", "user", user.username, user.jurisdiction_code,
                 request_info=info)
    return _pair(user, str(family), new_jti)


@router.post("/v1/auth/device", status_code=204, responses=problem_responses(401, 422))
def device_refresh(request: Request, session: SessionDep) -> Response:
    """A fresh access cookie for this browser's device session (its refresh cookie is spent and replaced). 422
    without a device cookie; 401 when its session has ended (logout, admin, expiry) or its token was used before
    (then the session ends)."""
    info = request_info(request)
    token = request.cookies.get(DEVICE_COOKIE)
    if not token:
        return problem_response(request, 422, "this browser has no device session cookie: log in",
                                type="device-session-missing")
    claims = decode_token(token, kind="refresh")
    user = user_for_token(session, claims["sub"], claims.get("tv"))
    outcome, new_jti = sessions.Rotation.UNKNOWN, None
    family = claims.get("fam")
    if user is not None and isinstance(family, str) and isinstance(claims.get("jti"), str):
        outcome, new_jti = sessions.rotate(session, family, claims["jti"], user.username, device_lifetime())
    if user is None or outcome is not sessions.Rotation.ROTATED or new_jti is None:
        audit.record(session, None, "auth.refresh_reused" if outcome is sessions.Rotation.REUSED
                     else "auth.refresh_refused", "user", str(claims.get("sub"))[:64],
                     user.jurisdiction_code if user else None, None,
                     {"reason": "user" if user is None else outcome.value, "via": "device",
                      "remote_addr": info.remote_addr}, info)
        refused = problem_response(request, 401, "no device session on this browser: log in", type="unauthorised")
        _clear_device(refused)
        return refused
    audit.record(session, user.username, "auth.refresh", "user", user.username, user.jurisdiction_code,
                 None, {"via": "device"}, info)
    response = Response(status_code=204)
    _set_cookies(response, request, issue_token(user, "access", family=str(family)),
                 issue_token(user, "refresh", lifetime=device_lifetime(), family=str(family), jti=new_jti))
    return response


def _session_out(family: sessions.TokenFamily) -> dict:
    return {"id": family.id, "username": family.username, "device": family.device, "created_at": family.created_at,
            "last_used_at": family.last_used_at, "expires_at": family.expires_at, "revoked_at": family.revoked_at,
            "revoked_reason": family.revoked_reason}


@router.get("/v1/sessions", response_model=DeviceSessionList, responses=problem_responses(401, 403, 422))
def list_sessions(
    principal: Admin,
    session: SessionDep,
    username: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00]*$")] = None,
    include_ended: Annotated[bool, Query(description="also revoked and expired sessions")] = False,
) -> dict:
    """Login sessions (devices and API logins), newest first; an admin's view, to revoke a lost phone's."""
    return {"items": [_session_out(f) for f in sessions.list_sessions(session, username, not include_ended)]}


@router.delete("/v1/sessions/{session_id}", response_model=DeviceSession,
               responses=problem_responses(401, 403, 404, 422))
def revoke_session(session_id: Annotated[str, Path(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")], principal: Admin,
                   session: SessionDep, audit_entry: AuditDep) -> dict:
    """End a login session: its access and refresh tokens stop working at once (the phone must log in again;
    what it has queued stays on it)."""
    family = sessions.get_session(session, session_id)
    if family is None:
        raise SessionNotFound(f"there is no login session {session_id}")
    if sessions.revoke(session, session_id, f"revoked by {principal.username}"):
        audit_entry("auth.session_revoke", "user", family.username, None,
                    after={"session": session_id, "device": family.device})
    session.refresh(family)
    return _session_out(family)


@router.get("/v1/auth/me", response_model=Me, responses=problem_responses(401))
def me(principal: CurrentUser, session: SessionDep) -> Me:
    """Who the credentials belong to: name, role, jurisdiction."""
    code = principal.jurisdiction_code
    return Me(username=principal.username, role=principal.role, jurisdiction_code=code,
              jurisdiction_level=principal.jurisdiction_level,
              jurisdiction_name=jurisdiction_name(session, code) if code else None, via=principal.via)


@router.post("/v1/auth/password", response_model=TokenPair, responses=problem_responses(401, 403, 422, 429))
def change_password(body: PasswordChange, request: Request, principal: CurrentUser, session: SessionDep,
                    audit_entry: AuditDep):
    """Change your own password; every earlier token stops working and a fresh pair is returned."""
    if principal.via and principal.via.startswith("api_key:"):
        raise Problem(403, "an API key cannot change a password; log in with the password", type="forbidden")
    info = request_info(request)
    verdict = throttle.check(session, principal.username, info.remote_addr)
    if not verdict.allowed:
        return problem_response(request, 429, f"too many failed attempts; try again in {verdict.retry_after} s",
                                type="login-throttled", headers={"Retry-After": str(verdict.retry_after)})
    user = get_user(session, principal.username)
    ok = verify_password(user.password_hash, body.current_password)
    throttle.record_attempt(session, principal.username, info.remote_addr, success=ok)
    if not ok:
        audit_entry("user.password_change_failed", "user", user.username, user.jurisdiction_code)
        return problem_response(request, 401, "the current password is wrong", type="invalid-credentials")
    change_own_password(session, user, body.new_password)
    sessions.revoke_user(session, user.username, "password changed")
    audit_entry("user.password_change", "user", user.username, user.jurisdiction_code)
    return _tokens(session, user)


@router.post("/v1/auth/logout", status_code=204,
             responses={**problem_responses(401, 403), 303: {"description": "back to the login page"}})
def logout(request: Request, principal: CurrentUser, session: SessionDep, audit_entry: AuditDep,
           everywhere: Annotated[bool, Query(description="revoke every token issued to you so far")] = False):
    """End the session: its access token (bearer or cookie) and its refresh tokens stop working at once, and the
    cookie is cleared. With `everywhere`, every token issued to you so far stops working."""
    claims = getattr(request.state, "token_claims", None) or {}
    family = claims.get("fam")
    if everywhere or (principal.via in ("token", "cookie") and not isinstance(family, str)):
        # a token from before login sessions carries no family: only the token version can end it
        revoke_tokens(get_user(session, principal.username))
        sessions.revoke_user(session, principal.username, "logout everywhere" if everywhere else "logout")
        session.flush()
    elif isinstance(family, str):
        sessions.revoke(session, family, "logout")
    audit_entry("auth.logout", "user", principal.username, principal.jurisdiction_code,
                after={"everywhere": everywhere, "via": principal.via})
    wants_page = "text/html" in request.headers.get("accept", "")
    response = RedirectResponse(LOGIN_PATH, status_code=303) if wants_page else Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")
    _clear_device(response)
    return response


# ---------------------------------------------------------------------------------------- the login page

_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>登录 · GridAtlas 网格地图</title>
<style>
 body{{margin:0;font-family:"PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;background:#eef2f6;
      color:#1f2933;display:flex;min-height:100vh;align-items:center;justify-content:center}}
 main{{background:#fff;padding:2em 2.2em;border-radius:8px;box-shadow:0 2px 12px rgba(0,0,0,.12);
      width:min(22em,90vw)}}
 h1{{font-size:1.3em;margin:0 0 1em}} label{{display:block;margin:.8em 0 .3em}}
 input[type=text],input[type=password]{{width:100%;box-sizing:border-box;padding:.55em;font-size:1em;
      border:1px solid #b8c2cc;border-radius:4px}}
 button{{margin-top:1.2em;width:100%;padding:.65em;font-size:1em;border:0;border-radius:4px;
      background:#1d4ed8;color:#fff;cursor:pointer}}
 .error{{background:#fde8e8;color:#9b1c1c;padding:.6em;border-radius:4px}}
 .note{{color:#52606d;font-size:.85em;margin-top:1.2em}}
</style></head>
<body><main>
<h1>GridAtlas 网格地图 · 登录</h1>
{body}
</main></body></html>
"""

_FORM = """{error}
<form method="post" action="/v1/auth/token">
 <input type="hidden" name="cookie" value="true">
 <input type="hidden" name="next" value="{next}">
 <label for="username">用户名</label>
 <input id="username" name="username" type="text" autocomplete="username" required autofocus>
 <label for="password">密码</label>
 <input id="password" name="password" type="password" autocomplete="current-password" required>
 <button type="submit">登录</button>
</form>
<p class="note">本设备登录后 {days} 天内保持登录（退出或管理员注销后失效）。忘记密码请联系管理员重置。</p>
<script>
/* a device session on this browser: a fresh access cookie without the password, then on to `next` */
if (!{has_error} && document.cookie.split("; ").indexOf("{hint}=1") >= 0) {{
  fetch("/v1/auth/device", {{method: "POST", credentials: "same-origin"}}).then(function (r) {{
    if (r.status === 204) location.replace(document.querySelector("input[name=next]").value);
  }}).catch(function () {{}});
}}
</script>
"""

_SIGNED_IN = """<p>已登录：<b>{username}</b>（{role}{jurisdiction}）</p>
<p><a href="{next}">继续</a></p>
<form method="post" action="/v1/auth/logout"><button type="submit">退出登录</button></form>
"""


@router.get(LOGIN_PATH, response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, principal: OptionalUser,
               next: Annotated[str | None, Query(max_length=2000)] = None,
               error: Annotated[str | None, Query(max_length=20)] = None,
               retry: Annotated[int | None, Query(ge=0)] = None) -> HTMLResponse:
    """The browser login page (中文, no external resources): posts to the token endpoint, which sets the cookie."""
    target = html.escape(_safe_next(request, next), quote=True)
    if principal is not None:
        where = f"，辖区 {html.escape(principal.jurisdiction_code)}" if principal.jurisdiction_code else ""
        body = _SIGNED_IN.format(username=html.escape(principal.username),
                                 role=ROLE_NAMES.get(principal.role, principal.role), jurisdiction=where, next=target)
    else:
        message = {
            "invalid": "用户名或密码不正确。",
            "throttled": f"登录失败次数过多，请 {retry} 秒后再试。" if retry else "登录失败次数过多，请稍后再试。",
        }.get(error or "")
        body = _FORM.format(error=f'<p class="error" role="alert">{message}</p>' if message else "", next=target,
                            days=get_settings().device_session_days, has_error="true" if message else "false",
                            hint=DEVICE_HINT)
    return HTMLResponse(_PAGE.format(body=body), headers={"Cache-Control": "no-store"})
