"""A real, small OpenID Connect provider on 127.0.0.1 for the tests and local runs of the web console (issue 17).

Forces sign staff in with their own identity provider (Entra ID, ADFS); the console signs in with Authlib's client
(authorization code, PKCE). To test that path against a real provider rather than a mock, this module builds one
from Authlib's *server* side: `AuthorizationCodeGrant` with the `OpenIDCode` extension and PKCE (S256 only, and
required), RS256 ID tokens signed with a key generated at start and published at /jwks. The users and clients are
configured in code (or a JSON file for the CLI); there is no database:

    with LocalOidc(users=[OidcUser("ann", "pw", "Ann Smith", "ann@example.test", roles=["bcu"], bcus=["13-LD"])],
                   clients=[OidcClient("console", "secret", ["http://127.0.0.1:8090/auth/callback"])]) as oidc:
        use(oidc.issuer)                       # http://127.0.0.1:PORT; discovery at /.well-known/openid-configuration

    python -m ppo_alerts.localoidc start --users users.json     # prints the issuer; Ctrl-C stops it

The sign-in page at /authorize is a plain HTML form (username, password, the request in hidden fields), so a real
browser (Playwright) or a plain HTTP client can sign in by posting it. There are no sessions at the provider: every
authorization request shows the form, and /logout (the end_session_endpoint) only sends the browser back to a
registered post_logout_redirect_uri. Codes, tokens and nonces live in memory for the provider's lifetime. A local
test and development server on plain HTTP, never a deployment.
"""

from __future__ import annotations

import argparse
import html
import json
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, InvalidRequestError, ResourceProtector, TokenMixin
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin
from authlib.oidc.core.grants import OpenIDCode
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

__all__ = ["FormFields", "LocalOidc", "LocalOidcError", "OidcClient", "OidcUser", "form_fields", "load_config", "main"]

HOST = "127.0.0.1"
SCOPES = ("openid", "profile", "email")
DEFAULT_ROLES_CLAIM = "ppo_roles"
BCUS_CLAIM = "ppo_bcus"
_MAX_BODY = 64 * 1024  # a sign-in form or a token request is a few hundred bytes
# Every page: not framed (clickjacking on the password form), not cached (codes and tokens pass through), no
# scripts; the sign-in page needs only its inline style.
_SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
)


class LocalOidcError(RuntimeError):
    """The provider's configuration is wrong or it could not start; the message says what to do."""


@dataclass(frozen=True)
class OidcUser:
    """A person who can sign in. `sub` is the username; roles go in the configured roles claim, BCU codes
    ("13-LD") in `ppo_bcus`."""

    username: str
    password: str = field(repr=False)
    name: str
    email: str
    roles: Sequence[str] = ()
    bcus: Sequence[str] = ()


@dataclass(frozen=True)
class OidcClient:
    """A relying party (the console): a confidential client with a secret, its exact redirect URIs, and where
    /logout may send the browser afterwards."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: Sequence[str] = ()
    post_logout_redirect_uris: Sequence[str] = ()


# --------------------------------------------------------------------------- Authlib's models


class _Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, config: OidcClient) -> None:
        self.config = config
        self.client_id = config.client_id
        self.client_metadata: dict[str, Any] = {}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None  # OpenID Connect requires redirect_uri in every authorization request

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in (scope or "").split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.config.redirect_uris  # exact match: no prefixes, no wildcards

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self.config.client_secret.encode(), (client_secret or "").encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")  # confidential clients only

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"  # no refresh tokens: the console's session is its own


@dataclass
class _Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: OidcUser
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass
class _Token(TokenMixin):  # type: ignore[misc]
    access_token: str
    client: _Client
    user: OidcUser
    scope: str
    expires_in: int
    issued_at: float
    code: str
    revoked: bool = False

    def check_client(self, client: _Client) -> bool:
        return self.client.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> OidcUser:
        return self.user

    def get_client(self) -> _Client:
        return self.client


# --------------------------------------------------------------------------- requests (Authlib's framework side)


@dataclass
class _Http:
    """One HTTP request as the handler read it."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: dict[str, list[str]]
    form: dict[str, list[str]]


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, lists: dict[str, list[str]]) -> None:
        self._lists = lists

    @property
    def data(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._lists.items() if v}

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._lists


