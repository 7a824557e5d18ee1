"""Two rules instances in one consumer group, on the real broker: one person, one partition.

A person known to the court by PNC and to the prison by NOMS: intake keys their court result `pnc:…` and their
reception `noms:…`, two partitions of `<prefix>.events`. The resolve stage re-keys both `person:<register id>`, so
one instance evaluates both, and each obligation is raised once. A person whose event still reaches the other
instance (keyed by identifier: resolved before their selection reached that resolver, or moved by a rebalance)
gets their A1 all the same: every instance follows the register and the obligations live.

Both instances run in this process (distinct instance ids, same groups), events are produced as intake does
(key `person_key`, header `ppo-received-at`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from ppo_alerts.runner import build_service
from services.intake.service import person_key
from shared.clock import SystemClock
from shared.events import parse_event
from shared.kafka import RECEIVED_AT_HEADER, client_kwargs, ensure_topics, read_to_end
from shared.settings import Settings
from shared.topics import Topics
from tests.rulebook_fixtures import DIRECTORY

pytestmark = [pytest.mark.kafka]

PARTITIONS = [0, 1, 2]
_partition = DefaultPartitioner()
KIM_PNC, LEE_PNC = "2010/0123456T", "2006/0777001G"


def partition_of(key: str) -> int:
    return _partition(key.encode(), PARTITIONS, PARTITIONS)


def noms_apart_from(pnc: str, letter: str, instances: list[Any] | None = None, topic: str = "") -> str:
    """A NOMS number whose identifier key on `events.by-person` is apart from the person's key: given the
    instances, held by another instance than the person's (else also on another `events` partition than the
    PNC's). Keyed by identifier, this person's two events would reach two instances."""
    def holder(partition: int) -> int:
        return next((i for i, r in enumerate(instances or []) if partition in owned(r, topic)), -1)

    person = partition_of(f"person:pnc:{pnc}")
    for n in range(1000, 9999):
        noms = f"{letter}{n}CD"
        by_id = partition_of(f"noms:{noms}")
        if by_id != person and (holder(by_id) != holder(person) if instances else
                                by_id != partition_of(f"pnc:{pnc}")):
            return noms
    raise AssertionError("no such NOMS")


async def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        await asyncio.sleep(0.005)
    raise AssertionError(f"{what}: not met in {timeout} s")


def owned(rules: Any, topic: str) -> set[int]:
    """The partitions of `topic` this instance's group consumer holds now."""
    for sub in rules.broker.subscribers:
        if topic in [t.name for t in getattr(sub, "topics", [])] and getattr(sub, "group_id", None):
            consumer = getattr(sub, "consumer", None)
            return {tp.partition for tp in consumer.assignment()} if consumer is not None else set()
    return set()


def balanced(instances: list[Any], topic: str) -> bool:
    held = [owned(r, topic) for r in instances]
    return all(held) and set().union(*held) == set(PARTITIONS) and sum(map(len, held)) == len(PARTITIONS)


