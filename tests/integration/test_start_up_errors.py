"""What the environment names and cannot be used stops a service with one line naming the setting, exit 2, no
traceback (issue 14, item 8): Kafka unreachable, a missing directory file, a directory with an address outside
the allowed domains, a sender that is not an address."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def start(name: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PPO_")}
    clean.update({"PPO_STATE_DIR": str(tmp_path / "state"), "PPO_TOPIC_PREFIX": "startup", **env})
    return subprocess.run([sys.executable, "-m", "ppo_alerts.cli", "run", name], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess[str], setting: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("ppo-alerts: ")]
    assert len(lines) == 1 and lines[0].startswith(f"ppo-alerts: {setting}: "), result.stderr[-2000:]
    return lines[0]


def test_kafka_unreachable(tmp_path: Path) -> None:
    one_line(start("intake", tmp_path, PPO_KAFKA_BOOTSTRAP="127.0.0.1:1", PPO_INTAKE_PORT="0"),
             "PPO_KAFKA_BOOTSTRAP")


@pytest.mark.kafka
def test_a_missing_or_refused_directory_file(kafka_bootstrap: str, tmp_path: Path) -> None:
    line = one_line(start("rules", tmp_path, PPO_KAFKA_BOOTSTRAP=kafka_bootstrap, PPO_RULES_PORT="0",
                          PPO_DIRECTORY_FILE=str(tmp_path / "nowhere.yaml")), "PPO_DIRECTORY_FILE")
    assert "nowhere.yaml" in line
    sample = yaml.safe_load((ROOT / "deploy" / "sample" / "directory.yaml").read_text())
    sample["bcus"]["13-LD"]["contacts"]["ppo"] = ["someone@gmail.com"]
    (tmp_path / "directory.yaml").write_text(yaml.safe_dump(sample))
    line = one_line(start("notifier", tmp_path, PPO_KAFKA_BOOTSTRAP=kafka_bootstrap, PPO_NOTIFIER_PORT="0",
                          PPO_DIRECTORY_FILE=str(tmp_path / "directory.yaml")), "PPO_DIRECTORY_FILE")
    assert "gmail.com" in line


@pytest.mark.kafka
def test_a_sender_that_is_not_an_address(kafka_bootstrap: str, tmp_path: Path) -> None:
    one_line(start("notifier", tmp_path, PPO_KAFKA_BOOTSTRAP=kafka_bootstrap, PPO_NOTIFIER_PORT="0",
                   PPO_SMTP_SENDER="PPO Alerts <not an address>"), "PPO_SMTP_SENDER")
