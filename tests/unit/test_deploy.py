"""Static checks of the deployment files (no Docker engine needed): Dockerfile, docker-compose.yml,
.env.example, Prometheus config and alerts, the Grafana dashboard and the sample data.

Settings drift is the main risk: pydantic-settings ignores a misspelt PPO_* environment variable
(extra="forbid" applies to keyword arguments, not to the environment), so every PPO_* name written in these
files is checked against `Settings.model_fields` here, and each service's compose environment must build a
valid Settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import shared.metrics
from shared.directory import Directory
from shared.events import parse_event
from shared.register import Register
from shared.settings import Settings
from shared.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
SAMPLE = ROOT / "deploy" / "sample"

APP_SERVICES = ("intake", "rules", "scheduler", "notifier")
ALL_SERVICES = (*APP_SERVICES, "kafka", "mailpit", "prometheus", "grafana")
ROLES = ("ppo", "warrants", "probation", "yot", "coordinator", "escalation")
FIELDS = {f"PPO_{name.upper()}": name for name in Settings.model_fields}


# --- helpers -------------------------------------------------------------------------------------------

def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _interpolate(value: Any) -> str:
    """Compose variable interpolation, resolved to the defaults written in the file (`${X:-default}`)."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", text)
    return text.replace("$$", "$")


def _env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): _interpolate(v) for k, v in raw.items() if v is not None}


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        if buffer.strip():
            word, _, rest = buffer.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buffer = ""
    return out


def _dockerfile_env() -> dict[str, str]:
    """ENV of the final stage (the runtime image)."""
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    env: dict[str, str] = {}
    for word, args in instructions[last_from:]:
        if word == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def _exec_form(word: str) -> list[str]:
    args = [a for w, a in _dockerfile_instructions() if w == word][-1]
    if word == "HEALTHCHECK":
        args = args[args.index("CMD") + 3:].strip()
    value = json.loads(args)  # exec form must be valid JSON, or Docker silently falls back to a shell
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def _container_env(name: str) -> dict[str, str]:
    """What the service's process sees: the image's PPO_* ENV, overridden by compose."""
    service = _compose()["services"][name]
    env = {k: v for k, v in _dockerfile_env().items() if k.startswith("PPO_")}
    env.update(_env(service))
    return env


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("PPO_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def _host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The file on this machine that a bind mount puts at `container_path` in the container."""
    target = PurePosixPath(container_path)
    for volume in service.get("volumes") or []:
        parts = str(volume).split(":")
        if len(parts) < 2 or not parts[0].startswith((".", "/")):
            continue
        mounted = PurePosixPath(parts[1])
        if target == mounted or mounted in target.parents:
            return (ROOT / parts[0] / target.relative_to(mounted)).resolve()
    return None


def _metric_objects() -> list[MetricWrapperBase]:
    """Every metric the services export: shared/metrics.py, the notifier's own, and FastStream's middleware's."""
    from faststream.prometheus.container import MetricsContainer
    from prometheus_client import CollectorRegistry

    import services.notifier.pipeline
    import services.notifier.smtp

    found = [obj for module in (shared.metrics, services.notifier.pipeline, services.notifier.smtp)
             for obj in vars(module).values() if isinstance(obj, MetricWrapperBase)]
    container = MetricsContainer(CollectorRegistry(), metrics_prefix="faststream", custom_label_names=())
    return found + [getattr(container, n) for n in container.__slots__ if not n.startswith("_")]


def _exposed_metric_names() -> set[str]:
    names: set[str] = set()
    for obj in _metric_objects():
        for family in obj.describe():
            if family.type == "counter":
                names |= {f"{family.name}_total", f"{family.name}_created"}
            elif family.type == "histogram":
                names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum",
                          f"{family.name}_created"}
            else:
                names.add(family.name)
    return names


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                 "and", "or", "unless", "atan2", "inf", "nan", "Inf", "NaN"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery selectors, $__rate_interval
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?[0-9][0-9a-z]*", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before in ".$":
            continue  # part of a number or a Grafana variable
        if s[m.end():].lstrip().startswith("(") or m.group(0) in _PROMQL_WORDS:
            continue  # function or aggregation, keyword
        names.add(m.group(0))
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((GRAFANA / "dashboards" / "ppo-alerts.json").read_text(encoding="utf-8"))
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


# --- docker-compose.yml ----------------------------------------------------------------------------------

def test_compose_has_every_service():
    services = _compose()["services"]
    assert set(ALL_SERVICES) <= set(services), f"missing: {set(ALL_SERVICES) - set(services)}"


