"""Composition point of the console: the view, the follower that keeps it current, the pages, sign-in."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.middleware.sessions import SessionMiddleware

from services.console.operator_pages import OperatorPages
from services.console.register_pages import RegisterPages
from services.console.report_pages import ReportPages
from services.console.view import ConsoleView
from services.console.web import ConsolePages, SecurityHeaders
from shared.clock import Clock
from shared.follow import Follower
from shared.http import HttpServer, build_app
from shared.kafka import make_broker
from shared.local_key import generated_key
from shared.service import RunningService
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.console")


class ConsoleNotConfigured(ValueError):
    """A setting the console cannot start without, named."""


def session_secret(settings: Settings) -> str:
    """PPO_CONSOLE_SESSION_SECRET; unset, for a console on this machine only, a key generated once into
    `<state_dir>/console-session-secret` (several instances must share one: set it)."""
    if settings.console_session_secret is not None:
        return settings.console_session_secret.get_secret_value()
    if not settings.console_public_url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ConsoleNotConfigured(f"PPO_CONSOLE_SESSION_SECRET is not set, and the console is at "
                                   f"{settings.console_public_url}: set it, the same on every instance")
    log.warning("PPO_CONSOLE_SESSION_SECRET is not set: sessions are signed with a generated key (local use only)")
    return generated_key(Path(settings.state_dir) / "console-session-secret")


def identity_provider(settings: Settings) -> Any:
    """Authlib's client for the configured OpenID Connect provider (None: sign-in not set up)."""
    if not settings.console_oidc_issuer or not settings.console_oidc_client_id:
        log.warning("PPO_CONSOLE_OIDC_ISSUER or PPO_CONSOLE_OIDC_CLIENT_ID is not set: nobody can sign in")
        return None
    from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    secret = settings.console_oidc_client_secret
    oauth.register(
        "idp", client_id=settings.console_oidc_client_id,
        client_secret=secret.get_secret_value() if secret is not None else None,
        server_metadata_url=f"{settings.console_oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"})
    return oauth.create_client("idp")


def build(settings: Settings, clock: Clock) -> tuple[RunningService, ConsolePages]:
    from services.console.assets import AssetsMissing, govuk_dist

    topics = Topics(settings.topic_prefix)
    broker = make_broker(settings, "ppo-console")
    view = ConsoleView()
    follower = Follower(settings, {topics.obligations: view.apply_obligation, topics.register: view.apply_register,
                                   topics.acknowledgements: view.apply_acknowledgement}, "console")
    try:
        assets: Path | None = govuk_dist()
    except AssetsMissing as exc:
        log.warning("the console's styles are missing: %s", exc)
        assets = None

    async def publish(topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        await broker.publish(value, topic, key=key, headers={k: v.decode() for k, v in headers})

    pages = ConsolePages(settings, view, clock, publish, identity_provider(settings), topics, assets)
    routes = [*pages.routes(), *RegisterPages(pages).routes(), *ReportPages(pages).routes(),
              *OperatorPages(pages).routes()]
    app = build_app("console", follower.caught_up.is_set, routes)
    app.add_middleware(SessionMiddleware, secret_key=session_secret(settings), session_cookie="ppo_console",
                       max_age=int(settings.console_session_hours * 3600), same_site="lax",
                       https_only=settings.console_public_url.startswith("https://"))
    app.add_middleware(SecurityHeaders)
    running = RunningService("console", broker, HttpServer(app, settings.http_host, settings.console_port),
                             after_broker=follower.start)
    running.on_stop.append(follower.stop)
    return running, pages
