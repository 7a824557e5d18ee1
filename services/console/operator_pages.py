"""The operator's pages: dead letters (read, replay), consumer lag and service health.

Operators only, and never personal data: a dead letter is shown by its summary (id, when, service, source, reason)
and its record with the payload redacted (`shared.dead_letters.detail(..., personal_data=False)`); reading a payload
stays with `ppo-alerts dead-letters show --show-personal-data` and intake's operator API, which log who read it.

Everything is read per request, from Kafka and the services themselves: the console keeps no state. A replay goes
through `shared.dead_letters.replay` with the console's one publish, recorded on the dead-letter topic as
`console:<sub>`. Kafka or a service that does not answer within a few seconds is said so on the page, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from services.console.web import ConsolePages, StaffMember
from shared.dead_letters import (
    DeadLetters,
    Decision,
    Filter,
    detail,
    parse_id,
    parse_instant,
    plan_replay,
    read_dead_letters,
    replay,
    summary,
)
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger("ppo.console")

LONDON = ZoneInfo("Europe/London")
KAFKA_TIMEOUT_S = 5.0  # a page waits this long for Kafka, then says it did not answer
HEALTH_TIMEOUT_S = 2.0  # each service's /healthz
LETTERS_PER_PAGE = 100  # newest first; a replay form of 100 ids fits the console's form limits (200 fields)
FILTER_LIMITS = {"service": 40, "reason": 120, "topic": 249, "since": 40, "until": 40}


def service_groups(topics: Topics) -> list[tuple[str, str, str]]:
    """(service, consumer group, topic) of every consumer group the services commit: the groups as the services
    write them (services/*/service.py), under the deployment's prefix (Topics.group), like the topics."""
    return [(service, topics.group(group), topic) for service, group, topic in (
        ("intake", "ppo-intake", topics.intake_raw),
        ("rules", "ppo-rules-resolve", topics.events),
        ("rules", "ppo-rules", topics.events_by_person),
        ("scheduler", "ppo-scheduler", topics.obligations),
        ("scheduler", "ppo-scheduler-acks", topics.acknowledgements),
        ("scheduler", "ppo-scheduler-custody", topics.events),
        ("notifier", "ppo-notifier", topics.notifications),
        ("notifier", "ppo-notifier-escalations", topics.escalations),
    )]


def service_urls(settings: Settings) -> dict[str, str]:
    """PPO_CONSOLE_SERVICE_URLS, or the four services on http_host and their ports (a wildcard host is reached on
    loopback)."""
    if settings.console_service_urls:
        return {name: url.rstrip("/") for name, url in settings.console_service_urls.items()}
    host = settings.http_host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104 - reached, not bound
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return {name: f"http://{host}:{getattr(settings, f'{name}_port')}"
            for name in ("intake", "rules", "scheduler", "notifier")}


# --- what the health page reads ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupLag:
    service: str
    group: str
    topic: str
    partitions: int
    committed: int | None  # the sum of the group's committed offsets; None: nothing committed yet
    end: int  # the sum of the partitions' end offsets
    lag: int  # end offsets - committed (a partition without a commit counts from its first record)


@dataclass(frozen=True)
class ServiceHealth:
    service: str
    url: str
    up: bool
    said: str  # what it answered, in a few words


async def read_lag(settings: Settings, rows: list[tuple[str, str, str]]) -> list[GroupLag]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from shared.kafka import client_kwargs

    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_kwargs(settings))
    try:
        await admin.start()
        await consumer.start()
        partitions: dict[str, list[TopicPartition]] = {}
        for topic in dict.fromkeys(t for _, _, t in rows):
            found = consumer.partitions_for_topic(topic)
            if not found:
                await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public refresh
                found = consumer.partitions_for_topic(topic) or set()
            partitions[topic] = [TopicPartition(topic, p) for p in sorted(found)]
        every = [tp for tps in partitions.values() for tp in tps]
        end = await consumer.end_offsets(every) if every else {}
        beginning = await consumer.beginning_offsets(every) if every else {}
        out = []
        for service, group, topic in rows:
            tps = partitions[topic]
            offsets = await admin.list_consumer_group_offsets(group, partitions=tps) if tps else {}
            done = {tp: meta.offset for tp, meta in offsets.items() if meta.offset is not None and meta.offset >= 0}
            lag = sum(max(0, end[tp] - done.get(tp, beginning.get(tp, 0))) for tp in tps)
            out.append(GroupLag(service, group, topic, len(tps), sum(done.values()) if done else None,
                                sum(end[tp] for tp in tps), lag))
        return out
    finally:
        for stop in (consumer.stop, admin.close):
            with contextlib.suppress(Exception):
                await stop()


async def read_health(name: str, url: str) -> ServiceHealth:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S, follow_redirects=False) as client:
            answer = await client.get(f"{url}/healthz")
    except httpx.TimeoutException:
        return ServiceHealth(name, url, False, f"no answer within {HEALTH_TIMEOUT_S:g} seconds")
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        return ServiceHealth(name, url, False, f"did not answer ({type(exc).__name__})")
    try:
        body = answer.json()
    except ValueError:
        body = None
    status = _printable(str(body.get("status"))) if isinstance(body, dict) and body.get("status") else None
    said = f"HTTP {answer.status_code}" + (f": {status}" if status else "")
    if isinstance(body, dict) and isinstance(body.get("stuck"), list):
        topics = sorted({_printable(str(s.get("topic"))) for s in body["stuck"] if isinstance(s, dict)})
        if topics:
            said += f" ({', '.join(topics)})"
    return ServiceHealth(name, url, answer.status_code == 200 and status == "ok", said[:300])


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:120]


# --- query values ------------------------------------------------------------------------------------------------

class BadQuery(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.field = field
        self.problem = problem


def _clean(field: str, value: str) -> str | None:
    """A filter's value, or None when empty; control, format (bidi) characters and over-long values refused."""
    if len(value) > FILTER_LIMITS[field]:
        raise BadQuery(field, f"is longer than {FILTER_LIMITS[field]} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        raise BadQuery(field, "contains control or formatting characters")
    return value.strip() or None


def _visible(text: str) -> str:
    """A value as the form may show it again: without control or formatting (bidi) characters."""
    return "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf"))


def _instant(field: str, text: str, until: bool) -> datetime:
    """A date (YYYY-MM-DD: from the start of that London day; `until`: to its end) or an instant with its offset."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text) + timedelta(days=1 if until else 0)
            return datetime.combine(day, time(), LONDON).astimezone(UTC)
        return parse_instant(text)
    except (ValueError, OverflowError):
        raise BadQuery(field, "is not a date (YYYY-MM-DD) or a time with its offset (2026-03-02T10:15:00Z)") from None


def parse_filter(query: dict[str, str]) -> Filter:
    values = {k: _clean(k, query.get(k, "")) for k in FILTER_LIMITS}
    since = _instant("since", values["since"], until=False) if values["since"] else None
    until = _instant("until", values["until"], until=True) if values["until"] else None
    if since is not None and until is not None and until <= since:
        raise BadQuery("until", "is not after the date it is from")
    return Filter(service=values["service"], reason=values["reason"], since=since, until=until,
                  topic=values["topic"])


def _page_number(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 7 and int(text) >= 1 else 1


# --- the pages ---------------------------------------------------------------------------------------------------

class OperatorPages:
    def __init__(self, pages: ConsolePages) -> None:
        self.pages = pages

    async def _letters(self) -> DeadLetters | None:
        """The dead-letter topic as it is now; None when Kafka did not answer in time."""
        try:
            return await asyncio.wait_for(read_dead_letters(self.pages.settings), KAFKA_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - Kafka errors, timeouts, a refused connection: said on the page
            log.warning("dead letters not read", extra={"error": type(exc).__name__})
            return None

    def _kafka_down(self, request: Request) -> Response:
        return self.pages.refused(request, 503, "Kafka did not answer",
                                  f"The dead-letter topic could not be read within {KAFKA_TIMEOUT_S:g} seconds. "
                                  "Nothing was changed. Try again in a minute; if it goes on, check the brokers.")

    async def dead_letters(self, request: Request) -> Response:
        member = self.pages.need(request, "operator")
        if not isinstance(member, StaffMember):
            return member
        query = {k: request.query_params.get(k, "") for k in FILTER_LIMITS}
        shown = {k: _visible(v)[:FILTER_LIMITS[k]] for k, v in query.items()}  # what the form shows again
        try:
            where = parse_filter(query)
        except BadQuery as exc:
            return self.pages.page(request, "operations_dead_letters.html", 400, query=shown, error=exc,
                                   rows=[], total=0, page_number=1, more=False, unreadable=0, link_query="")
        letters = await self._letters()
        if letters is None:
            return self._kafka_down(request)
        matching = [d for d in reversed(letters.letters) if where.matches(d)]  # newest first
        page_number = _page_number(request.query_params.get("page", "1"))
        start = (page_number - 1) * LETTERS_PER_PAGE
        rows = [summary(d, letters.replays.get(d.id, [])) for d in matching[start:start + LETTERS_PER_PAGE]]
        for row in rows:
            row["at"] = datetime.fromisoformat(row["at"])
        from urllib.parse import urlencode

        link_query = urlencode({k: v for k, v in query.items() if v})
        return self.pages.page(request, "operations_dead_letters.html", query=shown, error=None, rows=rows,
                               total=len(matching), page_number=page_number,
                               more=start + LETTERS_PER_PAGE < len(matching), unreadable=letters.unreadable,
                               link_query=link_query)

    async def dead_letter(self, request: Request) -> Response:
        member = self.pages.need(request, "operator")
        if not isinstance(member, StaffMember):
            return member
        try:
            letter_id = parse_id(request.path_params["letter_id"][:40])
        except ValueError:
            return self._not_found(request)
        letters = await self._letters()
        if letters is None:
            return self._kafka_down(request)
        d = letters.get(letter_id)
        if d is None:
            return self._not_found(request)
        shown = detail(d, letters.replays.get(d.id, []), personal_data=False)
        record: dict[str, Any] = shown["record"]
        record["reason"] = d.reason  # printable and short, as in the list
        replays = [{**r, "at": datetime.fromisoformat(r["at"])} for r in shown["replays"]]
        return self.pages.page(request, "operations_dead_letter.html", letter=shown, at=d.at, record=record,
                               replays=replays, service=d.service, source=d.source)

    def _not_found(self, request: Request) -> Response:
        return self.pages.refused(request, 404, "Dead letter not found",
                                  "There is no dead letter with that id (PARTITION-OFFSET, e.g. 0-12) on the topic. "
                                  "It may have passed the topic's retention.")

    async def replay_selected(self, request: Request) -> Response:
        member = self.pages.need(request, "operator")
        if not isinstance(member, StaffMember):
            return member
        form = await self.pages.csrf_ok_all(request)
        if form is None:
            return self.pages.refused(request, 400, "Nothing was replayed",
                                      "The form had expired. Go back, reload the page and try again.")
        ids: list[str] = []
        bad: list[Decision] = []
        for text in form.get("id", []):
            try:
                ids.append(parse_id(text[:40]))
            except ValueError:
                bad.append(Decision(text[:40], refused="not a dead-letter id (PARTITION-OFFSET, e.g. 0-12)"))
        ids = list(dict.fromkeys(ids))
        if not ids and not bad:
            return self.pages.refused(request, 400, "Nothing was replayed",
                                      "Select at least one dead letter, then press Replay.")
        letters = await self._letters()
        if letters is None:
            return self._kafka_down(request)
        decisions = plan_replay(letters, ids) if ids else []
        now = self.pages.clock.now()
        try:
            done = await replay(decisions, self.pages.topics, f"console:{member.sub}", now, self.pages.publish)
        except Exception as exc:  # noqa: BLE001 - those done so far are recorded; the page says the rest is not
            log.warning("dead-letter replay stopped", extra={"error": type(exc).__name__, "sub": member.sub})
            return self.pages.refused(request, 503, "The replay stopped",
                                      "Kafka did not take every record. What went is recorded on the dead-letter "
                                      "topic: reload the list to see which were replayed, then try the rest again.")
        done_ids = {d.id for d in done}
        refused = [*bad, *(d for d in decisions if d.id not in done_ids)]
        if done:
            log.info("dead letters replayed", extra={"sub": member.sub, "dead_letters": sorted(done_ids)[:100],
                                                     "channel": "console"})
        return self.pages.page(request, "operations_replayed.html", done=done, refused=refused)

    async def health(self, request: Request) -> Response:
        member = self.pages.need(request, "operator")
        if not isinstance(member, StaffMember):
            return member
        settings = self.pages.settings
        urls = service_urls(settings)
        checks = asyncio.gather(*(read_health(name, url) for name, url in urls.items()))
        lag: list[GroupLag] | None
        kafka_error = None
        try:
            lag = await asyncio.wait_for(read_lag(settings, service_groups(self.pages.topics)), KAFKA_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - said on the page
            log.warning("consumer lag not read", extra={"error": type(exc).__name__})
            lag, kafka_error = None, type(exc).__name__
        services = await checks
        return self.pages.page(request, "operations_health.html", lag=lag, kafka_error=kafka_error,
                               services=services, kafka_timeout=KAFKA_TIMEOUT_S)

    def routes(self) -> list[BaseRoute]:
        async def replay_get(_: Request) -> Response:  # a reload of the result page: back to the list
            return RedirectResponse("/operations/dead-letters", status_code=303)

        return [
            Route("/operations/dead-letters", self.dead_letters),
            Route("/operations/dead-letters/replay", self.replay_selected, methods=["POST"]),
            Route("/operations/dead-letters/replay", replay_get, methods=["GET"]),
            Route("/operations/dead-letters/{letter_id}", self.dead_letter),
            Route("/operations/health", self.health),
        ]