class _Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, http: _Http) -> None:
        super().__init__(method=http.method, uri=http.url, headers=http.headers)
        self._http = http
        merged = {k: list(v) for k, v in http.query.items()}
        for k, v in http.form.items():
            merged.setdefault(k, []).extend(v)
        # the sign-in form's own fields are not part of the OAuth request: the password goes no further
        merged.pop("username", None)
        merged.pop("password", None)
        self.payload = _Payload(merged)

    @property
    def args(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._http.query.items() if v}

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._http.form.items() if v}


# --------------------------------------------------------------------------- grants


class _CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    server: _Server

    def save_authorization_code(self, code: str, request: _Request) -> None:
        provider = self.server.provider
        data = request.payload.data
        nonce = data.get("nonce")
        provider._codes[code] = _Code(
            code=code, client_id=request.client.client_id, redirect_uri=request.payload.redirect_uri,
            scope=request.scope, user=request.user, nonce=nonce, code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"), auth_time=int(time.time()),
            expires_at=time.monotonic() + provider.code_ttl)
        if nonce:
            provider._nonces.add((request.client.client_id, nonce))

    def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
        provider = self.server.provider
        record = provider._codes.get(code)
        if record is None:
            if code in provider._spent:
                # RFC 6749 §4.1.2: a code used twice may have been stolen; revoke what was issued for it
                for token in provider._tokens.values():
                    if token.code == code:
                        token.revoked = True
            return None
        if record.client_id != client.client_id:
            return None
        if time.monotonic() >= record.expires_at:
            self.delete_authorization_code(record)
            return None
        return record

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        provider = self.server.provider
        provider._codes.pop(authorization_code.code, None)
        provider._spent.add(authorization_code.code)

    def authenticate_user(self, authorization_code: _Code) -> OidcUser:
        return authorization_code.user


