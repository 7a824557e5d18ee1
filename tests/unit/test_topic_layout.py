"""What is wrong with an existing topic's shape, named by topic and setting (shared/topic_layout.py)."""

from __future__ import annotations

from shared.topic_layout import TopicFound, TopicShape, layout_problems, shape_for_cluster

STATE = TopicShape(partitions=3, replication=3, min_insync=None, compacted=True)
EVENTS = TopicShape(partitions=3, replication=3, min_insync=None, compacted=False)
SHAPES = {"ppo.obligations": STATE, "ppo.events": EVENTS}


def found(name: str, partitions: int = 3, replication: int = 3, compacted: bool = False,
          min_insync: int = 2) -> TopicFound:
    return TopicFound(name, partitions, replication, compacted, min_insync)


def test_a_topic_in_the_configured_shape_has_no_problem():
    assert layout_problems(SHAPES, [found("ppo.obligations", compacted=True), found("ppo.events")], 3) == []


def test_a_state_topic_that_is_not_compacted_refuses_the_start():
    [problem] = layout_problems(SHAPES, [found("ppo.obligations", compacted=False)], 3)
    assert problem.refuses_start and problem.setting == "cleanup.policy"
    assert "ppo.obligations" in problem.message and "compact" in problem.message


def test_fewer_partitions_than_configured_is_reported_with_the_setting():
    [problem] = layout_problems(SHAPES, [found("ppo.events", partitions=1)], 3)
    assert not problem.refuses_start and problem.setting == "PPO_KAFKA_PARTITIONS"
    assert "1 partition" in problem.message and "PPO_KAFKA_PARTITIONS=3" in problem.message


def test_one_replica_on_a_cluster_is_reported_but_not_on_a_single_broker():
    [problem] = layout_problems(SHAPES, [found("ppo.events", replication=1, min_insync=1)], 3)
    assert problem.setting == "PPO_KAFKA_REPLICATION_FACTOR" and "3-broker cluster" in problem.message
    single = {"ppo.events": TopicShape(3, 1, None, False)}
    assert layout_problems(single, [found("ppo.events", replication=1, min_insync=1)], 1) == []


def test_several_replicas_with_min_insync_one_is_reported():
    [problem] = layout_problems(SHAPES, [found("ppo.events", min_insync=1)], 3)
    assert problem.setting == "min.insync.replicas"


def test_topics_of_other_applications_are_not_checked():
    assert layout_problems(SHAPES, [found("someone.else", partitions=1, replication=1)], 3) == []


def test_replication_follows_the_setting_else_the_broker_and_never_exceeds_the_brokers():
    assert shape_for_cluster(partitions=3, replication=None, min_insync=None, brokers=3, broker_replication=3) \
        == (3, None)
    assert shape_for_cluster(partitions=3, replication=None, min_insync=None, brokers=1, broker_replication=1) \
        == (1, None)
    assert shape_for_cluster(partitions=3, replication=3, min_insync=2, brokers=1, broker_replication=1) == (1, 1)
    assert shape_for_cluster(partitions=3, replication=2, min_insync=None, brokers=3, broker_replication=3) \
        == (2, None)


def test_a_topic_kept_shorter_than_its_records_are_needed_is_reported():
    shapes = {"ppo.acknowledgements": TopicShape(3, 1, None, False, retention_ms=31 * 86_400_000)}
    short = TopicFound("ppo.acknowledgements", 3, 1, False, 1, retention_ms=7 * 86_400_000)
    [problem] = layout_problems(shapes, [short], 1)
    assert problem.setting == "retention.ms" and "168 h" in problem.message
    forever = TopicFound("ppo.acknowledgements", 3, 1, False, 1, retention_ms=-1)
    assert layout_problems(shapes, [forever], 1) == []