class Evaluations(logging.Handler):
    """The rules' "event evaluated" lines: which instance raised what for which event."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[str, str, list[str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "event evaluated":
            self.seen.append((record.instance, record.event_id, record.raised))  # type: ignore[attr-defined]

    def by_event(self, event_id: str) -> list[tuple[str, list[str]]]:
        return [(i, raised) for i, e, raised in self.seen if e == event_id]


def body(event_id: str, type_: str, person: dict[str, str], **data: Any) -> dict[str, Any]:
    return {"id": event_id, "type": type_, "occurred_at": datetime.now(UTC).isoformat(), "source": "TEST",
            "person": person, "data": data}


@pytest.fixture
async def two_rules(kafka_bootstrap, tmp_path):
    directory = tmp_path / "directory.yaml"
    directory.write_text(yaml.safe_dump(DIRECTORY))
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}",
                        directory_file=directory, state_dir=tmp_path / "state", rules_port=0,
                        kafka_partitions=len(PARTITIONS))
    await ensure_topics(settings, Topics(settings.topic_prefix))
    handler = Evaluations()
    logger = logging.getLogger("ppo.rules")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    started, instances = [], []
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for _ in range(2):
            running, rules = build_service("rules", settings, SystemClock())
            await running.start()
            started.append(running)
            instances.append(rules)
        topics = Topics(settings.topic_prefix)
        await wait_for(lambda: balanced(instances, topics.events_by_person) and balanced(instances, topics.events),
                       what="both instances hold partitions of both stages")
        yield settings, instances, producer, handler
    finally:
        await producer.stop()
        for running in reversed(started):
            await running.stop()
        logger.removeHandler(handler)
        logger.setLevel(level)


async def produce(producer: AIOKafkaProducer, topic: str, event: dict[str, Any], partition: int | None = None,
                  key: bytes | None = None) -> None:
    """As intake publishes: keyed by the identifier the event carries, stamped with R."""
    await producer.send_and_wait(
        topic, json.dumps(event).encode(), key=key or person_key(parse_event(event)), partition=partition,
        headers=[(RECEIVED_AT_HEADER, datetime.now(UTC).isoformat().encode())])


async def obligations_of(settings: Settings, pnc: str) -> list[dict[str, Any]]:
    records = [json.loads(v) for _, v in await read_to_end(settings, Topics(settings.topic_prefix).obligations) if v]
    return [o for o in records if (o.get("person") or {}).get("pnc") == pnc]


async def test_one_persons_events_by_pnc_and_by_noms_reach_one_instance_and_raise_once(two_rules):
    settings, instances, producer, evaluations = two_rules
    topics = Topics(settings.topic_prefix)
    noms = noms_apart_from(KIM_PNC, "B", instances, topics.events_by_person)
    kim = {"pnc": KIM_PNC, "noms": noms}
    run = uuid.uuid4().hex[:6]

    sent = time.monotonic()
    await produce(producer, topics.events, body(f"sel-{run}", "register.selected", kim, home_bcu="13-LD"))
    # How long until both resolvers key this person by their register id (the race's window, here)
    learnt = await asyncio.gather(*(wait_for(lambda r=r: r.people.person_of({"noms": noms}) is not None,
                                             what="resolver learnt") for r in instances))
    window = max(learnt) - min(learnt)
    print(f"selection known to both resolvers {max(learnt):.3f} s after it was sent; "
          f"{window * 1000:.0f} ms between the first and the second")
    assert time.monotonic() - sent < 10

    await produce(producer, topics.events, body(f"court-{run}", "court.outcome", {"pnc": KIM_PNC},
                                                court_code="B13AA00", outcome="conviction"))
    await produce(producer, topics.events, body(f"rec-{run}", "prison.reception", {"noms": noms},
                                                prison_id="LEI", reason="new"))
    await wait_for(lambda: evaluations.by_event(f"court-{run}") and evaluations.by_event(f"rec-{run}"),
                   what="both events evaluated")
    (court_by, court_raised), = evaluations.by_event(f"court-{run}")
    (rec_by, rec_raised), = evaluations.by_event(f"rec-{run}")
    assert court_by == rec_by, "one person's events were evaluated by two instances"
    selected_by = {i for i, _ in evaluations.by_event(f"sel-{run}")}
    assert selected_by == {rec_by}, "the selection was evaluated elsewhere than the person's other events"

    owner = next(r for r in instances if r.instance_id == rec_by)
    assert partition_of(f"person:pnc:{KIM_PNC}") in owned(owner, topics.events_by_person)
    await asyncio.sleep(0.5)  # anything else (a second evaluation somewhere) would be published by now
    found = await obligations_of(settings, KIM_PNC)
    rules = sorted(o["rule"] for o in found if o["rule"] in ("A1", "B2"))
    assert rules == ["A1", "B2"], rules
    assert [o["source_event_ids"] for o in found if o["rule"] == "A1"] == [[f"rec-{run}"]]
    assert len(court_raised) == 1 and len(rec_raised) == 1
    # the other instance knows them too (it follows the obligations): a replay there would be a duplicate
    other = next(r for r in instances if r is not owner)
    await wait_for(lambda: all(other.ledger.get(oid) is not None for oid in court_raised + rec_raised),
                   what="the other instance learnt the obligations")


async def test_a_person_selected_on_one_instance_and_received_on_the_other_still_gets_their_a1(two_rules):
    settings, instances, producer, evaluations = two_rules
    topics = Topics(settings.topic_prefix)
    noms = noms_apart_from(LEE_PNC, "C")
    lee = {"pnc": LEE_PNC, "noms": noms}
    run = uuid.uuid4().hex[:6]

    await produce(producer, topics.events, body(f"sel-{run}", "register.selected", lee, home_bcu="13-LD"))
    await wait_for(lambda: evaluations.by_event(f"sel-{run}"), what="selection evaluated")
    (x, _), = evaluations.by_event(f"sel-{run}")
    y = next(r for r in instances if r.instance_id != x)
    # Y never evaluated the selection: the register topic told it
    await wait_for(lambda: y.ledger.register.find({"noms": noms}) is not None, what="Y's register has the person")
    # The reception reaches Y keyed by identifier, as one resolved before the selection reached a resolver is
    theirs = sorted(owned(y, topics.events_by_person))
    await produce(producer, topics.events_by_person, body(f"rec-{run}", "prison.reception", {"noms": noms},
                                                          prison_id="LEI", reason="new"),
                  partition=theirs[0], key=f"noms:{noms}".encode())
    await wait_for(lambda: evaluations.by_event(f"rec-{run}"), what="reception evaluated")
    (by, raised), = evaluations.by_event(f"rec-{run}")
    assert by == y.instance_id
    assert [o.rule for o in map(y.ledger.get, raised) if o is not None] == ["A1"]
    await asyncio.sleep(0.5)
    a1 = [o for o in await obligations_of(settings, LEE_PNC) if o["rule"] == "A1"]
    assert len(a1) == 1 and a1[0]["source_event_ids"] == [f"rec-{run}"]
