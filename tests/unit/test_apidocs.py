"""docs/api: the AsyncAPI documents of the services and the OpenAPI document of HTTP intake are what the code
says (`python -m ppo_alerts.apidocs --check`), and the OpenAPI paths are exactly the routes intake serves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from ppo_alerts import apidocs

API = Path(__file__).resolve().parents[2] / "docs" / "api"


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((API / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_committed_documents_are_up_to_date(capsys: pytest.CaptureFixture[str]):
    assert apidocs.main(["--check"]) == 0, capsys.readouterr().err
    # it silences logging while it builds the services, and gives it back: a later test (or caller) in the same
    # process must still see INFO records
    assert logging.root.manager.disable == logging.NOTSET


def test_check_fails_on_a_stale_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert apidocs.main(["--dir", str(tmp_path)]) == 0
    (tmp_path / "openapi-intake.yaml").write_text("openapi: 3.1.0\n", encoding="utf-8")
    assert apidocs.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "openapi-intake.yaml" in capsys.readouterr().err


def test_openapi_paths_are_the_routes_intake_serves():
    document = _load("openapi-intake.yaml")
    documented = sorted((path, method) for path, ops in document["paths"].items() for method in ops)
    assert documented == apidocs.intake_routes()
    assert ("/v1/events", "post") in documented
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            assert not op.get("x-undocumented"), f"{method.upper()} {path}: add it to apidocs.OPERATIONS"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref" and isinstance(v, str)] + [
            r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("name", sorted(p.name for p in API.glob("*.yaml")))
def test_every_reference_resolves(name: str):
    document = _load(name)
    for ref in _refs(document):
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"{name}: {ref} does not resolve"
            node = node[part]


def _operations(service: str) -> set[tuple[str, str, str | None]]:
    document = _load(f"asyncapi-{service}.yaml")
    assert document["asyncapi"].startswith("3.")
    out = set()
    for op in document["operations"].values():
        channel = document["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]
        group = op.get("bindings", {}).get("kafka", {}).get("groupId", {}).get("enum", [None])[0]
        out.add((op["action"], channel["address"], group))
    return out


def test_asyncapi_documents_say_who_consumes_and_publishes_what():
    rules = _operations("rules")
    # one person, one partition: the resolve stage re-keys ppo.events, the rule book reads the re-keyed topic
    assert {("receive", "ppo.events", "ppo-rules-resolve"), ("send", "ppo.events.by-person", None),
            ("receive", "ppo.events.by-person", "ppo-rules")} <= rules
    assert {("send", "ppo.obligations", None), ("send", "ppo.notifications", None),
            ("send", "ppo.dead-letter", None)} <= rules
    assert ("receive", "ppo.obligations", "ppo-scheduler") in _operations("scheduler")
    assert ("receive", "ppo.notifications", "ppo-notifier") in _operations("notifier")
    assert ("send", "ppo.events", None) in _operations("intake")
    schemas = _load("asyncapi-rules.yaml")["components"]["schemas"]
    assert {"CanonicalEvent", "Obligation", "NotificationRequest"} <= set(schemas)


def test_source_analysis_finds_loop_subscriptions_and_publishes():
    assert ("obligations", "ppo-scheduler") in apidocs.subscribed_topics("scheduler")
    assert {("events", "ppo-rules-resolve"), ("events_by_person", "ppo-rules")} <= \
        set(apidocs.subscribed_topics("rules"))
    assert {"obligations", "notifications", "dead_letter"} <= set(apidocs.published_topics("rules"))
