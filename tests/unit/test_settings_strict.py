"""Security settings fail closed (issue 14, item 8): unknown PPO_* names, token keys, scopes, anonymous intake;
every configuration error is one line naming the environment variable, and a service exits 2 without a trace."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import NOT_SETTINGS, Settings, load_settings, settings_problems

ROOT = Path(__file__).resolve().parents[2]


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("PPO_"):
            monkeypatch.delenv(key)


def problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return settings_problems(caught.value)


def test_a_misspelt_name_is_refused_with_the_nearest_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(monkeypatch, PPO_INTAKE_TOKEN_SCOPE='{"HMCTS": ["court."]}')
    assert len(lines) == 1
    assert lines[0].startswith("PPO_INTAKE_TOKEN_SCOPE: not a setting")
    assert "did you mean PPO_INTAKE_TOKEN_SCOPES?" in lines[0]


def test_a_lower_case_name_is_checked_too_and_far_names_get_a_pointer(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(monkeypatch, ppo_smtp_alow_plaintext="true", PPO_ZZZZZZZZZZ="1")
    assert any("ppo_smtp_alow_plaintext" in line and "PPO_SMTP_ALLOW_PLAINTEXT" in line for line in lines)
    assert any(line.startswith("PPO_ZZZZZZZZZZ: not a setting") and ".env.example" in line for line in lines)


def test_tooling_variables_are_not_settings_and_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NOT_SETTINGS:
        monkeypatch.setenv(name, "1")
    Settings()


def test_token_keys_must_be_sha256_hex_and_are_never_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in ("PPO_INTAKE_TOKENS", "PPO_INTAKE_COORDINATOR_TOKENS", "PPO_OPERATOR_TOKENS"):
        monkeypatch.delenv("PPO_INTAKE_TOKENS", raising=False)
        lines = problems(monkeypatch, **{field: '{"my-secret-token": "HMCTS"}'})
        assert len(lines) == 1 and lines[0].startswith(f"{field}: ")
        assert "sha256 hex of the token" in lines[0] and "printf %s TOKEN | sha256sum" in lines[0]
        assert "my-secret-token" not in lines[0]
        monkeypatch.delenv(field)
    upper = sha("court").upper()
    assert problems(monkeypatch, PPO_INTAKE_TOKENS=f'{{"{upper}": "HMCTS"}}')[0].startswith("PPO_INTAKE_TOKENS: ")
    monkeypatch.setenv("PPO_INTAKE_TOKENS", f'{{"{sha("court")}": "HMCTS"}}')
    assert Settings().intake_tokens == {sha("court"): "HMCTS"}


def test_a_scope_must_name_an_agency_that_has_a_token() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(intake_tokens={sha("court"): "HMCTS"}, intake_token_scopes={"HMTCS": ["court."]})
    (line,) = settings_problems(caught.value)
    assert line.startswith("PPO_INTAKE_TOKEN_SCOPES: 'HMTCS' has no token in PPO_INTAKE_TOKENS")
    Settings(intake_tokens={sha("court"): "HMCTS"}, intake_token_scopes={"HMCTS": ["court."]})


def test_anonymous_intake_only_on_a_loopback_address(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(monkeypatch, PPO_INTAKE_ALLOW_ANONYMOUS="true", PPO_HTTP_HOST="0.0.0.0")
    assert len(lines) == 1 and lines[0].startswith("PPO_INTAKE_ALLOW_ANONYMOUS: ")
    assert "PPO_HTTP_HOST=0.0.0.0 is not a loopback address" in lines[0]
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        monkeypatch.setenv("PPO_HTTP_HOST", host)
        assert Settings().intake_allow_anonymous is True
    monkeypatch.setenv("PPO_HTTP_HOST", "0.0.0.0")
    monkeypatch.setenv("PPO_INTAKE_ALLOW_ANONYMOUS", "false")
    Settings()


def test_tokens_not_json_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(monkeypatch, PPO_INTAKE_TOKENS="abc123=HMCTS")
    assert len(lines) == 1
    assert lines[0].startswith("PPO_INTAKE_TOKENS: not JSON") and '"<sha256 hex of the token>"' in lines[0]
    assert "abc123" not in lines[0]
    monkeypatch.delenv("PPO_INTAKE_TOKENS")
    assert problems(monkeypatch, PPO_INTAKE_TOKEN_SCOPES="{HMCTS: court.}")[0].startswith(
        "PPO_INTAKE_TOKEN_SCOPES: not JSON")


def test_smtp_plaintext_without_its_flag_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    (line,) = problems(monkeypatch, PPO_SMTP_TLS_MODE="plain")
    assert line.startswith("PPO_SMTP_ALLOW_PLAINTEXT: PPO_SMTP_TLS_MODE=plain sends names of offenders unencrypted")
    assert "set PPO_SMTP_ALLOW_PLAINTEXT=true" in line
    monkeypatch.setenv("PPO_SMTP_ALLOW_PLAINTEXT", "true")
    assert Settings().smtp_tls_mode == "plain"
    (line,) = problems(monkeypatch, PPO_SMTP_USERNAME="alerts")
    assert line.startswith("PPO_SMTP_PASSWORD: PPO_SMTP_USERNAME and PPO_SMTP_PASSWORD go together")


def test_every_problem_is_reported_on_its_own_line_by_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = problems(monkeypatch, PPO_INTAKE_PORT="eighty", PPO_SMTP_TLS_MODE="tls")
    assert [line.split(":", 1)[0] for line in lines] == ["PPO_INTAKE_PORT", "PPO_SMTP_TLS_MODE"]
    assert all("\n" not in line and "allow_plaintext" not in line for line in lines)


def test_load_settings_prints_one_line_per_problem_and_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PPO_SMTP_TLS_MODE", "plain")
    with pytest.raises(SystemExit) as caught:
        load_settings()
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "ppo-alerts: PPO_SMTP_ALLOW_PLAINTEXT: PPO_SMTP_TLS_MODE=plain sends names of offenders unencrypted: set "
        "PPO_SMTP_ALLOW_PLAINTEXT=true to accept that (a relay on the same host or a test server only), or set "
        "PPO_SMTP_TLS_MODE to starttls or implicit"]


@pytest.mark.parametrize(("command", "env", "variable"), [
    (["run", "intake"], {"PPO_INTAKE_TOKENS": "not json"}, "PPO_INTAKE_TOKENS"),
    (["run", "notifier"], {"PPO_SMTP_TLS_MODE": "plain"}, "PPO_SMTP_ALLOW_PLAINTEXT"),
    (["run", "all"], {"PPO_INTAKE_TOKEN_SCOPE": "{}"}, "PPO_INTAKE_TOKEN_SCOPE"),
    (["scheduler", "rebuild"], {"PPO_INTAKE_ALLOW_ANONYMOUS": "true", "PPO_HTTP_HOST": "0.0.0.0"},
     "PPO_INTAKE_ALLOW_ANONYMOUS"),
])
def test_the_cli_exits_2_with_one_line_and_no_traceback(command: list[str], env: dict[str, str],
                                                        variable: str) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("PPO_")}
    environ.update(env, PPO_KAFKA_BOOTSTRAP="127.0.0.1:1")  # never reached: settings are checked first
    done = subprocess.run([sys.executable, "-m", "ppo_alerts.cli", *command], env=environ, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"ppo-alerts: {variable}: ")
