"""A failed send never makes a later true fact disappear (issue 14, item 1). When every recipient refused an
obligation for good, the next report of its fact (an event not seen before) raises it again under the same id, with
the recipients the directory gives now; a replay of an event it has seen is still a duplicate; the scheduler takes
the new attempt over the failure it knew, and watches it afresh."""

from __future__ import annotations

from datetime import timedelta

from services.scheduler.watch import FIRED, WatchPolicy, fired, merge, next_step
from shared.obligations import RAISED_AGAIN, history_entry
from tests.rulebook_fixtures import event, make_ledger, utc

R = utc("2026-02-10T14:05:00Z")


def reception(event_id: str, at: str = "2026-02-10T14:00:00Z"):  # type: ignore[no-untyped-def]
    return event("prison.reception", {"noms": "G1234HJ"}, at, event_id, prison_id="LEI", reason="new")


def failed_a1():  # type: ignore[no-untyped-def]
    ledger = make_ledger()
    [o] = ledger.on_event(reception("hmpps-1"), R).raised
    refused = o.model_copy(deep=True)
    refused.record_failure(R + timedelta(seconds=5), "every recipient refused permanently")
    assert ledger.learn_failure(refused)
    return ledger, o.obligation_id


def test_a_new_report_of_a_failed_fact_raises_it_again_under_the_same_id() -> None:
    ledger, oid = failed_a1()
    decision = ledger.on_event(reception("canonical-7", "2026-02-10T14:00:30Z"), R + timedelta(minutes=5))
    [again] = decision.raised
    assert again.obligation_id == oid and again.status == "pending" and again.recipients
    assert again.source_event_ids == ["hmpps-1", "canonical-7"]
    assert [h.what for h in again.history][-1] == RAISED_AGAIN
    assert any(h.what.startswith("failed:") for h in again.history)  # the earlier attempt stays on record


def test_a_replay_of_an_event_it_has_seen_is_a_duplicate() -> None:
    ledger, oid = failed_a1()
    decision = ledger.on_event(reception("hmpps-1"), R + timedelta(minutes=5))
    assert decision.raised == [] and decision.duplicates == [oid]


def test_a_failure_of_an_earlier_attempt_read_late_changes_nothing() -> None:
    ledger, oid = failed_a1()
    old_failure = ledger.get(oid).model_copy(deep=True)  # type: ignore[union-attr]
    ledger.on_event(reception("canonical-7"), R + timedelta(minutes=5))
    assert not ledger.learn_failure(old_failure)
    assert ledger.get(oid).status == "pending"  # type: ignore[union-attr]


def test_only_failures_are_learnt() -> None:
    ledger = make_ledger()
    [o] = ledger.on_event(reception("hmpps-1"), R).raised
    sent = o.model_copy(update={"status": "notified"})
    assert not ledger.learn_failure(sent) and ledger.get(o.obligation_id).status == "pending"  # type: ignore[union-attr]


def test_the_scheduler_takes_the_new_attempt_and_watches_it_afresh() -> None:
    ledger, oid = failed_a1()
    known = ledger.get(oid).model_copy(deep=True)  # type: ignore[union-attr]
    known.history.append(history_entry(R + timedelta(seconds=6), "escalated to the BCU's escalation contact: x"))
    [again] = ledger.on_event(reception("canonical-7"), R + timedelta(minutes=5)).raised
    merged = merge(known, again)
    assert merged.status == "pending"
    policy = WatchPolicy()
    step = next_step(merged, policy)
    assert step is not None and step.name == "breach"  # watched again: the earlier escalation was another attempt
    stale = known.model_copy(update={"status": "pending"})  # an old copy from before the failure
    assert merge(known, stale).status == "failed"


def test_a_timed_obligation_raised_again_is_fired_again() -> None:
    ledger, oid = failed_a1()
    o = ledger.get(oid)
    assert o is not None
    o.history.insert(1, history_entry(R, FIRED))
    assert fired(o)
    [again] = ledger.on_event(reception("canonical-7"), R + timedelta(minutes=5)).raised
    assert not fired(again)  # the FIRED of the failed attempt does not count for this one


def test_recipients_follow_a_reloaded_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The rule book remembers addresses per (BCU, roles) for speed; a reload must make it forget them."""
    import copy

    import yaml

    from services.rules.rulebook import RuleBook
    from shared.directory import DirectoryHolder
    from shared.register import Register
    from tests.rulebook_fixtures import DIRECTORY, REGISTER_CSV

    path = tmp_path / "directory.yaml"
    before = copy.deepcopy(DIRECTORY)
    before["bcus"]["13-LD"]["contacts"]["ppo"] = ["old.ppo@westyorkshire.police.uk"]
    path.write_text(yaml.safe_dump(before))
    holder = DirectoryHolder(path)
    book = RuleBook(Register.from_csv_text(REGISTER_CSV), holder)  # type: ignore[arg-type]
    day = R.date()
    assert book.recipients("13-LD", ["ppo"], None, day)[0] == ["old.ppo@westyorkshire.police.uk"]
    path.write_text(yaml.safe_dump(DIRECTORY))
    assert holder.reload_if_changed() is not None
    assert book.recipients("13-LD", ["ppo"], None, day)[0] == ["leeds.ppo@westyorkshire.police.uk"]
