"""Shared pytest fixtures. Others append their fixtures below; keep each block self-contained."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ppo_alerts.localkafka import LocalKafka, LocalKafkaCluster

# --------------------------------------------------------------------------- local Kafka
# One real broker (KRaft, 127.0.0.1, free port) for the whole session, started only when a test
# asks for `kafka_bootstrap` or `local_kafka`. Tests that kill()/stop() it must restart() it
# before they end; restart() keeps the port (so the bootstrap string stays valid) and the data.


@pytest.fixture(scope="session")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path_factory.mktemp("kafka"))
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: LocalKafka) -> str:
    return local_kafka.bootstrap


# --------------------------------------------------------------------------- local Kafka cluster
# Three KRaft nodes (replication factor 3, min.insync.replicas 2), started once for the session when a test asks
# for `local_cluster`. A test that kills a node must restart it before it ends.


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    cluster = LocalKafkaCluster(tmp_path_factory.mktemp("kafka-cluster"), nodes=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- local PostgreSQL
# One PostgreSQL server (Debian's binaries, 127.0.0.1, free port) for the session, started when a test asks for
# `postgres_url`: the shared state of the cluster shape. Its folder is under /tmp: the server runs as the
# `postgres` user when the tests run as root, and pytest's own temporary folders are closed to other users.


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    import tempfile

    from ppo_alerts.localpostgres import LocalPostgres

    server = LocalPostgres(tempfile.mkdtemp(prefix="ppo-alerts-pg-"))
    url = server.start()
    try:
        yield url
    finally:
        server.close()