class _S256Required(CodeChallenge):  # type: ignore[misc]
    """PKCE for every client, S256 only: Authlib's `required=True` insists only for public clients, and a missing
    method would mean `plain`."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: _CodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE (S256) is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: _CodeGrant, result: Any) -> None:
        try:
            super().validate_code_verifier(grant, result)
        except OAuth2Error:
            # one attempt per code: a wrong verifier spends it, so a stolen code cannot be tried against guesses
            grant.delete_authorization_code(grant.request.authorization_code)
            raise


class _OpenIDCode(OpenIDCode):  # type: ignore[misc]
    def __init__(self, provider: LocalOidc) -> None:
        super().__init__(require_nonce=False)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: _Request) -> bool:
        return (request.payload.client_id, nonce) in self.provider._nonces

    def resolve_client_private_key(self, client: _Client) -> RSAKey:
        assert self.provider._key is not None  # set by start(), before any request is served
        return self.provider._key

    def get_client_algorithm(self, client: _Client) -> str:
        return "RS256"

    def get_encode_header(self, client: _Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": self.provider._kid, "typ": "JWT"}

    def get_client_claims(self, client: _Client) -> dict[str, Any]:
        return {"iss": self.provider.issuer, "aud": client.client_id}  # one audience, a string, as Entra ID sends

    def generate_user_info(self, user: OidcUser, scope: str) -> dict[str, Any]:
        return self.provider.claims_for(user)


class _Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, provider: LocalOidc) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.provider = provider

    def query_client(self, client_id: str) -> _Client | None:
        return self.provider._clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        self.provider._tokens[token["access_token"]] = _Token(
            access_token=token["access_token"], client=request.client, user=request.user,
            scope=token.get("scope", ""), expires_in=int(token.get("expires_in", 0)), issued_at=time.time(),
            code=request.authorization_code.code)

    def create_oauth2_request(self, request: _Http | _Request) -> _Request:
        return request if isinstance(request, _Request) else _Request(request)

    def handle_response(self, status: int, body: Any, headers: Iterable[tuple[str, str]]) -> tuple[int, Any, list]:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass  # no framework signals here


class _TokenValidator(BearerTokenValidator):  # type: ignore[misc]
    def __init__(self, provider: LocalOidc) -> None:
        super().__init__()
        self.provider = provider

    def authenticate_token(self, token_string: str) -> _Token | None:
        return self.provider._tokens.get(token_string)


# --------------------------------------------------------------------------- the provider


class LocalOidc:
    """One OpenID Connect provider on 127.0.0.1 (a free port unless told), served from a background thread.

    `start()` returns the issuer URL; `stop()` stops it; it is a context manager. The signing key is new at every
    start, so ID tokens from an earlier run do not verify against this one.
    """

    def __init__(self, users: Iterable[OidcUser], clients: Iterable[OidcClient], *, host: str = HOST,
                 port: int = 0, roles_claim: str = DEFAULT_ROLES_CLAIM, code_ttl: float = 60.0,
                 token_ttl: int = 3600) -> None:
        self.users = {u.username: u for u in users}
        self._clients = {c.client_id: _Client(c) for c in clients}
        if not self.users or not self._clients:
            raise LocalOidcError("LocalOidc needs at least one user and one client")
        for client in self._clients.values():
            if not client.config.redirect_uris:
                raise LocalOidcError(f"client {client.client_id!r} has no redirect_uris; give its callback URL(s)")
        if roles_claim in ("sub", "iss", "aud", "exp", "iat", "nonce", "name", "email", BCUS_CLAIM):
            raise LocalOidcError(f"roles_claim {roles_claim!r} would overwrite a claim of the ID token")
        self.host = host
        self.port = port
        self.roles_claim = roles_claim
        self.code_ttl = code_ttl
        self.token_ttl = token_ttl
        self._codes: dict[str, _Code] = {}
        self._spent: set[str] = set()
        self._nonces: set[tuple[str, str]] = set()
        self._tokens: dict[str, _Token] = {}
        # the handler threads share the codes and tokens; one lock keeps "single use" true under concurrency
        self._lock = threading.Lock()
        self._kid = ""
        self._key: RSAKey | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._authz = self._build_server()
        self._resource = ResourceProtector()
        self._resource.register_token_validator(_TokenValidator(self))

    def _build_server(self) -> _Server:
        server = _Server(self)
        server.register_token_generator("default", BearerTokenGenerator(
            access_token_generator=lambda **_: secrets.token_urlsafe(32), expires_generator=self.token_ttl))
        server.register_grant(_CodeGrant, [_S256Required(required=True), _OpenIDCode(self)])
        return server

    # -- lifecycle

    @property
    def issuer(self) -> str:
        if self._httpd is None:
            raise LocalOidcError("the local OIDC provider has not been started yet")
        return f"http://{self.host}:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def start(self) -> str:
        """Generate the signing key, bind the port, serve in a daemon thread; return the issuer URL."""
        if self._httpd is not None:
            return self.issuer
        self._kid = secrets.token_hex(8)
        self._key = RSAKey.generate_key(2048, parameters={"kid": self._kid, "use": "sig", "alg": "RS256"})
        handler = type("_BoundHandler", (_Handler,), {"provider": self})
        try:
            self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        except OSError as exc:
            raise LocalOidcError(f"cannot listen on {self.host}:{self.port}: {exc}; choose another --port") from exc
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="localoidc", daemon=True)
        self._thread.start()
        return self.issuer

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> LocalOidc:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what the endpoints say

    def claims_for(self, user: OidcUser) -> dict[str, Any]:
        """The user's claims, in the ID token and from /userinfo alike (the console needs all of them, whatever
        the scope: Entra ID, too, puts roles in the ID token)."""
        return {"sub": user.username, "preferred_username": user.username, "name": user.name,
                "email": user.email, self.roles_claim: list(user.roles), BCUS_CLAIM: list(user.bcus)}

    def metadata(self) -> dict[str, Any]:
        issuer = self.issuer
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks",
            "userinfo_endpoint": f"{issuer}/userinfo",
            "end_session_endpoint": f"{issuer}/logout",
            "scopes_supported": list(SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "preferred_username",
                                 "name", "email", self.roles_claim, BCUS_CLAIM],
        }

    def jwks(self) -> dict[str, Any]:
        assert self._key is not None
        return {"keys": [self._key.as_dict(private=False)]}

    def _check_password(self, username: str, password: str) -> OidcUser | None:
        user = self.users.get(username)
        # compare even for an unknown user, so the answer takes the same time either way
        expected = user.password if user is not None else secrets.token_urlsafe(16)
        ok = secrets.compare_digest(expected.encode(), password.encode())
        return user if ok and user is not None else None


# --------------------------------------------------------------------------- HTTP


_Response = tuple[int, Any, list[tuple[str, str]]]

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - local OpenID Connect provider</title>
<style>body{{font-family:sans-serif;max-width:30em;margin:2em auto;padding:0 1em}}
label,input,button{{display:block;font-size:1.1em;margin:.3em 0}} .error{{color:#b00;border-left:4px solid #b00;
padding-left:.5em}}</style></head>
<body><main>
<h1>{title}</h1>
{body}
</main></body></html>
"""