def test_compose_app_services_use_the_one_image_and_run_their_service():
    services = _compose()["services"]
    images = set()
    for name in APP_SERVICES:
        service = services[name]
        build = service["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).resolve() == DOCKERFILE
        images.add(service.get("image"))
        assert service["command"] == ["run", name]
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert len(images) == 1


def test_compose_kafka_is_single_node_kraft_with_a_healthcheck():
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.1"
    env = _env(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert set(env["KAFKA_LISTENERS"].split(",")) == {"PLAINTEXT://:9092", "CONTROLLER://:9093"}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(env["KAFKA_NODE_ID"] + "@")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert kafka["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


def test_compose_ppo_variables_are_settings_fields():
    for name, service in _compose()["services"].items():
        unknown = sorted(k for k in _env(service) if k.startswith("PPO_") and k not in FIELDS)
        assert not unknown, f"{name}: {unknown} are not fields of shared.settings.Settings"


def test_dockerfile_ppo_variables_are_settings_fields():
    unknown = sorted(k for k in _dockerfile_env() if k.startswith("PPO_") and k not in FIELDS)
    assert not unknown


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_env_builds_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch):
    services = _compose()["services"]
    service = services[name]
    settings = _settings_from(_container_env(name), monkeypatch)

    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.http_host == "0.0.0.0"
    port = getattr(settings, f"{name}_port")
    published = {str(p).rsplit(":", 1)[-1].split("/")[0] for p in service.get("ports", [])}
    assert str(port) in published, f"{name} listens on {port} but publishes {published}"
    assert f":{port}/healthz" in " ".join(service["healthcheck"]["test"])

    directory = _host_path(service, str(settings.directory_file))
    assert directory is not None and directory.is_file(), f"{settings.directory_file} is not mounted"
    assert Directory.load(directory).bcu_codes

    if name == "rules":
        assert settings.register_file is not None
        register = _host_path(service, str(settings.register_file))
        assert register is not None and register.is_file()
        assert len(Register.load(register)) > 0
    if name == "intake":
        # a container listens on 0.0.0.0, where anonymous intake is refused: compose uses one local token
        assert settings.intake_allow_anonymous is False
        assert settings.intake_tokens == {hashlib.sha256(b"local-compose-only-token").hexdigest(): "Local"}
        assert "local use" in COMPOSE.read_text(encoding="utf-8").lower()
    if name in ("scheduler", "notifier"):
        named = set(_compose().get("volumes") or {})
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
        assert mounts.get(str(settings.state_dir)) in named, f"{name}: state_dir is not on a named volume"
    if name == "notifier":
        assert settings.smtp_host == "mailpit" and settings.smtp_port == 1025
        assert settings.smtp_tls_mode == "plain" and settings.smtp_allow_plaintext is True
        assert "mailpit" in service["depends_on"]


def test_compose_references_exist():
    data = _compose()
    services = data["services"]
    named = set(data.get("volumes") or {})
    for name, service in services.items():
        depends = service.get("depends_on") or []
        for other in depends:
            assert other in services, f"{name} depends on unknown service {other}"
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named, f"{name} uses undeclared volume {source}"


def test_compose_monitoring_mounts():
    services = _compose()["services"]
    prometheus = services["prometheus"]
    assert _host_path(prometheus, "/etc/prometheus/prometheus.yml") == PROMETHEUS / "prometheus.yml"
    assert _host_path(prometheus, "/etc/prometheus/alerts.yml") == PROMETHEUS / "alerts.yml"
    grafana = services["grafana"]
    provisioning = _host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == GRAFANA / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "ppo-alerts.yml").read_text(encoding="utf-8"))
    path = providers["providers"][0]["options"]["path"]
    assert _host_path(grafana, path + "/ppo-alerts.json") == GRAFANA / "dashboards" / "ppo-alerts.json"
    mail = services["mailpit"]
    assert {"1025", "8025"} <= {str(p).rsplit(":", 1)[-1] for p in mail["ports"]}


# --- Dockerfile and .dockerignore ------------------------------------------------------------------------

def test_dockerfile_shape():
    instructions = _dockerfile_instructions()
    words = [w for w, _ in instructions]
    froms = [a for w, a in instructions if w == "FROM"]
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in instructions if w == "ARG" and "=" in a}
    assert args.get("PYTHON_IMAGE") == "python:3.11-slim" or all("python:3.11-slim" in f for f in froms)
    assert _exec_form("ENTRYPOINT") == ["ppo-alerts"]
    user = [a for w, a in instructions if w == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    installs = " ".join(a for w, a in instructions if w == "RUN" and "pip install" in a)
    assert re.search(r"pip install\s+\.(\s|$)", installs), "the project is installed with `pip install .`"
    assert "[dev]" not in DOCKERFILE.read_text(encoding="utf-8")
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "FROM")


