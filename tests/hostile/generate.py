"""Hostile input by class, as careless agencies and attackers send it: seeded, so a failing run can be repeated.

Each item is (class, body bytes, content type). Items about people use the identifiers of real register entries,
so an item that is wrongly taken, or a refusal that swallows a fact, shows as an obligation or a message too many
or too few when the run is reconciled against the oracle.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

JSON = "application/json"
CLASSES = ("control characters", "extreme dates", "deep nesting", "huge fields", "wrong content type",
           "not JSON", "wrong types and shapes", "part not taken")

_CONTROL = ["\r\nBcc: someone@example.org", "\x00", "\x1b[31m", "\u202e", "\u2028", "\ufeff", "\t\v\f", "\x7f",
            "\u0085"]


def _reception(noms: str, pnc: str, at: str, event_id: str, **person: Any) -> dict[str, Any]:
    return {"id": event_id, "type": "prison.reception", "occurred_at": at, "source": "HOSTILE",
            "person": {"noms": noms, "pnc": pnc, **person}, "data": {"prison_id": "LEI", "reason": "new"}}


def hostile(people: Sequence[Any], now: datetime, seed: int, per_class: int = 6) -> list[tuple[str, bytes, str]]:
    """`people` have `.noms` and `.pnc` (tests/faults/stack.Person)."""
    rnd = random.Random(seed)
    out: list[tuple[str, bytes, str]] = []
    at = (now - timedelta(minutes=5)).isoformat()

    def add(cls: str, body: Any, content_type: str = JSON) -> None:
        out.append((cls, body if isinstance(body, bytes) else json.dumps(body).encode(), content_type))

    for i in range(per_class):
        p = rnd.choice(people)
        ctl = rnd.choice(_CONTROL)
        where = i % 3
        person: dict[str, Any] = {"given_name": f"Eve{ctl}", "family_name": f"Ex{rnd.choice(_CONTROL)}ample"}
        body = _reception(p.noms, p.pnc, at, f"hostile-{seed}-ctl-{i}", **person)
        if where == 1:
            body["data"]["prison_id"] = f"LE{ctl}I"
        elif where == 2:
            body["person"]["noms"] = f"{p.noms}{ctl}"
        add("control characters", body)

        p = rnd.choice(people)
        body = _reception(p.noms, p.pnc, at, f"hostile-{seed}-date-{i}")
        body["occurred_at"] = rnd.choice(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-02-30T10:00:00Z",
                                          (now + timedelta(days=400)).isoformat(), "1970-01-01T00:00:00+23:59",
                                          "2026-03-02T10:00:00"])
        if i % 2:
            body["person"]["date_of_birth"] = rnd.choice(["1800-01-01", "9999-01-01", "2026-13-01"])
            body["occurred_at"] = at
        add("extreme dates", body)

        depth = rnd.choice([200, 990, 1_000, 5_000, 50_000, 200_000])
        add("deep nesting", b'{"type": "prison.reception", "data": ' + b"[" * depth + b"]" * depth + b"}")

        p = rnd.choice(people)
        field = rnd.choice(["given_name", "pnc", "noms", "cro"])
        body = _reception(p.noms, p.pnc, at, f"hostile-{seed}-huge-{i}")
        body["person"][field] = rnd.choice("A9/ ") * rnd.choice([70_000, 400_000, 1_500_000])
        add("huge fields", body)

        p = rnd.choice(people)
        body = _reception(p.noms, p.pnc, at, f"hostile-{seed}-ctype-{i}")
        add("wrong content type", body, rnd.choice(["text/plain", "application/x-www-form-urlencoded",
                                                    "multipart/form-data; boundary=x", "application/xml",
                                                    "text/html; charset=utf-8", ""]))

        add("not JSON", rnd.choice([b"\x00\xff\xfe not json", b'{"type": "prison.reception"', b"",
                                    b'{"type": "\xff\xfe"}', b"NaN", b"[1, 2, 3,]", b"\xef\xbb\xbf{}"]))

        p = rnd.choice(people)
        body = _reception(p.noms, p.pnc, at, f"hostile-{seed}-shape-{i}")
        mutate = i % 6
        if mutate == 0:
            body["person"] = [p.noms]
        elif mutate == 1:
            body["occurred_at"] = 1_767_225_600
        elif mutate == 2:
            body["data"] = {"prison_id": {"$ne": None}, "reason": "new"}
        elif mutate == 3:
            body["type"] = "prison.reception" * 1000
        elif mutate == 4:
            body = [1, "two", None, [], {}]  # type: ignore[assignment]
        else:
            body["person"] = {"noms": None, "pnc": True}
        add("wrong types and shapes", body)

        add("part not taken", _two_defendants(rnd.choice(people), seed, i, now))
    return out


def _two_defendants(p: Any, seed: int, i: int, now: datetime) -> dict[str, Any]:
    """A Common Platform hearing: a warrant for a register person, and a second defendant with an unusable PNC."""
    day = (now - timedelta(minutes=30)).date().isoformat()
    defendant = {
        "id": f"hd-{seed}-{i}-1", "pncId": p.pnc, "isYouth": False,
        "personDefendant": {"personDetails": {"firstName": "Sam", "lastName": "Example", "dateOfBirth": "1990-05-01"}},
        "offences": [{"id": f"ho-{seed}-{i}", "offenceCode": "BA76001", "offenceTitle": "Fail to surrender",
                      "judicialResults": [{"judicialResultId": f"hr-{seed}-{i}-1", "cjsCode": "4576",
                                           "label": "Warrant", "category": "INTERMEDIARY",
                                           "orderedDate": day}]}]}
    second = copy.deepcopy(defendant)
    second.update({"id": f"hd-{seed}-{i}-2", "pncId": "2004/00123\r\n45H"})
    second["offences"][0]["judicialResults"][0]["judicialResultId"] = f"hr-{seed}-{i}-2"
    return {"hearing": {
        "id": f"hh-{seed}-{i}", "jurisdictionType": "MAGISTRATES",
        "courtCentre": {"id": "c", "code": "B13AA00", "name": "Court"},
        "hearingDays": [{"sittingDay": f"{day}T10:00:00.000Z"}],
        "prosecutionCases": [{"id": f"hc-{seed}-{i}", "prosecutionCaseIdentifier": {"caseURN": "13AA0000001"},
                              "defendants": [defendant, second]}]}}
