"""One person, one partition: the key an event is republished under on `<prefix>.events.by-person`. Pure.

Intake keys an event by the identifier it happens to carry (a prison movement by NOMS, a court result by PNC),
so one person's events would reach different partitions, different rules instances, in no common order. The
resolve stage re-keys each event by the register's person id, as a Kafka Streams repartition does; the rule book
then sees all of a person's events on one partition, in order.

The view is of identifiers only, and only grows: the register only ever adds identifiers to a person (selection
and `register.updated` merge; de-selection keeps the entry), so an old snapshot read late changes nothing.
"""

from __future__ import annotations

from shared.register import RegisterEntry, RegisterError, person_id_for

_ORDER = ("pnc", "cro", "noms", "crn")  # Register.find_person's order: the entry the ledger would match
_FALLBACK_ORDER = ("pnc", "noms", "crn", "cro")  # intake's person_key: someone on no register, keyed consistently


class People:
    """Identifier -> register person id, as the resolve stage knows it."""

    def __init__(self) -> None:
        self._by_kind: dict[str, dict[str, str]] = {k: {} for k in _ORDER}

    def __len__(self) -> int:
        return len({pid for index in self._by_kind.values() for pid in index.values()})

    def learn(self, person_id: str, identifiers: dict[str, str]) -> bool:
        """Add a person's identifiers; refused (False) when one belongs to someone else, as the register
        refuses it (that event will be refused by the rule book too, and must not move anyone's key)."""
        if any((holder := self._by_kind.get(k, {}).get(v)) is not None and holder != person_id
               for k, v in identifiers.items()):
            return False
        for kind, value in identifiers.items():
            if kind in self._by_kind and value:
                self._by_kind[kind][value] = person_id
        return True

    def learn_entry(self, entry: RegisterEntry) -> bool:
        return self.learn(entry.person_id, entry.identifiers)

    def person_of(self, identifiers: dict[str, str]) -> str | None:
        for kind in _ORDER:
            value = identifiers.get(kind)
            if value and (pid := self._by_kind[kind].get(value)) is not None:
                return pid
        return None

    def key_for(self, etype: str, ids: dict[str, str]) -> bytes:
        """`person:<register person id>` for an event of type `etype` about `ids`, or for someone on no register
        their best identifier. A `register.*` event updates the view at once: the person's next event, read by
        this stage, is keyed alike whichever identifier it carries."""
        pid = self.person_of(ids)
        if etype == "register.selected" and pid is None:
            try:
                pid = person_id_for(ids)  # the id the register will give them (Register.select)
            except RegisterError:
                pid = None
        if pid is not None and etype in ("register.selected", "register.updated"):
            self.learn(pid, ids)
        if pid is not None:
            return f"person:{pid}".encode()
        return identifier_key(ids)


def identifier_key(ids: dict[str, str]) -> bytes:
    for kind in _FALLBACK_ORDER:
        if ids.get(kind):
            return f"{kind}:{ids[kind]}".encode()
    return b"-"