def test_dockerfile_healthcheck_checks_the_services_healthz(monkeypatch: pytest.MonkeyPatch):
    command = _exec_form("HEALTHCHECK")
    assert command[:2] == ["python", "-c"]
    code = command[2]
    compile(code, "<HEALTHCHECK>", "exec")
    for name in APP_SERVICES:  # compose's own healthchecks too
        test = _compose()["services"][name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        compile(test[3], f"<{name} healthcheck>", "exec")

    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = str(server.server_address[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")}
        env.update({"PPO_HTTP_HOST": "0.0.0.0", "PYTHONPATH": str(ROOT)})
        env.update({f"PPO_{name.upper()}_PORT": port for name in APP_SERVICES})
        run = [sys.executable, "-c", code]
        healthy = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, timeout=60)
        assert healthy.returncode == 0, healthy.stderr.decode()
        status["code"] = 503
        starting = subprocess.run(run, env=env, cwd=ROOT, capture_output=True, timeout=60)
        assert starting.returncode != 0
    finally:
        server.shutdown()
        server.server_close()


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, near enough: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        alternatives = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        if any(fnmatch(c, p) for c in candidates for p in alternatives):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_package_and_drops_the_rest():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    needed = ["pyproject.toml", "shared/settings.py", "services/rules/service.py", "ppo_alerts/cli.py",
              "deploy/sample/directory.yaml", "deploy/sample/register.csv"]
    needed += [str(p.relative_to(ROOT)) for p in (ROOT / "services").rglob("*.j2")]
    for path in needed:
        assert not _dockerignored(path, patterns), f"{path} is left out of the build context"
    for path in [".venv/bin/python", ".git/HEAD", "tests/unit/test_deploy.py", "shared/__pycache__/x.pyc",
                 ".env", "deploy/kafka/pom.xml"]:
        assert _dockerignored(path, patterns), f"{path} should not be in the build context"


# --- .env.example --------------------------------------------------------------------------------------

def _env_example() -> tuple[dict[str, str], set[str]]:
    """Active PPO_ assignments, and every PPO_ name mentioned as `PPO_X=` (commented-out ones too)."""
    active: dict[str, str] = {}
    mentioned: set[str] = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(#\s*)?(PPO_[A-Z0-9_]+)=(.*)$", line)
        if not m:
            continue
        mentioned.add(m.group(2))
        if m.group(1) is None:
            active[m.group(2)] = m.group(3)
    return active, mentioned


def test_env_example_names_are_settings_fields():
    active, mentioned = _env_example()
    assert not sorted(mentioned - set(FIELDS)), "not fields of Settings"
    assert not sorted(set(FIELDS) - mentioned), "settings missing from .env.example"


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch):
    active, _ = _env_example()
    settings = _settings_from(active, monkeypatch)
    monkeypatch.delenv("PPO_KAFKA_BOOTSTRAP", raising=False)
    defaults = Settings.model_construct()  # field defaults, no environment
    for key, field in FIELDS.items():
        if key in active:
            assert getattr(settings, field) == getattr(defaults, field), f"{key} is not its default"
        else:
            assert Settings.model_fields[field].default is None, f"{key} is commented out but has a default"


# --- Prometheus -----------------------------------------------------------------------------------------

def test_prometheus_scrapes_every_service_every_15s(monkeypatch: pytest.MonkeyPatch):
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    assert config["global"]["scrape_interval"] == "15s"
    assert "alerts.yml" in config["rule_files"]
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]}
    for name in APP_SERVICES:
        settings = _settings_from(_container_env(name), monkeypatch)
        assert f"{name}:{getattr(settings, name + '_port')}" in targets