def _page(status: int, title: str, body: str) -> _Response:
    return status, _PAGE.format(title=html.escape(title), body=body), [("Content-Type", "text/html; charset=utf-8")]


def _sign_in_form(request: _Request, client_id: str, error: str | None = None, username: str = "") -> _Response:
    hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, values in request.payload.datalist.items() for v in values)
    message = f'<p class="error" role="alert" id="error">{html.escape(error)}</p>' if error else ""
    body = (f"<p>Signing in to <strong>{html.escape(client_id)}</strong>.</p>{message}"
            '<form method="post" action="/authorize">'
            f"{hidden}"
            '<label for="username">Username</label>'
            f'<input id="username" name="username" autocomplete="username" required value="{html.escape(username)}">'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" autocomplete="current-password" required>'
            '<button type="submit">Sign in</button></form>')
    return _page(200, "Sign in", body)


def _refused(error: OAuth2Error) -> _Response:
    status, body, headers = error()
    if status == 302:  # the client and its redirect_uri are known: the error goes back to it (RFC 6749 §4.1.2.1)
        return status, body, headers
    # an unknown client or redirect_uri: never redirect there; tell the person instead
    detail = html.escape(f"{error.error}: {error.description or ''}")
    return _page(status, "Sign-in request refused", f'<p class="error" role="alert">{detail}</p>')


