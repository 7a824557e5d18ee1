"""The shape the topics must have, and what is wrong with the shape they have: pure, no Kafka client here.

Each service checks the topics it uses at start-up (`shared.kafka.ensure_topics`). A state topic (obligations,
register) that is not compacted loses the state it carries once retention deletes old records: the service refuses
to start. The rest is reported, naming the topic and the setting, and the service starts: fewer partitions than
configured caps how many instances can share the work; one replica on a cluster of several brokers loses the
topic with its broker; `min.insync.replicas` of 1 with several replicas lets an acknowledged write live on one
broker only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["TopicFound", "TopicProblem", "TopicShape", "layout_problems", "shape_for_cluster"]


@dataclass(frozen=True)
class TopicShape:
    """What a topic should be: created so, and checked against when it exists."""

    partitions: int
    replication: int
    min_insync: int | None  # None: the broker's default
    compacted: bool
    retention_ms: int | None = None  # None: the broker's default


@dataclass(frozen=True)
class TopicFound:
    """What an existing topic is (from the cluster's metadata and the topic's configuration)."""

    name: str
    partitions: int
    replication: int
    compacted: bool
    min_insync: int
    retention_ms: int | None = None  # -1: kept forever


@dataclass(frozen=True)
class TopicProblem:
    topic: str
    setting: str  # the Kafka or PPO_* setting to look at
    message: str
    refuses_start: bool


def shape_for_cluster(*, partitions: int, replication: int | None, min_insync: int | None, brokers: int,
                      broker_replication: int) -> tuple[int, int | None]:
    """The replication factor and min.insync.replicas to create topics with: the settings, else the broker's
    default replication factor; never more replicas than brokers (a single local broker takes RF 1), nor a
    min.insync.replicas above the replicas (every write would be refused)."""
    wanted = replication if replication is not None else broker_replication
    factor = max(1, min(wanted, brokers))
    return factor, (min(min_insync, factor) if min_insync is not None else None)


def layout_problems(shapes: Mapping[str, TopicShape], found: Iterable[TopicFound], brokers: int) -> list[TopicProblem]:
    problems: list[TopicProblem] = []
    for topic in found:
        shape = shapes.get(topic.name)
        if shape is None:
            continue
        if shape.compacted and not topic.compacted:
            problems.append(TopicProblem(
                topic.name, "cleanup.policy",
                f"topic {topic.name} is not compacted (cleanup.policy must include compact): it holds the latest "
                "state of each key, which retention would delete; set cleanup.policy=compact on it", True))
        if shape.retention_ms is not None and topic.retention_ms is not None and \
                0 <= topic.retention_ms < shape.retention_ms:
            problems.append(TopicProblem(
                topic.name, "retention.ms",
                f"topic {topic.name} keeps records {topic.retention_ms // 3_600_000} h, less than the "
                f"{shape.retention_ms // 3_600_000} h its records are needed for; "
                f"set retention.ms={shape.retention_ms}", False))
        if topic.partitions < shape.partitions:
            problems.append(TopicProblem(
                topic.name, "PPO_KAFKA_PARTITIONS",
                f"topic {topic.name} has {topic.partitions} partition(s), fewer than PPO_KAFKA_PARTITIONS="
                f"{shape.partitions}: at most {topic.partitions} instance(s) of a consumer share its work", False))
        if brokers > 1 and topic.replication == 1:
            problems.append(TopicProblem(
                topic.name, "PPO_KAFKA_REPLICATION_FACTOR",
                f"topic {topic.name} has replication factor 1 on a {brokers}-broker cluster: losing the broker "
                "that holds a partition loses the partition; recreate it or reassign replicas", False))
        elif topic.replication < shape.replication:
            problems.append(TopicProblem(
                topic.name, "PPO_KAFKA_REPLICATION_FACTOR",
                f"topic {topic.name} has replication factor {topic.replication}, less than the "
                f"{shape.replication} configured", False))
        if topic.replication > 1 and topic.min_insync < 2:
            problems.append(TopicProblem(
                topic.name, "min.insync.replicas",
                f"topic {topic.name} has {topic.replication} replicas but min.insync.replicas={topic.min_insync}: "
                "an acknowledged write may live on one broker only; set min.insync.replicas=2", False))
        elif shape.min_insync is not None and topic.min_insync < shape.min_insync:
            problems.append(TopicProblem(
                topic.name, "PPO_KAFKA_MIN_INSYNC_REPLICAS",
                f"topic {topic.name} has min.insync.replicas={topic.min_insync}, less than the "
                f"{shape.min_insync} configured", False))
    return problems