def test_alert_rules_shape():
    rules = {r["alert"]: r for r in _alert_rules()}
    required = ("PPODeadlineBreached", "PPODeadLettersGrowing", "PPONotificationsFailing", "PPOServiceDown")
    assert set(required) <= set(rules)
    assert any(name.startswith("PPOTimers") for name in rules)
    allowed_labels = {"rule", "service", "reason", "outcome", "result", "lateness", "job", "instance", "group",
                      "topic"}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        text = " ".join(rule["annotations"].values())
        used = set(re.findall(r"\$labels\.(\w+)", text))
        assert used <= allowed_labels, f"{name} annotations use {used - allowed_labels}"
        assert "$value" not in text or name == "PPOServiceDown"
    assert "ppo_deadlines_total" in rules["PPODeadlineBreached"]["expr"]
    assert 'result="breached"' in rules["PPODeadlineBreached"]["expr"]
    assert 'outcome="permanent-failure"' in rules["PPONotificationsFailing"]["expr"]
    assert "up" in promql_metric_names(rules["PPOServiceDown"]["expr"])
    assert rules["PPOServiceDown"]["for"] == "2m"


def test_alert_rules_use_only_real_metrics():
    known = _exposed_metric_names() | {"up"}
    for rule in _alert_rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']}: unknown metrics {names - known}"


