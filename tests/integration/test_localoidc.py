"""The project's own OpenID Connect provider, driven by Authlib's client as the console will drive it: discovery,
the sign-in form, the code exchange with PKCE, and an ID token that verifies against /jwks with the claims the
console reads; and the refusals: a wrong password, a code used twice, a wrong verifier, an unknown redirect URI."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet, RSAKey

from ppo_alerts.localoidc import FormFields, LocalOidc, LocalOidcError, OidcClient, OidcUser, form_fields, load_config

CALLBACK = "http://127.0.0.1:8090/auth/callback"
SIGNED_OUT = "http://127.0.0.1:8090/signed-out"
ANN = OidcUser("ann", "correct horse", "Ann Smith", "ann.smith@example.test", roles=["bcu", "coordinator"],
               bcus=["13-LD", "13-LS"])


@pytest.fixture(scope="module")
def oidc() -> Iterator[LocalOidc]:
    with LocalOidc(users=[ANN, OidcUser("olu", "op pw", "Olu Operator", "olu@example.test", roles=["operator"])],
                   clients=[OidcClient("console", "console-secret", [CALLBACK], [SIGNED_OUT])]) as provider:
        yield provider


@pytest.fixture(scope="module")
def metadata(oidc: LocalOidc) -> dict:
    return httpx.get(oidc.discovery_url).raise_for_status().json()


_Form, _form = FormFields, form_fields  # the console's tests import these names


def _client(auth_method: str = "client_secret_basic", redirect_uri: str = CALLBACK) -> OAuth2Client:
    return OAuth2Client("console", "console-secret", scope="openid profile email", redirect_uri=redirect_uri,
                        code_challenge_method="S256", token_endpoint_auth_method=auth_method)


def _sign_in(metadata: dict, client: OAuth2Client, password: str = "correct horse",
             username: str = "ann") -> tuple[httpx.Response, str, str, str]:
    """Open the authorization URL, post the form; return (response, code_verifier, nonce, state)."""
    verifier, nonce = generate_token(48), generate_token(20)
    url, state = client.create_authorization_url(metadata["authorization_endpoint"], code_verifier=verifier,
                                                 nonce=nonce)
    page = httpx.get(url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    form = _form(page.text)
    assert form.action == "/authorize" and form.fields["nonce"] == nonce
    fields = {**form.fields, "username": username, "password": password}
    answer = httpx.post(str(page.url.join(form.action)), data=fields, follow_redirects=False)
    return answer, verifier, nonce, state


def _code(answer: httpx.Response) -> str:
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return parse_qs(urlsplit(location).query)["code"][0]


def test_discovery_document_is_valid_openid_provider_metadata(oidc: LocalOidc, metadata: dict):
    OpenIDProviderMetadata(metadata).validate()  # Authlib's own check of the required fields and values
    assert metadata["issuer"] == oidc.issuer
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"):
        assert metadata[endpoint].startswith(oidc.issuer + "/")
    keys = httpx.get(metadata["jwks_uri"]).raise_for_status().json()["keys"]
    assert [(k["kty"], k["alg"], k["use"]) for k in keys] == [("RSA", "RS256", "sig")]
    assert "d" not in keys[0] and "p" not in keys[0]  # the public half only


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_authorization_code_with_pkce_gives_a_signed_id_token_with_the_console_claims(
        oidc: LocalOidc, metadata: dict, auth_method: str):
    client = _client(auth_method)
    answer, verifier, nonce, state = _sign_in(metadata, client)
    location = answer.headers["location"]
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    token = client.fetch_token(metadata["token_endpoint"], authorization_response=location, code_verifier=verifier,
                               state=state)
    assert token["token_type"].lower() == "bearer" and "refresh_token" not in token

    jwks = KeySet.import_key_set(httpx.get(metadata["jwks_uri"]).json())
    id_token = jwt.decode(token["id_token"], jwks, algorithms=["RS256"])
    assert id_token.header["kid"] == jwks.keys[0].kid
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": oidc.issuer},
                          aud={"essential": True, "value": "console"},
                          nonce={"essential": True, "value": nonce},
                          sub={"essential": True, "value": "ann"},
                          exp={"essential": True}, iat={"essential": True}).validate(id_token.claims)
    claims = id_token.claims
    assert (claims["name"], claims["email"]) == ("Ann Smith", "ann.smith@example.test")
    assert claims["ppo_roles"] == ["bcu", "coordinator"] and claims["ppo_bcus"] == ["13-LD", "13-LS"]
    assert claims["exp"] > time.time() and claims["at_hash"]

    # a key that is not the provider's does not verify it: the signature is really checked
    with pytest.raises(BadSignatureError):
        jwt.decode(token["id_token"], RSAKey.generate_key(2048), algorithms=["RS256"])

    info = httpx.get(metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 200
    assert info.json()["sub"] == "ann" and info.json()["ppo_bcus"] == ["13-LD", "13-LS"]
    assert httpx.get(metadata["userinfo_endpoint"], headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_wrong_password_shows_the_form_again_with_an_error_and_no_code(metadata: dict):
    for username, password in (("ann", "wrong"), ("nobody", "correct horse")):
        answer, *_ = _sign_in(metadata, _client(), password=password, username=username)
        assert answer.status_code == 200 and "location" not in answer.headers
        assert "Incorrect username or password." in answer.text
        again = _form(answer.text)
        assert again.fields["username"] == username and again.fields["password"] == ""  # the password not echoed
        assert "code_challenge" in again.fields and "correct horse" not in answer.text


def test_a_code_works_once_and_its_reuse_revokes_the_token_issued_for_it(metadata: dict):
    client = _client("client_secret_post")
    answer, verifier, _, state = _sign_in(metadata, client)
    code = _code(answer)
    token = client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=verifier,
                               grant_type="authorization_code")
    with pytest.raises(OAuthError) as refused:
        client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=verifier,
                           grant_type="authorization_code")
    assert refused.value.error == "invalid_grant"
    info = httpx.get(metadata["userinfo_endpoint"], headers={"Authorization": f"Bearer {token['access_token']}"})
    assert info.status_code == 401


def test_a_wrong_code_verifier_is_refused_and_spends_the_code(metadata: dict):
    client = _client()
    answer, verifier, _, _ = _sign_in(metadata, client)
    code = _code(answer)
    with pytest.raises(OAuthError) as refused:
        client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=generate_token(48),
                           grant_type="authorization_code")
    assert refused.value.error == "invalid_grant"
    with pytest.raises(OAuthError):
        client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=verifier,
                           grant_type="authorization_code")


def test_a_token_request_without_the_client_secret_or_the_verifier_is_refused(metadata: dict):
    answer, verifier, _, _ = _sign_in(metadata, _client())
    code = _code(answer)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK}
    no_secret = httpx.post(metadata["token_endpoint"], data={**form, "client_id": "console",
                                                             "code_verifier": verifier})
    assert no_secret.status_code in (400, 401) and no_secret.json()["error"] == "invalid_client"
    no_verifier = httpx.post(metadata["token_endpoint"], data=form, auth=("console", "console-secret"))
    assert no_verifier.status_code == 400 and no_verifier.json()["error"] == "invalid_request"


def test_an_unknown_redirect_uri_or_a_request_without_pkce_is_refused(metadata: dict):
    client = _client(redirect_uri="http://127.0.0.1:9999/evil")
    url, _ = client.create_authorization_url(metadata["authorization_endpoint"], code_verifier=generate_token(48),
                                             nonce="n")
    page = httpx.get(url, follow_redirects=False)
    assert page.status_code == 400 and "location" not in page.headers  # never sent to an unregistered URI
    assert "invalid_request" in page.text
    # the form's hidden fields are the request: posting a changed redirect_uri is refused the same way
    posted = httpx.post(metadata["authorization_endpoint"], data={**parse_qs(urlsplit(url).query),
                                                                 "username": "ann", "password": "correct horse"})
    assert posted.status_code == 400 and "location" not in posted.headers

    plain = OAuth2Client("console", "console-secret", scope="openid", redirect_uri=CALLBACK)  # no PKCE
    url, _ = plain.create_authorization_url(metadata["authorization_endpoint"])
    answer = httpx.get(url, follow_redirects=False)
    assert answer.status_code == 302  # the client is known: the error goes back to it
    assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["invalid_request"]


def test_a_code_expires(tmp_path):
    users = tmp_path / "users.json"
    users.write_text('{"users": [{"username": "ann", "password": "correct horse", "name": "Ann", '
                     '"email": "a@example.test", "roles": ["bcu"], "bcus": ["13-LD"]}], '
                     f'"clients": [{{"client_id": "console", "client_secret": "console-secret", '
                     f'"redirect_uris": ["{CALLBACK}"]}}]}}')
    with LocalOidc(*load_config(users), code_ttl=0.3) as short:
        metadata = short.metadata()
        client = _client()
        answer, verifier, _, _ = _sign_in(metadata, client)
        code = _code(answer)
        time.sleep(0.4)
        with pytest.raises(OAuthError) as refused:
            client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=verifier,
                               grant_type="authorization_code")
        assert refused.value.error == "invalid_grant"


def test_configuration_mistakes_are_named():
    with pytest.raises(LocalOidcError, match="redirect_uris"):
        LocalOidc(users=[ANN], clients=[OidcClient("console", "s", [])])
    with pytest.raises(LocalOidcError, match="overwrite"):
        LocalOidc(users=[ANN], clients=[OidcClient("console", "s", [CALLBACK])], roles_claim="sub")


def test_authlibs_starlette_client_signs_in_as_the_console_will(oidc: LocalOidc):
    """The console's own path: Authlib's Starlette integration reads the discovery document, redirects with PKCE and
    a nonce, exchanges the code and validates the ID token (signature from /jwks, iss, aud, nonce) itself."""
    from authlib.integrations.starlette_client import OAuth
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
    from starlette.testclient import TestClient

    oauth = OAuth()
    oauth.register("ppo", client_id="console", client_secret="console-secret", server_metadata_url=oidc.discovery_url,
                   client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"})

    async def login(request: Request) -> Response:
        return await oauth.ppo.authorize_redirect(request, CALLBACK)

    async def callback(request: Request) -> Response:
        token = await oauth.ppo.authorize_access_token(request)
        return JSONResponse(dict(token["userinfo"]))

    app = Starlette(routes=[Route("/login", login), Route("/auth/callback", callback)],
                    middleware=[Middleware(SessionMiddleware, secret_key=generate_token(32))])
    with TestClient(app, base_url="http://127.0.0.1:8090") as console:
        to_provider = console.get("/login", follow_redirects=False)
        assert to_provider.status_code in (302, 307)
        page = httpx.get(to_provider.headers["location"])
        form = _form(page.text)
        assert form.fields["code_challenge_method"] == "S256" and form.fields["nonce"]
        back = httpx.post(str(page.url.join(form.action)),
                          data={**form.fields, "username": "olu", "password": "op pw"})
        assert back.status_code == 302 and back.headers["location"].startswith(CALLBACK)
        signed_in = console.get(back.headers["location"])
    assert signed_in.status_code == 200, signed_in.text
    claims = signed_in.json()
    assert (claims["sub"], claims["iss"], claims["aud"]) == ("olu", oidc.issuer, "console")
    assert claims["ppo_roles"] == ["operator"] and claims["ppo_bcus"] == []


def test_logout_returns_only_to_a_registered_uri_for_the_client_the_id_token_names(metadata: dict):
    client = _client()
    answer, verifier, _, state = _sign_in(metadata, client)
    token = client.fetch_token(metadata["token_endpoint"], authorization_response=answer.headers["location"],
                               code_verifier=verifier, state=state)
    logout = metadata["end_session_endpoint"]
    back = httpx.get(logout, params={"id_token_hint": token["id_token"], "post_logout_redirect_uri": SIGNED_OUT,
                                     "state": "s1"})
    assert back.status_code == 302 and back.headers["location"] == SIGNED_OUT + "?state=s1"
    elsewhere = httpx.get(logout, params={"client_id": "console", "post_logout_redirect_uri": CALLBACK + "x"})
    assert elsewhere.status_code == 400 and "location" not in elsewhere.headers
    forged = jwt.encode({"alg": "RS256"}, {"aud": "console"}, RSAKey.generate_key(2048))
    refused = httpx.get(logout, params={"id_token_hint": forged, "post_logout_redirect_uri": SIGNED_OUT})
    assert refused.status_code == 400 and "location" not in refused.headers
    assert httpx.get(logout).status_code == 200  # no redirect asked for: a plain "signed out" page
