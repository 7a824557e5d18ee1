"""ppo_alerts.localkafka fails with messages a person can act on; nothing is downloaded or started here."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from ppo_alerts import localkafka
from ppo_alerts.localkafka import LocalKafka, LocalKafkaError, ensure_kafka_jars, main


def _script(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only an empty bin dir (tests put fake tools there); no JAVA_HOME, no libs override."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("PPO_ALERTS_KAFKA_LIBS", raising=False)
    return bin_dir


def test_import_has_no_side_effects() -> None:
    assert localkafka.KAFKA_VERSION == "3.9.1"
    assert callable(localkafka.main)


def test_default_cache_dir_is_outside_the_work_tree(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PPO_ALERTS_CACHE", raising=False)
    default = localkafka.default_cache_dir()
    assert default == Path.home() / ".cache" / "ppo-alerts" / "kafka-3.9.1" / "libs"
    monkeypatch.setenv("PPO_ALERTS_CACHE", str(tmp_path))
    assert localkafka.default_cache_dir() == tmp_path / "kafka-3.9.1" / "libs"


def test_java_missing(bare_path: Path, tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "data", libs_dir=tmp_path)
    with pytest.raises(LocalKafkaError) as err:
        kafka.start()
    msg = str(err.value)
    assert "'java' was not found on PATH" in msg
    assert "JAVA_HOME" in msg and "openjdk" in msg
    assert not kafka.is_running()


def test_mvn_missing(bare_path: Path, tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError) as err:
        ensure_kafka_jars(tmp_path / "libs")
    msg = str(err.value)
    assert "Maven ('mvn') is not on PATH" in msg
    assert "apt-get install maven" in msg and "PPO_ALERTS_KAFKA_LIBS" in msg


def test_no_network_to_maven_central_and_half_download_is_redone(bare_path: Path, tmp_path: Path) -> None:
    _script(
        bare_path,
        "mvn",
        'echo "[ERROR] Failed to execute goal on project local-kafka-jars: Could not resolve dependencies:'
        ' Could not transfer artifact org.apache.kafka:kafka_2.13:pom:3.9.1 from/to central: Unknown host"\n'
        "exit 1",
    )
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka_2.13-3.9.1.jar").write_bytes(b"half")  # no completion marker: must be redone
    with pytest.raises(LocalKafkaError) as err:
        ensure_kafka_jars(libs)
    msg = str(err.value)
    assert "Maven Central is not reachable" in msg
    assert "Unknown host" in msg  # the tail of mvn's output is included
    assert not libs.exists()
    assert not list(tmp_path.glob("libs.partial-*"))


def test_cached_jars_need_no_maven(bare_path: Path, tmp_path: Path) -> None:
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka_2.13-3.9.1.jar").write_bytes(b"jar")
    (libs / ".complete").write_text("{}")
    assert ensure_kafka_jars(libs) == libs  # no mvn on PATH, yet no error


def test_libs_override_must_hold_kafka(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PPO_ALERTS_KAFKA_LIBS", str(tmp_path))
    with pytest.raises(LocalKafkaError, match="does not contain kafka_2.13-3.9.1.jar"):
        ensure_kafka_jars()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_port_busy(tmp_path: Path) -> None:
    with _listening_socket() as sock:
        port = sock.getsockname()[1]
        kafka = LocalKafka(tmp_path / "data", libs_dir=tmp_path)
        with pytest.raises(LocalKafkaError) as err:
            kafka.start(port=port)
    msg = str(err.value)
    assert f"port {port} on 127.0.0.1" in msg and "already in use" in msg
    assert "--port" in msg


def test_cli_start_on_busy_port_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with _listening_socket() as sock:
        port = sock.getsockname()[1]
        rc = main(["start", "--data-dir", str(tmp_path / "data"), "--port", str(port)])
    assert rc == 2
    assert "already in use" in capsys.readouterr().err


def test_broker_exits_early_shows_log_tail(bare_path: Path, tmp_path: Path) -> None:
    _script(
        bare_path,
        "java",
        'for a in "$@"; do [ "$a" = kafka.tools.StorageTool ] && exit 0; done\n'
        'echo "ERROR simulated broker failure: disk on fire"\n'
        "exit 3",
    )
    data = tmp_path / "data"
    kafka = LocalKafka(data, libs_dir=tmp_path, start_timeout=10)
    with pytest.raises(LocalKafkaError) as err:
        kafka.start()
    msg = str(err.value)
    assert "exited early with code 3" in msg
    assert "disk on fire" in msg and str(data / "kafka.log") in msg
    assert not kafka.is_running()
    assert not (data / "kafka.pid").exists()


def test_storage_format_failure_is_reported(bare_path: Path, tmp_path: Path) -> None:
    _script(
        bare_path, "java", 'echo "Error: Could not find or load main class kafka.tools.StorageTool"\nexit 1'
    )
    with pytest.raises(LocalKafkaError) as err:
        LocalKafka(tmp_path / "data", libs_dir=tmp_path).start()
    msg = str(err.value)
    assert "formatting the Kafka storage" in msg and "Could not find or load main class" in msg


def test_cli_stop_and_status_when_nothing_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "kafka.pid").write_text(f"{os.getpid()}\n")  # stale pid file naming a non-Kafka process
    assert main(["status", "--data-dir", str(data)]) == 1
    assert main(["stop", "--data-dir", str(data)]) == 0
    assert "not running" in capsys.readouterr().err