class _Handler(BaseHTTPRequestHandler):
    provider: LocalOidc
    server_version = "ppo-alerts-localoidc"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # request lines carry codes and state; tests need no access log

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _read(self) -> _Http:
        parts = urlsplit(self.path)
        form: dict[str, list[str]] = {}
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                raise ValueError("request body too large")
            raw = self.rfile.read(length).decode("utf-8", errors="replace")
            if (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
                form = parse_qs(raw, keep_blank_values=True)
        headers = {k: v for k, v in self.headers.items()}
        return _Http(method=self.command, url=f"{self.provider.issuer}{self.path}", headers=_Headers(headers),
                     query=parse_qs(parts.query, keep_blank_values=True), form=form)

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        routes: dict[tuple[str, str], Callable[[_Http], _Response]] = {
            ("GET", "/.well-known/openid-configuration"): lambda _: (200, self.provider.metadata(), []),
            ("GET", "/jwks"): lambda _: (200, self.provider.jwks(), []),
            ("GET", "/authorize"): self._authorize,
            ("POST", "/authorize"): self._authorize,
            ("POST", "/token"): self._token,
            ("GET", "/userinfo"): self._userinfo,
            ("POST", "/userinfo"): self._userinfo,
            ("GET", "/logout"): self._logout,
            ("POST", "/logout"): self._logout,
        }
        route = routes.get((self.command, path))
        try:
            if route is None:
                known = any(p == path for _, p in routes)
                response: _Response = (405 if known else 404, {"error": "not found"}, [])
            else:
                http = self._read()
                with self.provider._lock:
                    response = route(http)
        except ValueError as exc:
            response = (400, {"error": "invalid_request", "error_description": str(exc)}, [])
        self._send(*response)

    def _authorize(self, http: _Http) -> _Response:
        provider = self.provider
        try:
            grant = provider._authz.get_consent_grant(http)
        except OAuth2Error as error:
            return _refused(error)
        request: _Request = grant.request
        if http.method == "GET":
            return _sign_in_form(request, request.payload.client_id)
        username = (http.form.get("username") or [""])[0]
        user = provider._check_password(username, (http.form.get("password") or [""])[0])
        if user is None:
            return _sign_in_form(request, request.payload.client_id, "Incorrect username or password.", username)
        status, body, headers = provider._authz.create_authorization_response(request=request, grant_user=user,
                                                                             grant=grant)
        if status != 302:
            return _page(status, "Sign-in request refused", f'<p class="error" role="alert">'
                         f'{html.escape(str(body.get("error", "error")) if isinstance(body, dict) else "")}</p>')
        return status, body, headers

    def _token(self, http: _Http) -> _Response:
        return self.provider._authz.create_token_response(http)  # type: ignore[no-any-return]

    def _userinfo(self, http: _Http) -> _Response:
        try:
            token = self.provider._resource.validate_request(["openid"], _Request(http))
        except OAuth2Error as error:
            status, body, headers = error()
            return status, body, list(headers)
        return 200, self.provider.claims_for(token.get_user()), []

    def _logout(self, http: _Http) -> _Response:
        """RP-initiated logout. The provider keeps no session, so there is nothing to end here; it only sends the
        browser back, and only to a post_logout_redirect_uri registered for the client the request names (by
        client_id, or by the audience of an ID token this provider signed)."""
        data = _Request(http).payload.data
        client_id = data.get("client_id")
        if hint := data.get("id_token_hint"):
            try:
                assert self.provider._key is not None
                aud = jwt.decode(hint, self.provider._key, algorithms=["RS256"]).claims.get("aud")
            except (JoseError, ValueError):
                return _page(400, "Sign-out refused", '<p class="error" role="alert">invalid id_token_hint</p>')
            if client_id and aud != client_id:
                return _page(400, "Sign-out refused", '<p class="error" role="alert">client_id does not match the '
                             "id_token_hint</p>")
            client_id = aud if isinstance(aud, str) else client_id
        target = data.get("post_logout_redirect_uri")
        client = self.provider._clients.get(client_id or "")
        if target:
            if client is None or target not in client.config.post_logout_redirect_uris:
                return _page(400, "Sign-out refused", '<p class="error" role="alert">post_logout_redirect_uri is '
                             "not registered for this client</p>")
            state = data.get("state")
            return 302, "", [("Location", add_params_to_uri(target, [("state", state)]) if state else target)]
        return _page(200, "Signed out", "<p>You are signed out.</p>")

    def _send(self, status: int, body: Any, headers: list[tuple[str, str]]) -> None:
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            if not any(k.lower() == "content-type" for k, _ in headers):
                headers = [*headers, ("Content-Type", "application/json")]
        else:
            data = str(body or "").encode()
        self.send_response(status)
        names = {k.lower() for k, _ in headers}
        for key, value in [*headers, *((k, v) for k, v in _SECURITY_HEADERS if k.lower() not in names)]:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Headers(dict[str, str]):
    """Header names are case-insensitive; Authlib asks for `Authorization`, clients may send `authorization`."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


# --------------------------------------------------------------------------- configuration file and CLI


class FormFields(HTMLParser):
    """A page's form as a browser would submit it: its action and every named input's value. For scripts and tests
    that sign in through the provider's page without a browser (the bench, the console's tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.action = a.get("action") or ""
        elif tag == "input" and a.get("name"):
            self.fields[str(a["name"])] = a.get("value") or ""


def form_fields(page: str) -> FormFields:
    form = FormFields()
    form.feed(page)
    return form


def load_config(path: str | Path) -> tuple[list[OidcUser], list[OidcClient]]:
    """Read `{"users": [{username, password, name, email, roles, bcus}], "clients": [{client_id, client_secret,
    redirect_uris, post_logout_redirect_uris (optional)}]}`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        users = [OidcUser(u["username"], u["password"], u["name"], u["email"], tuple(u.get("roles", ())),
                          tuple(u.get("bcus", ()))) for u in data["users"]]
        clients = [OidcClient(c["client_id"], c["client_secret"], tuple(c["redirect_uris"]),
                              tuple(c.get("post_logout_redirect_uris", ()))) for c in data["clients"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LocalOidcError(f"{path}: cannot read users and clients ({exc!r}); expected "
                             '{"users": [{"username", "password", "name", "email", "roles", "bcus"}], '
                             '"clients": [{"client_id", "client_secret", "redirect_uris"}]}') from exc
    return users, clients


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "python -m ppo_alerts.localoidc",
                                     description="Local OpenID Connect provider (Authlib's server side) on 127.0.0.1.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="serve in the foreground and print the issuer URL; Ctrl-C stops it")
    p.add_argument("--users", required=True, help="JSON file of users and clients (see load_config)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--roles-claim", default=DEFAULT_ROLES_CLAIM)
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        users, clients = load_config(args.users)
        provider = LocalOidc(users, clients, port=args.port, roles_claim=args.roles_claim)
        print(provider.start(), flush=True)
    except LocalOidcError as exc:
        print(f"localoidc: error: {exc}", file=sys.stderr)
        return 2
    print(f"localoidc: {len(users)} users, {len(clients)} clients from {Path(args.users).resolve()}; "
          f"discovery {provider.discovery_url}", file=sys.stderr)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        provider.stop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
