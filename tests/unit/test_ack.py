"""Signed acknowledgement links (shared/ack.py): pure signing and checking, the key, the settings."""

from __future__ import annotations

import logging
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from shared.ack import (
    LINK_PATH,
    AckLinks,
    AckSecretMissing,
    ack_secret,
    base_url_problem,
    expiry,
    link,
    signature,
    verify,
)
from shared.clock import FixedClock
from shared.settings import Settings

KEY = b"k" * 40
OTHER_KEY = b"x" * 40
OID = "A1-0123456789abcdef01234567"
WHO = "leeds.ppo@westyorkshire.police.uk"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
BASE = "https://notices.example.gov.uk"


def params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def a_link(**overrides: object) -> dict[str, str]:
    p = params(link(BASE, KEY, OID, WHO, expiry(NOW, timedelta(days=30))))
    p.update({k: str(v) for k, v in overrides.items()})
    return p


def test_a_link_round_trips_and_names_the_obligation_and_recipient():
    url = link(BASE, KEY, OID, WHO, expiry(NOW, timedelta(days=30)))
    assert url.startswith(BASE + LINK_PATH + "?")
    check = verify(KEY, params(url), NOW + timedelta(days=29))
    assert check.ok and check.http_status == 200
    assert (check.obligation_id, check.recipient) == (OID, WHO)
    assert check.expires_at == NOW + timedelta(days=30)


def test_recipient_is_compared_case_insensitively():
    url = link(BASE, KEY, OID, "Leeds.PPO@WestYorkshire.Police.UK", expiry(NOW, timedelta(days=1)))
    assert verify(KEY, params(url), NOW).recipient == WHO
    assert verify(KEY, a_link(r=WHO.upper()), NOW).ok


@pytest.mark.parametrize("change", [
    {"o": "A1-0123456789abcdef01234568"},  # another obligation
    {"r": "leeds.duty@westyorkshire.police.uk"},  # another recipient
    {"e": str(int((NOW + timedelta(days=3650)).timestamp()))},  # a later expiry
])
def test_a_changed_link_is_refused_403(change: dict[str, str]):
    check = verify(KEY, a_link(**change), NOW)
    assert check.verdict == "bad-signature" and check.http_status == 403
    assert check.obligation_id == "" and check.recipient == ""  # nothing from a forged link is trusted


def test_a_link_signed_with_another_key_is_refused():
    forged = params(link(BASE, OTHER_KEY, OID, WHO, expiry(NOW, timedelta(days=30))))
    assert verify(KEY, forged, NOW).verdict == "bad-signature"


def test_an_expired_link_is_refused_410():
    check = verify(KEY, a_link(), NOW + timedelta(days=30))
    assert check.verdict == "expired" and check.http_status == 410


@pytest.mark.parametrize("broken", [
    {}, {"o": ""}, {"r": "not-an-address"}, {"e": "soon"}, {"s": "ABC"}, {"s": "g" * 64}, {"o": "../etc/passwd"},
])
def test_a_malformed_link_is_refused_400(broken: dict[str, str]):
    p = a_link(**broken) if broken else {}
    assert verify(KEY, p, NOW).verdict == "malformed"


def test_signature_is_hmac_sha256_hex_over_the_four_parts():
    s = signature(KEY, OID, WHO, 1_800_000_000)
    assert len(s) == 64 and set(s) <= set("0123456789abcdef")
    assert s == signature(KEY, OID, WHO.upper(), 1_800_000_000)
    assert s != signature(KEY, OID, WHO, 1_800_000_001)


def test_a_court_recipients_link_never_says_ppo():
    from services.notifier.render import COURT_FORBIDDEN

    for i in range(300):  # hex signatures and ids cannot spell it; try many
        url = link(BASE, KEY, f"B1-{i:024x}", "listing.office@court.example.gov.uk", 1_800_000_000 + i)
        assert not COURT_FORBIDDEN.search(url), url


@pytest.mark.parametrize("url", ["https://ppo-alerts.example.gov.uk", "https://example.gov.uk/ppo",
                                 "https://prolific.example.gov.uk"])
def test_a_base_url_that_says_ppo_is_refused(url: str):
    assert "PPO" in (base_url_problem(url) or "")
    assert base_url_problem(url, neutral=False) is None
    with pytest.raises(ValidationError, match="PPO_ACK_BASE_URL|says PPO"):
        Settings(ack_base_url=url)


@pytest.mark.parametrize("url", ["ftp://example.gov.uk", "notices.example.gov.uk", "https://x.gov.uk/?a=1"])
def test_a_base_url_that_is_not_http_is_refused(url: str):
    assert base_url_problem(url) is not None


def test_links_built_for_the_pipeline_expire_after_the_ttl():
    clock = FixedClock(NOW)
    build = AckLinks(BASE + "/", KEY, timedelta(days=30), clock)
    url = build(OID, WHO)
    assert url.startswith(BASE + "/ack?")
    assert verify(KEY, params(url), NOW + timedelta(days=30) - timedelta(seconds=1)).ok
    assert verify(KEY, params(url), NOW + timedelta(days=30)).verdict == "expired"


def test_ack_secret_from_settings():
    assert ack_secret(Settings(ack_secret="s" * 32)) == b"s" * 32
    with pytest.raises(ValidationError):
        Settings(ack_secret="too short")


def test_ack_secret_generated_once_for_local_use_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    settings = Settings(state_dir=tmp_path / "state", public_base_url="http://127.0.0.1:8080")
    with caplog.at_level(logging.WARNING, logger="ppo.ack"):
        first = ack_secret(settings)
    assert len(first) >= 32 and "PPO_ACK_SECRET is not set" in caplog.text
    assert ack_secret(settings) == first  # the services of one checkout share it; links survive restarts
    key_file = tmp_path / "state" / "ack-secret"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_ack_secret_required_outside_local_use(tmp_path: Path):
    settings = Settings(state_dir=tmp_path, public_base_url="https://alerts.example.gov.uk")
    with pytest.raises(AckSecretMissing, match="PPO_ACK_SECRET"):
        ack_secret(settings)
    assert not (tmp_path / "ack-secret").exists()
    local_links_remote_base = Settings(state_dir=tmp_path, ack_base_url="https://notices.example.gov.uk")
    with pytest.raises(AckSecretMissing):
        ack_secret(local_links_remote_base)