def test_promql_metric_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (rule, le) (rate(ppo_event_to_notification_seconds_bucket'
            '{rule=~"A.*"}[$__rate_interval]))) > 1e3 unless on(rule) x_total offset 15m')
    assert promql_metric_names(expr) == {"ppo_event_to_notification_seconds_bucket", "x_total"}


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")
@pytest.mark.parametrize("args", [
    ["check", "config", "deploy/prometheus/prometheus.yml"],
    ["check", "rules", "deploy/prometheus/alerts.yml"],
    ["test", "rules", "deploy/prometheus/alerts_test.yml"],
], ids=["check-config", "check-rules", "test-rules"])
def test_promtool(args: list[str]):
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana --------------------------------------------------------------------------------------------

def test_grafana_dashboard_uses_only_real_metrics():
    dashboard = json.loads((GRAFANA / "dashboards" / "ppo-alerts.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    exprs = _dashboard_exprs()
    known = _exposed_metric_names() | {"up"}
    used: set[str] = set()
    for expr in exprs:
        names = promql_metric_names(expr)
        assert names, expr
        assert names <= known, f"unknown metrics {names - known} in {expr}"
        used |= names
    needed = {"ppo_events_received_total", "ppo_events_rejected_total", "ppo_obligations_raised_total",
              "ppo_notifications_total", "ppo_deadlines_total", "ppo_event_to_notification_seconds_bucket",
              "ppo_dead_letters_total", "ppo_timers_pending", "ppo_consumer_lag", "ppo_obligations_at_risk",
              "faststream_received_processed_messages_total"}
    assert not needed - used, f"no panel shows {needed - used}"


def test_grafana_datasource_matches_the_dashboard():
    provisioned = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
    datasources = yaml.safe_load(provisioned.read_text(encoding="utf-8"))["datasources"]
    uids = {d["uid"] for d in datasources if d["type"] == "prometheus"}
    assert any(d["url"] == "http://prometheus:9090" for d in datasources)
    dashboard = json.loads((GRAFANA / "dashboards" / "ppo-alerts.json").read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in uids


def test_grafana_panels_fit_the_grid_without_overlapping():
    dashboard = json.loads((GRAFANA / "dashboards" / "ppo-alerts.json").read_text(encoding="utf-8"))
    taken: dict[tuple[int, int], str] = {}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"] if p["type"] == "row")
    for needed in ("timeliness", "flow", "failures", "lag"):
        assert needed in titles


# --- metrics the alerts and the dashboard rely on ---------------------------------------------------------

def test_metric_rule_ids_are_the_rule_books():
    from services.rules.rulebook import RULES

    assert tuple(RULES) == shared.metrics.RULE_IDS


def _readme_metrics() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("| `ppo_"):
            names += re.findall(r"`(ppo_[a-z_]+)`", line.split("|")[1])
    return names


def test_every_metric_in_the_readme_exists_and_is_updated_somewhere():
    """Named in the README's table -> defined -> incremented, set or observed by some code outside its definition."""
    objects = {family.name: obj for obj in _metric_objects() for family in obj.describe()}
    sources = {path: path.read_text(encoding="utf-8") for folder in ("services", "shared")
               for path in (ROOT / folder).rglob("*.py")}
    names = _readme_metrics()
    assert "ppo_consumer_lag" in names and "ppo_obligations_at_risk" in names
    for name in names:
        family = name.removesuffix("_total")
        assert family in objects, f"{name} is in the README but no service defines it"
        variables = [var for module in (shared.metrics, *(sys.modules[m] for m in (
            "services.notifier.pipeline", "services.notifier.smtp")))
                     for var, obj in vars(module).items() if obj is objects[family]]
        assert variables, name
        updated = re.compile(r"\b(?:" + "|".join(variables) + r")\b[^\n]*\.(?:inc|set|set_function|observe)\(")
        assert any(updated.search(text) for text in sources.values()), f"nothing updates {name}"


def test_initialise_creates_the_rule_series_at_zero():
    from prometheus_client import REGISTRY

    for service in ("intake", "rules", "scheduler", "notifier"):
        shared.metrics.initialise(service)
    sample = REGISTRY.get_sample_value
    assert sample("ppo_deadlines_total", {"rule": "C7", "result": "breached"}) is not None
    assert sample("ppo_notifications_total", {"rule": "A1", "outcome": "permanent-failure"}) is not None
    assert sample("ppo_obligations_raised_total", {"rule": "B8"}) is not None
    assert sample("ppo_timers_fired_total", {"rule": "A4", "lateness": "late"}) is not None
    assert sample("ppo_obligations_at_risk", {"rule": "A2"}) == 0
    assert sample("ppo_events_accepted_total", {"event_type": "warrant.issued"}) is not None


def _obligation(n: int, send_at: datetime, notify_by: datetime, status: str = "pending", rule: str = "A1",
                history: int = 1) -> Any:
    from shared.obligations import HistoryEntry, Obligation

    return Obligation(obligation_id=f"{rule}-{n}", rule=rule, source_paragraph="x", person=None, bcu="13-LD",
                      recipients=["a@b.gov.uk"], send_at=send_at, notify_by=notify_by, status=status,
                      raised_at=send_at, history=[HistoryEntry(at=send_at, what="x")] * history)


def test_obligations_at_risk_are_due_open_and_near_their_deadline():
    from datetime import timedelta

    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    minutes = [timedelta(minutes=m) for m in range(0, 200)]
    obligations = [
        _obligation(1, now - minutes[2], now + minutes[13]),  # immediate, not yet accepted: at risk
        _obligation(2, now - minutes[90], now - minutes[75]),  # overdue: at risk
        _obligation(3, now + minutes[30], now + minutes[45]),  # timed, on schedule: not at risk
        _obligation(4, now - minutes[2], now + minutes[180], rule="A2"),  # deadline hours away
        _obligation(5, now - minutes[2], now + minutes[13], status="notified"),
    ]
    assert shared.metrics.obligations_at_risk(obligations, now) == {"A1": 2}
    tracker = shared.metrics.OpenObligations()
    for o in obligations:
        tracker.observe(o)
    tracker.observe(_obligation(2, now - minutes[90], now - minutes[75], status="notified", history=2))
    tracker.observe(_obligation(2, now - minutes[90], now - minutes[75], history=1))  # an older state, late
    assert len(tracker) == 3 and tracker.export(now) == {"A1": 1}
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("ppo_obligations_at_risk", {"rule": "A1"}) == 1
    assert REGISTRY.get_sample_value("ppo_obligations_at_risk", {"rule": "C6"}) == 0
    cancelled = _obligation(1, now, now, status="cancelled", history=3)
    tracker.seed([None, b"{not json", cancelled.model_dump_json().encode()])
    assert tracker.export(now) == {}
    assert REGISTRY.get_sample_value("ppo_obligations_at_risk", {"rule": "A1"}) == 0


def test_consumer_lag_is_end_minus_committed_per_topic():
    from aiokafka import TopicPartition

    from shared.kafka import consumer_lag

    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    end = {a0: 10, a1: 5, b0: 7}
    assert consumer_lag(end, {a0: 8, a1: 5, b0: -1}, {a0: 0, a1: 0, b0: 3}) == {"a": 2, "b": 4}
    assert consumer_lag(end, {}, {}) == {"a": 15, "b": 7}  # nothing committed: everything from the start
    assert consumer_lag({a0: 3}, {a0: 9}, {}) == {"a": 0}  # never negative


def test_make_broker_has_the_prometheus_middleware_and_knows_its_consumer_groups():
    from faststream.kafka.prometheus import KafkaPrometheusMiddleware

    from shared.kafka import ServiceBroker, make_broker

    broker = make_broker(Settings(), "ppo-test")
    assert isinstance(broker, ServiceBroker)
    assert any(isinstance(m, KafkaPrometheusMiddleware) for m in broker.middlewares)

    @broker.subscriber("ppo.events", group_id="ppo-rules")
    async def handle(body: bytes) -> None:  # pragma: no cover - never consumed here
        pass

    assert broker.consumer_groups() == {"ppo-rules": ["ppo.events"]}


def test_deployments_sharing_a_broker_never_share_a_consumer_group() -> None:
    """A group is named as the services write it (`ppo-rules`) under the deployment's prefix: two prefixes on one
    broker (staging beside live, or two test runs) do not join each other's groups and rebalance each other."""
    from shared.kafka import ServiceBroker, make_broker

    broker = make_broker(Settings(topic_prefix="staging"), "ppo-test")
    assert isinstance(broker, ServiceBroker)

    @broker.subscriber("staging.events", group_id="ppo-rules")
    async def handle(body: bytes) -> None:  # pragma: no cover - never consumed here
        pass

    assert broker.consumer_groups() == {"staging-rules": ["staging.events"]}
    assert Topics("staging").group("ppo-scheduler-custody") == "staging-scheduler-custody"
    assert Topics().group("ppo-notifier") == "ppo-notifier"  # the default prefix keeps today's names
    assert Topics("x").group("console-test") == "console-test"  # not one of the services' groups: as given


# --- sample data ----------------------------------------------------------------------------------------

def test_sample_directory_has_both_bcus_with_every_role():
    directory = Directory.load(SAMPLE / "directory.yaml")
    assert set(directory.bcu_codes) == {"13-LD", "21-ST"}
    for code in directory.bcu_codes:
        for role in ROLES:
            assert directory.contacts(code, role), f"{code} has no {role} contact"


def test_sample_register_loads_with_the_example_people():
    register = Register.load(SAMPLE / "register.csv")  # validates PNC / CRO check characters
    assert register.find({"noms": "G1234HJ"}) is not None
    assert register.find({"pnc": "2006/0777001G"}).identifiers["crn"] == "L112233"  # type: ignore[union-attr]
    assert register.find({"pnc": "2022/0031337W"}) is not None
    bcus = {p.home_bcu for e in register.entries() for p in e.periods}
    assert bcus == {"13-LD", "21-ST"}


def test_sample_events_are_bare_payloads_about_people_on_the_register():
    translate = pytest.importorskip("services.intake.translate")
    register = Register.load(SAMPLE / "register.csv")
    text = (SAMPLE / "events.jsonl").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    received = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    types: list[str] = []
    hmpps = 0
    for number, line in enumerate(lines, start=1):
        body = json.loads(line)
        assert isinstance(body, dict), f"line {number}: not a JSON object"
        assert not {"at", "body"} <= set(body), f"line {number}: not a bare payload"
        if "eventType" in body:
            hmpps += 1
            assert body["eventType"] == "prisoner-offender-search.prisoner.received"
            assert body["additionalInformation"]["reason"] == "NEW_ADMISSION"
        else:
            parse_event(body)
        for result in translate.translate_many(body, received):
            for event in result.events:
                types.append(event.type)
                entry = register.find(event.person.identifiers())
                assert entry is not None and entry.on_register(date(2026, 11, 23)), f"line {number}"
    assert hmpps == 1
    expected = {"prison.reception", "warrant.issued", "prison.release_date_set", "court.bail_decision"}
    assert expected <= set(types)


# --- docker-compose.cluster.yml (the cluster shape: three brokers, PostgreSQL, two replicas of each service) ----

CLUSTER = ROOT / "docker-compose.cluster.yml"
# what the `${X:?message}` guards stand for in these tests (compose refuses to start without them)
CLUSTER_GUARDED = {"PPO_ACK_SECRET": "cluster-test-ack-secret-0123456789abcdef", "POSTGRES_PASSWORD": "pw0123"}


def _cluster() -> dict[str, Any]:
    data = yaml.safe_load(CLUSTER.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _cluster_interpolate(value: Any) -> str:
    """`_interpolate`, and each `${X:?message}` guard replaced by the test value of X."""
    def guarded(m: re.Match[str]) -> str:
        assert m.group(1) in CLUSTER_GUARDED, f"no test value for the guarded variable {m.group(1)}"
        return CLUSTER_GUARDED[m.group(1)]

    text = str(value).lower() if isinstance(value, bool) else str(value)
    return _interpolate(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}", guarded, text))


def _cluster_raw_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): str(v) for k, v in raw.items() if v is not None}


def _cluster_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: _cluster_interpolate(v) for k, v in _cluster_raw_env(service).items()}


def _cluster_brokers() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _cluster()["services"].items() if str(s.get("image", "")).startswith("apache/kafka")}


def _replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def _cluster_prometheus() -> dict[str, Any]:
    data = _cluster()
    mounts = {c["target"]: c["source"] for c in data["services"]["prometheus"]["configs"]}
    source = mounts["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(data["configs"][source]["content"])
    assert isinstance(config, dict)
    return config


def test_cluster_compose_parses_and_has_every_service():
    data = _cluster()
    services = data["services"]
    assert data["name"] != _compose()["name"], "a project of its own: not the single node's volumes and containers"
    assert set(APP_SERVICES) | {"postgres", "mailpit", "prometheus"} <= set(services)
    assert len(_cluster_brokers()) == 3
    for name in APP_SERVICES:  # the single-node file's conventions: the one image, `run <service>`
        service = services[name]
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        assert service["image"] == _compose()["services"][name]["image"]
        assert service["command"] == ["run", name]


def test_cluster_three_kraft_brokers_one_quorum_rf3_min_isr2():
    brokers = _cluster_brokers()
    envs = {name: _cluster_env(s) for name, s in brokers.items()}
    assert {s["image"] for s in brokers.values()} == {"apache/kafka:3.9.1"}
    assert sorted(int(e["KAFKA_NODE_ID"]) for e in envs.values()) == [1, 2, 3]
    assert len({e["CLUSTER_ID"] for e in envs.values()}) == 1
    voters = {e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for e in envs.values()}
    assert len(voters) == 1, "one quorum voters list, the same on every node"
    named = dict(v.split("@", 1) for v in voters.pop().split(","))
    for name, env in envs.items():
        listeners = dict(x.split("://", 1) for x in env["KAFKA_LISTENERS"].split(","))
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
        assert named[env["KAFKA_NODE_ID"]] == f"{name}:{listeners['CONTROLLER'].rsplit(':', 1)[-1]}"
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:{listeners['PLAINTEXT'].rsplit(':', 1)[-1]}"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert brokers[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
        data_mounts = [str(v).split(":")[0] for v in brokers[name]["volumes"]
                       if str(v).split(":")[1] == env["KAFKA_LOG_DIRS"]]
        assert len(data_mounts) == 1 and data_mounts[0] in (_cluster().get("volumes") or {})
    assert set(named) == {e["KAFKA_NODE_ID"] for e in envs.values()}


def test_cluster_every_service_has_two_replicas_and_the_whole_bootstrap():
    services = _cluster()["services"]
    advertised = {_cluster_env(s)["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
                  for s in _cluster_brokers().values()}
    assert len(advertised) == 3
    for name in APP_SERVICES:
        service = services[name]
        assert _replicas(service) >= 2, f"{name}: one replica"
        env = _cluster_env(service)
        assert set(env["PPO_KAFKA_BOOTSTRAP"].split(",")) == advertised, name
        assert env["PPO_KAFKA_REPLICATION_FACTOR"] == "3" and env["PPO_KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        for broker in _cluster_brokers():
            assert service["depends_on"][broker]["condition"] == "service_healthy", f"{name} -> {broker}"


def test_cluster_shared_state_is_the_compose_postgres():
    services = _cluster()["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert postgres["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert any(str(v).split(":")[1] == "/var/lib/postgresql/data" and str(v).split(":")[0] in _cluster()["volumes"]
               for v in postgres["volumes"])
    pg = _cluster_env(postgres)
    raw_password = _cluster_raw_env(postgres)["POSTGRES_PASSWORD"]
    assert raw_password.startswith("${POSTGRES_PASSWORD:?"), "the database password comes from the environment"
    from sqlalchemy.engine import make_url

    for name, variable in (("notifier", "PPO_NOTIFIER_SENDLOG_URL"), ("scheduler", "PPO_SCHEDULER_JOBSTORE_URL")):
        url = make_url(_cluster_env(services[name])[variable])
        assert url.drivername == "postgresql+psycopg", name
        assert url.host == "postgres" and (url.port or 5432) == 5432, name
        assert (url.username, url.password, url.database) == (
            pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]), name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name


def test_cluster_ack_secret_is_shared_and_never_written_down():
    services = _cluster()["services"]
    raw = {name: _cluster_raw_env(services[name]).get("PPO_ACK_SECRET") for name in ("intake", "notifier")}
    assert raw["intake"] == raw["notifier"]
    assert re.fullmatch(r"\$\{PPO_ACK_SECRET:\?[^}]+\}", str(raw["intake"])), "a ${PPO_ACK_SECRET:?...} guard"


def test_cluster_replicas_share_no_state_volume_and_no_host_port():
    data = _cluster()
    services = data["services"]
    named = set(data.get("volumes") or {})
    users: dict[str, list[str]] = {}
    published: list[str] = []
    for name, service in services.items():
        replicas = _replicas(service)
        for volume in service.get("volumes") or []:
            parts = str(volume).split(":")
            if parts[0] in named:
                users.setdefault(parts[0], []).extend([name] * replicas)
            else:
                assert parts[0].startswith((".", "/")), f"{name}: anonymous volume {volume}"
                assert (ROOT / parts[0]).exists(), f"{name} mounts missing {parts[0]}"
                assert replicas == 1 or parts[-1] == "ro", f"{name}: replicas share the writable {parts[0]}"
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host = str(port.get("published") or "")
            else:
                pieces = str(port).split("/")[0].rsplit(":", 2)
                host = pieces[-2] if len(pieces) > 1 else ""
            if replicas > 1:
                assert not host, f"{name}: {replicas} replicas cannot all publish host port {host}"
            elif host:
                published.append(host)
        if replicas > 1:
            assert "container_name" not in service and "hostname" not in service, f"{name}: one name, two replicas"
    shared = {volume: who for volume, who in users.items() if len(who) > 1}
    assert not shared, f"named volumes used by more than one container: {shared}"
    assert len(published) == len(set(published)), f"a host port published twice: {published}"
    for name in ("scheduler", "notifier"):  # nothing that matters is in PPO_STATE_DIR in this shape
        env = _cluster_env(services[name])
        assert "PPO_STATE_DIR" not in env
        assert not any("sqlite" in v for v in env.values()), name


def test_cluster_ppo_variables_are_settings_fields():
    for name, service in _cluster()["services"].items():
        unknown = sorted(k for k in _cluster_env(service) if k.startswith("PPO_") and k not in FIELDS)
        assert not unknown, f"{name}: {unknown} are not fields of shared.settings.Settings"
    interpolated = set(re.findall(r"\$\{(PPO_[A-Z0-9_]+)", CLUSTER.read_text(encoding="utf-8")))
    assert interpolated and interpolated <= set(FIELDS), sorted(interpolated - set(FIELDS))


def test_cluster_depends_on_names_services_with_healthchecks():
    services = _cluster()["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for other in depends:
            assert other in services, f"{name} depends on unknown service {other}"
            if isinstance(depends, dict) and depends[other].get("condition") == "service_healthy":
                assert services[other].get("healthcheck"), f"{name} waits for {other}, which has no healthcheck"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_cluster_env_builds_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch):
    service = _cluster()["services"][name]
    env = {k: v for k, v in _dockerfile_env().items() if k.startswith("PPO_")}
    env.update(_cluster_env(service))
    settings = _settings_from(env, monkeypatch)

    assert settings.kafka_replication_factor == 3 and settings.kafka_min_insync_replicas == 2
    assert settings.http_host == "0.0.0.0"
    port = getattr(settings, f"{name}_port")
    assert f":{port}/healthz" in " ".join(service["healthcheck"]["test"])
    directory = _host_path(service, str(settings.directory_file))
    assert directory is not None and directory.is_file(), f"{settings.directory_file} is not mounted"
    if name == "rules":
        register = _host_path(service, str(settings.register_file))
        assert register is not None and register.is_file()
    if name in ("intake", "notifier"):
        assert settings.ack_secret is not None
        assert settings.ack_secret.get_secret_value() == CLUSTER_GUARDED["PPO_ACK_SECRET"]
    if name == "intake":
        assert settings.intake_allow_anonymous is False
        assert settings.intake_tokens == {hashlib.sha256(b"local-compose-only-token").hexdigest(): "Local"}
    if name == "notifier":
        assert settings.smtp_host == "mailpit" and settings.smtp_port == 1025
        assert settings.smtp_tls_mode == "plain" and settings.smtp_allow_plaintext is True
        assert "mailpit" in service["depends_on"]
    jobs = {job["job_name"]: job for job in _cluster_prometheus()["scrape_configs"]}
    discovered = jobs[name]["dns_sd_configs"]
    assert [(d["names"], d["type"], d["port"]) for d in discovered] == [([name], "A", port)], "every replica scraped"


def test_cluster_prometheus_uses_the_alert_rules():
    prometheus = _cluster()["services"]["prometheus"]
    config = _cluster_prometheus()
    assert config["global"]["scrape_interval"] == "15s"
    assert "alerts.yml" in config["rule_files"]
    assert _host_path(prometheus, "/etc/prometheus/alerts.yml") == PROMETHEUS / "alerts.yml"
    assert {job["job_name"] for job in config["scrape_configs"]} == set(APP_SERVICES)
