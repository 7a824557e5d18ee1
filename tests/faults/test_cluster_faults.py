"""Fault injection on the cluster shape: three Kafka brokers (replication factor 3, min.insync.replicas 2), two
instances of every service, each with its own state folder as if on its own host, and one PostgreSQL holding the
notifier's send log and the scheduler's job store and lease.

The scenarios of issue #16: a broker SIGKILLed mid-stream and brought back; one instance of each service SIGKILLed
while its twin runs; a host lost (an instance's state folder deleted, the instance started afresh); an instance of
each service added mid-stream (a rebalance). Each ends with the same reconciliation against the oracle as the
one-node suite (tests/faults/test_faults.py) and adds its rows to docs/reliability.md under the cluster table.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ppo_alerts.localkafka import LocalKafkaCluster
from services.notifier.service import PARTITION_WORKERS
from tests.faults.stack import SERVICES, Run, assert_clean
from tests.pgschema import fresh_schema

pytestmark = [pytest.mark.kafka, pytest.mark.smtp, pytest.mark.faults]

FULL = os.environ.get("PPO_FAULTS_FULL") == "1"
SCALE = 2 if FULL else 1
TWINS = ("a", "b")
SMTP_TIMEOUT_S = 5.0  # a killed notifier's claims expire after twice this: then its twin sends what was in hand
# Per notifier instance killed: the recipients of the requests it had in hand (one per partition, at most 3 each).
WINDOW_PER_NOTIFIER_KILL = PARTITION_WORKERS * 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    # Its own three nodes: the broker scenario kills one, which must not disturb other tests.
    nodes = LocalKafkaCluster(tmp_path_factory.mktemp("faults-cluster"), nodes=3)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def cluster_run(cluster: LocalKafkaCluster, postgres_url: str,
                tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def make(n_events: int, seed: int, start: tuple[str, ...] = TWINS) -> Run:
        shared_state = fresh_schema(postgres_url, "faults")
        r = Run(cluster, tmp_path / f"run{len(runs)}", n_events, seed, shape="cluster",
                instances={f"{service}-{twin}": service for service in SERVICES for twin in TWINS},
                env_extra={
                    "PPO_KAFKA_REPLICATION_FACTOR": "3", "PPO_KAFKA_MIN_INSYNC_REPLICAS": "2",
                    "PPO_NOTIFIER_SENDLOG_URL": shared_state, "PPO_SCHEDULER_JOBSTORE_URL": shared_state,
                    "PPO_SCHEDULER_LEASE_TTL_S": "3", "PPO_SMTP_TIMEOUT_S": str(SMTP_TIMEOUT_S),
                    # intake and notifier instances share the acknowledgement key, as deployed
                    "PPO_ACK_SECRET": "c1" * 32,
                })
        runs.append(r)
        r.stack.start_all([name for name in r.stack.instances if name.rsplit("-", 1)[1] in start])
        return r

    yield make
    for r in runs:
        r.close()


def each_did_work(r: Run) -> None:
    """Exactly one scheduler is active. How the work spread (rules instances raising, notifiers sending) is printed,
    not asserted: after a fault the group may give one instance every partition for the rest of a short run (seen in
    CI), which loses nothing; tests/integration/test_notifier_cluster.py asserts the partitions are shared."""
    spread = {name: r.stack.metric(name, "ppo_obligations_raised_total") for name in r.stack.of("rules")}
    spread |= {name: r.stack.metric(name, "ppo_notifications_total") for name in r.stack.of("notifier")}
    print("\nwork spread:", spread)
    assert sum(r.stack.metric(name, "ppo_scheduler_active") for name in r.stack.of("scheduler")) == 1


def test_a_broker_killed_mid_stream_and_brought_back(cluster_run: Callable[..., Run],
                                                     cluster: LocalKafkaCluster) -> None:
    r = cluster_run(100 * SCALE, seed=21)
    victim = 2
    r.drive({len(r.payloads) // 3: lambda: cluster.kill(victim),
             2 * len(r.payloads) // 3: lambda: cluster.restart(victim)})
    r.injected = 1
    assert_clean(r.reconcile("broker lost", "one of three brokers SIGKILLed mid-stream, back a third later",
                             timeout=240))
    each_did_work(r)


def test_one_instance_of_each_service_killed_while_its_twin_runs(cluster_run: Callable[..., Run]) -> None:
    r = cluster_run(120 * SCALE, seed=22)
    rnd = random.Random(23)
    points = sorted(rnd.sample(range(5, len(r.payloads) - 5), 4 * SCALE))
    victims = [f"{service}-{rnd.choice(TWINS)}" for service in SERVICES] * SCALE

    def killer(name: str) -> Callable[[], None]:
        def fault() -> None:
            r.stack.kill(name)
            time.sleep(rnd.uniform(0, 1.5))
            r.stack.restart(name)
        return fault

    r.drive({p: killer(v) for p, v in zip(points, victims, strict=True)})
    row = r.reconcile("instance lost", "one instance of each service SIGKILLed, restarted, twin running",
                      timeout=240)
    assert_clean(row, duplicate_window=WINDOW_PER_NOTIFIER_KILL * r.stack.kills["notifier"])
    assert all(len(ids) == 1 for ids in r.message_ids_of_duplicates())
    each_did_work(r)


def test_a_host_lost_state_folder_and_all(cluster_run: Callable[..., Run]) -> None:
    r = cluster_run(100 * SCALE, seed=24)
    step = len(r.payloads) // (len(SERVICES) + 1)

    def lose(name: str) -> Callable[[], None]:
        def fault() -> None:
            r.stack.lose_host(name)
            r.stack.restart(name)
        return fault

    r.drive({step * (i + 1): lose(f"{service}-b") for i, service in enumerate(SERVICES)})
    row = r.reconcile("host lost", "an instance of each service SIGKILLed, its state folder deleted, started afresh",
                      timeout=240)
    assert_clean(row, duplicate_window=WINDOW_PER_NOTIFIER_KILL * r.stack.kills["notifier"])
    assert all(len(ids) == 1 for ids in r.message_ids_of_duplicates())
    each_did_work(r)


def test_an_instance_of_each_service_added_mid_stream(cluster_run: Callable[..., Run]) -> None:
    r = cluster_run(100 * SCALE, seed=25, start=("a",))

    def add() -> None:
        r.stack.start_many([f"{service}-b" for service in SERVICES])

    r.drive({len(r.payloads) // 3: add})
    assert_clean(r.reconcile("instance added", "a second instance of each service started mid-stream (rebalance)",
                             timeout=240))
    each_did_work(r)
