"""The dashboard server's own routes: the session cookie, set from a one-time code and cleared.

Streamlit cannot set cookies from a script, so a signed-in page fetches `_emps/session?code=...`
(emps.dashboard.session.render_cookie_exchange) and this route answers with the session cookie:
HttpOnly (page scripts cannot read it), SameSite=Strict, Secure over HTTPS. Requests another site
makes the browser send are refused.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emps.dashboard import session

NO_STORE = {"Cache-Control": "no-store"}


def _secure(request: Request) -> bool:
    proto = request.headers.get("X-Forwarded-Proto", request.url.scheme)
    return proto.split(",")[0].strip() == "https"


def _cross_site(request: Request) -> bool:
    """A request another site made the browser send (browsers say so in Sec-Fetch-Site): it
    could plant someone else's session (login CSRF) or end this one."""
    return request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def routes(path: str = "/", max_age_s: int | None = None) -> list[Route]:
    """The two routes under `path` (the server's base URL path, where the cookie applies)."""
    prefix = path.rstrip("/")

    async def store_session(request: Request) -> Response:
        """Exchange a one-time code for the session cookie."""
        if _cross_site(request):
            return Response(status_code=403, headers=NO_STORE)
        token = session.claim(request.query_params.get("code", ""))
        if token is None:
            return Response(status_code=404, headers=NO_STORE)
        if max_age_s is None:
            from emps.settings import get_settings

            age = get_settings().auth.session_max_s
        else:
            age = max_age_s
        response = Response(status_code=204, headers=NO_STORE)
        response.set_cookie(
            session.COOKIE,
            token,
            max_age=age,
            path=path,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )
        return response

    async def clear_session(request: Request) -> Response:
        """Forget the session cookie (the session itself was ended in the database)."""
        if _cross_site(request):
            return Response(status_code=403, headers=NO_STORE)
        response = Response(status_code=204, headers=NO_STORE)
        response.delete_cookie(
            session.COOKIE, path=path, httponly=True, samesite="strict", secure=_secure(request)
        )
        return response

    return [
        Route(f"{prefix}/{session.ROUTE}", store_session, methods=["GET"]),
        Route(f"{prefix}/{session.SIGN_OUT_ROUTE}", clear_session, methods=["GET"]),
    ]
