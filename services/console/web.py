"""The console's pages: server-rendered HTML (GOV.UK Design System), working without JavaScript.

Sign-in is OpenID Connect, authorization code with PKCE, through Authlib's Starlette client: forces sign staff in
with their own identity provider, and the roles and BCUs come from configured claims of the ID token. The session
is a signed cookie (no server-side store, so any console instance serves any request) that ends
PPO_CONSOLE_SESSION_HOURS after sign-in however active. Every form carries the session's CSRF token; every page
has the security headers. What a person may see follows their role:

- `bcu`: open obligations, their history and acknowledgement, and the custody countdown, for their BCUs;
- `coordinator`: the register of their BCUs (search, a person's trail);
- `operator`: every BCU's obligations, no register (personal data only where a role needs it).

Changes go out only as the events the rest of the system uses: an acknowledgement is an `Acknowledgement` on
`<prefix>.acknowledgements` (the scheduler records it and stops the escalation), naming who made it.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console.view import ConsoleView
from shared.ack import Acknowledgement
from shared.calendar import london_date
from shared.clock import Clock
from shared.dead_letters import Publish
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.console")

ROLES = ("bcu", "coordinator", "operator")
TEMPLATES = Path(__file__).parent / "templates"
PAGE_SIZE = 50
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
NO_STORE = {"Cache-Control": "no-store"}  # pages carry personal data: never kept by a browser or proxy


@dataclass(frozen=True)
class StaffMember:
    """Who is signed in, from the ID token: `sub` is what changes are recorded under."""

    sub: str
    name: str
    email: str
    roles: frozenset[str]
    bcus: frozenset[str]

    def may(self, role: str) -> bool:
        return role in self.roles

    def bcus_seen(self) -> set[str] | None:
        """The BCUs whose obligations this person sees: every BCU (None) for an operator."""
        return None if "operator" in self.roles else set(self.bcus)

    def as_session(self) -> dict[str, Any]:
        return {"sub": self.sub, "name": self.name, "email": self.email, "roles": sorted(self.roles),
                "bcus": sorted(self.bcus)}

    @classmethod
    def from_session(cls, data: dict[str, Any]) -> StaffMember:
        return cls(str(data["sub"]), str(data["name"]), str(data["email"]), frozenset(data["roles"]),
                   frozenset(data["bcus"]))

    @classmethod
    def from_claims(cls, claims: dict[str, Any], roles_claim: str, bcus_claim: str) -> StaffMember:
        def strings(value: Any) -> frozenset[str]:
            if isinstance(value, str):
                value = value.split()
            return frozenset(v for v in value if isinstance(v, str)) if isinstance(value, list) else frozenset()

        return cls(sub=str(claims["sub"]), name=str(claims.get("name") or claims.get("preferred_username") or ""),
                   email=str(claims.get("email") or ""), roles=strings(claims.get(roles_claim)) & set(ROLES),
                   bcus=strings(claims.get(bcus_claim)))


class SecurityHeaders:
    """Every response, pages, assets and errors alike, carries the security headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                            if k.lower().encode() not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class ConsolePages:
    """The pages every role shares, and the plumbing (who is signed in, rendering, CSRF, roles) that the other
    groups of pages (services/console/register_pages.py, operator_pages.py) use through it."""

    def __init__(self, settings: Settings, view: ConsoleView, clock: Clock, publish: Publish, oauth: Any,
                 topics: Topics, assets: Path | None) -> None:
        self.settings = settings
        self.view = view
        self.clock = clock
        self.publish = publish  # topic, value, key, headers: the one way the console changes anything
        self.oauth = oauth
        self.topics = topics
        self.assets = assets
        self.session_length = timedelta(hours=settings.console_session_hours)
        self.templates = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["london"] = _london

    # --- the plumbing every page shares -------------------------------------------------------------------------

    def member(self, request: Request) -> StaffMember | None:
        """The signed-in person, or None (never signed in, or the session has ended: it is cleared)."""
        data = request.session.get("member")
        since = request.session.get("since")
        if not data or not since:
            return None
        if datetime.fromisoformat(since) + self.session_length <= self.clock.now():
            request.session.clear()
            request.state.session_ended = True
            return None
        return StaffMember.from_session(data)

    def page(self, request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        member = self.member(request)
        html = self.templates.get_template(template).render(
            member=member, csrf=request.session.get("csrf", ""), now=self.clock.now(), marking=self.settings.marking,
            **values)
        return HTMLResponse(html, status_code=status, headers=NO_STORE)

    def refused(self, request: Request, status: int, title: str, text: str) -> HTMLResponse:
        return self.page(request, "message.html", status, title=title, text=text)

    async def csrf_ok(self, request: Request) -> dict[str, str] | None:
        """The posted form (first value of each field) when its CSRF token is this session's; None otherwise."""
        fields = await self.csrf_ok_all(request)
        return None if fields is None else {k: v[0] for k, v in fields.items()}

    async def csrf_ok_all(self, request: Request) -> dict[str, list[str]] | None:
        """`csrf_ok` keeping every value of a field (a selection of checkboxes)."""
        form = await _small_form(request)
        sent = form.get("csrf", [""])[0]
        expected = request.session.get("csrf")
        if not sent or not expected or not hmac.compare_digest(sent, expected):
            return None
        return form

    def need(self, request: Request, *roles: str) -> StaffMember | Response:
        member = self.member(request)
        if member is None:
            ended = getattr(request.state, "session_ended", False)
            return RedirectResponse("/?ended=1" if ended else "/", status_code=303)
        if not any(member.may(r) for r in roles):
            return self.refused(request, 403, "You cannot see this page",
                                "Your account does not have the role this page needs. Ask your scheme coordinator.")
        return member

    # --- sign-in ----------------------------------------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        member = self.member(request)
        if member is None:
            return self.page(request, "start.html", ended=request.query_params.get("ended") == "1")
        now = self.clock.now()
        counts = self.view.counts(member.bcus_seen(), now) if member.may("bcu") or member.may("operator") else {}
        return self.page(request, "home.html", counts=counts)

    async def sign_in(self, request: Request) -> Response:
        if self.oauth is None:
            return self.refused(request, 503, "Sign-in is not set up",
                                "PPO_CONSOLE_OIDC_ISSUER and PPO_CONSOLE_OIDC_CLIENT_ID are not set.")
        redirect = f"{self.settings.console_public_url.rstrip('/')}/auth/callback"
        response: Response = await self.oauth.authorize_redirect(request, redirect)
        return response

    async def callback(self, request: Request) -> Response:
        from authlib.integrations.base_client.errors import OAuthError

        if self.oauth is None:
            return RedirectResponse("/", status_code=303)
        try:
            token = await self.oauth.authorize_access_token(request)
        except OAuthError as exc:
            log.warning("sign-in refused by the identity provider", extra={"error": exc.error})
            return self.refused(request, 400, "Sign-in did not work", "Go back to the start page and sign in again.")
        claims = dict(token.get("userinfo") or {})
        member = StaffMember.from_claims(claims, self.settings.console_oidc_roles_claim,
                                         self.settings.console_oidc_bcus_claim)
        request.session.clear()  # a fresh session at sign-in: nothing from before carries over
        request.session.update({"member": member.as_session(), "since": self.clock.now().isoformat(),
                                "csrf": secrets.token_urlsafe(32)})
        log.info("signed in", extra={"sub": member.sub, "roles": sorted(member.roles)})
        return RedirectResponse("/", status_code=303)

    async def sign_out(self, request: Request) -> Response:
        if await self.csrf_ok(request) is None:
            return self.refused(request, 400, "Sign-out did not work", "Go back and press the button again.")
        request.session.clear()
        return self.page(request, "message.html", title="You have signed out",
                         text="Close this window, or sign in again from the start page.")

    # --- obligations --------------------------------------------------------------------------------------------

    async def obligations(self, request: Request) -> Response:
        member = self.need(request, "bcu", "operator")
        if not isinstance(member, StaffMember):
            return member
        try:
            page_number = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page_number = 1
        now = self.clock.now()
        rows = self.view.open_for_bcus(member.bcus_seen(), now, limit=PAGE_SIZE + 1,
                                       offset=(page_number - 1) * PAGE_SIZE)
        return self.page(request, "obligations.html", rows=rows[:PAGE_SIZE], page_number=page_number,
                         more=len(rows) > PAGE_SIZE, counts=self.view.counts(member.bcus_seen(), now))

    async def obligation(self, request: Request) -> Response:
        member = self.need(request, "bcu", "operator")
        if not isinstance(member, StaffMember):
            return member
        detail = self.view.obligation(request.path_params["obligation_id"], member.bcus_seen(), self.clock.now())
        if detail is None:  # unknown, or another BCU's: the same answer, so ids cannot be probed
            return self.refused(request, 404, "Obligation not found", "It may belong to a BCU you do not work for.")
        return self.page(request, "obligation.html", detail=detail, done=request.query_params.get("done"))

    async def acknowledge(self, request: Request) -> Response:
        member = self.need(request, "bcu")
        if not isinstance(member, StaffMember):
            return member
        if await self.csrf_ok(request) is None:
            return self.refused(request, 400, "Not recorded", "The form had expired. Go back, reload and try again.")
        oid = request.path_params["obligation_id"]
        now = self.clock.now()
        detail = self.view.obligation(oid, member.bcus_seen(), now)
        if detail is None:
            return self.refused(request, 404, "Obligation not found", "It may belong to a BCU you do not work for.")
        if not detail.acknowledgements:
            ack = Acknowledgement(obligation_id=oid, recipient=member.email or f"{member.sub}@console",
                                  acknowledged_at=now, link_expires_at=now)
            await self.publish(self.topics.acknowledgements, ack.model_dump_json().encode(), oid.encode(), [])
            self.view.apply_acknowledgement(oid.encode(), ack.model_dump_json().encode())  # shown at once
            log.info("acknowledged", extra={"obligation_id": oid, "sub": member.sub, "channel": "console"})
        return RedirectResponse(f"/obligations/{oid}?done=acknowledged", status_code=303)

    async def custody(self, request: Request) -> Response:
        member = self.need(request, "bcu", "operator")
        if not isinstance(member, StaffMember):
            return member
        rows = self.view.custody_countdown(member.bcus_seen(), self.clock.now())
        return self.page(request, "custody.html", rows=rows)

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/", self.start),
            Route("/sign-in", self.sign_in),
            Route("/auth/callback", self.callback),
            Route("/sign-out", self.sign_out, methods=["POST"]),
            Route("/obligations", self.obligations),
            Route("/obligations/{obligation_id}", self.obligation),
            Route("/obligations/{obligation_id}/acknowledge", self.acknowledge, methods=["POST"]),
            Route("/custody", self.custody),
        ]
        if self.assets is not None:
            routes.append(Mount("/assets", app=StaticFiles(directory=self.assets / "assets", check_dir=False)))
            routes.append(Mount("/stylesheets", app=StaticFiles(directory=self.assets, check_dir=False)))
        return routes


FORM_LIMIT = 16_384  # the console's forms are a few short fields, or a selection of ids
FORM_FIELDS = 200  # a selection of dead letters is one field per id


async def _small_form(request: Request) -> dict[str, list[str]]:
    """A urlencoded form of at most FORM_LIMIT bytes (anything else reads as an empty form, which no check passes):
    what a browser posts from these pages, without a multipart parser."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=FORM_FIELDS)
    except ValueError:  # more fields than any page's form has
        return {}
    return {k: v for k, v in fields.items() if v}


def _london(at: datetime | None) -> str:
    """An instant as London staff read it: "3 December 2026, 14:05"."""
    if at is None:
        return ""
    from zoneinfo import ZoneInfo

    local = at.astimezone(ZoneInfo("Europe/London"))
    return f"{london_date(at).day} {local:%B %Y, %H:%M}"
