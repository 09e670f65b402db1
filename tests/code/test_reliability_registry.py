"""Registry crash consistency and promotion history (issue 11), on a temporary sqlite store.

The faults here are the states a killed ``register`` / ``promote`` leaves (written as MLflow would
have them at the moment of the kill); tests/e2e/test_tracking_server.py kills real processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline import registry, tracking
from pipeline.registry import PRODUCTION, REGISTRATION


_names = iter(range(10_000))


def _model(client, versions):
    """A registered model with one version per ``(validation, metric, extra tags)``."""
    name = f"rel{next(_names)}"
    client.create_registered_model(name)
    for validation, value, *extra in versions:
        tags = {"validation": validation, "val.all.official_map10": str(value), **(extra[0] if extra else {})}
        client.create_model_version(name, "file:///nowhere", tags=tags)
    return name


def _production(client, name):
    v = client.get_registered_model(name).aliases.get(PRODUCTION)
    return None if v is None else str(v)


def _tags(client, name, version):
    return client.get_model_version(name, str(version)).tags


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _dead_owner() -> str:
    return f"{tracking.owner_tags()[tracking.HOST_TAG]} {_dead_pid()} 1"


def test_incomplete_or_abandoned_versions_are_never_promoted(client):
    name = _model(client, [("passed", 0.5, {REGISTRATION: "complete"}),
                           ("passed", 0.9, {REGISTRATION: "incomplete"}),
                           ("passed", 0.95, {REGISTRATION: "abandoned"})])
    d = registry.promote(client, name)
    assert d.action == "promote" and d.candidate == "1" and _production(client, name) == "1"
    assert d.refused == {"2": "registration incomplete (its register run did not finish)",
                         "3": "registration abandoned (its register run did not finish)"}
    # A refusal is kept on the version (not for the incomplete one: its register may still be going on).
    assert _tags(client, name, 3)["promotion.decision"] == "refused"
    assert "promotion.decision" not in _tags(client, name, 2)


def test_second_promote_keeps_the_winning_record_and_history(client):
    name = _model(client, [("passed", 0.5), ("passed", 0.6), ("failed", 0.99)])
    registry.promote(client, name)                       # v2: no production yet
    client.create_model_version(name, "file:///nowhere",  # v4 loses to v2
                                tags={"validation": "passed", "val.all.official_map10": "0.55"})
    d2 = registry.promote(client, name)
    d3 = registry.promote(client, name)
    assert d2.action == d3.action == "noop" and _production(client, name) == "2"
    winner = _tags(client, name, 2)
    assert winner["promotion.decision"] == "promote" and winner["promotion.state"] == "applied"
    assert "no production model yet" in winner["promotion.reason"]
    assert winner["promotion.last_check"].endswith("is already the best validated version on "
                                                   "val.all.official_map10 (0.6000)")
    # the losing challenger and the refused version have their own records
    loser = _tags(client, name, 4)
    assert loser["promotion.decision"] == "noop" and "version 2 has 0.6000" in loser["promotion.reason"]
    assert _tags(client, name, 3)["promotion.decision"] == "refused"
    assert _tags(client, name, 3)["promotion.reason"] == "validation failed"
    h = registry.history(client, name)
    assert [e["decision"] for e in h] == ["promote", "noop", "noop"]
    assert [e["production"] for e in h] == ["2", "2", "2"]
    assert h[0]["candidate"] == "2" and h[0]["incumbent"] is None and h[0]["refused"] == {"3": "validation failed"}
    assert h[0]["key"] == d2.history_key or h[1]["key"] == d2.history_key
    text = registry.format_history(h)
    assert len(text.splitlines()) == 3 and "promote" in text.splitlines()[0]


def test_losing_challenger_gets_its_own_record(client):
    name = _model(client, [("passed", 0.6)])
    registry.promote(client, name)
    client.create_model_version(name, "file:///nowhere", tags={"validation": "passed", "val.all.official_map10": "0.61"})
    d = registry.promote(client, name, margin=0.05)
    assert d.action == "noop" and d.candidate == "2"
    assert _tags(client, name, 2)["promotion.decision"] == "noop"
    assert _tags(client, name, 1)["promotion.decision"] == "promote"  # the holder's record intact


def test_repair_after_killed_register(client):
    """Killed after creating a version (before challenger): abandoned. Killed after moving
    challenger (before the last tag): completed. Either way the run is ended KILLED."""
    import mlflow

    mlflow.set_experiment("reliability-repair")
    dead = {tracking.HOST_TAG: tracking.owner_tags()[tracking.HOST_TAG], tracking.PID_TAG: str(_dead_pid())}
    runs = []
    for _ in range(2):
        run = mlflow.start_run(tags=dead)
        runs.append(run.info.run_id)
        mlflow.end_run()
        client.update_run(run.info.run_id, status="RUNNING")  # as a SIGKILL leaves it
    name = _model(client, [("passed", 0.5, {REGISTRATION: "incomplete", "registration.run_id": runs[0]}),
                           ("passed", 0.4, {REGISTRATION: "incomplete", "registration.run_id": runs[1]})])
    client.set_registered_model_alias(name, "challenger", "2")
    done = registry.repair(client, name)
    assert len(done) == 2
    assert _tags(client, name, 1)[REGISTRATION] == "abandoned"
    assert _tags(client, name, 2)[REGISTRATION] == "complete"
    assert "completed by repair" in _tags(client, name, 2)["registration.repaired"]
    assert {client.get_run(r).info.status for r in runs} == {"KILLED"}
    assert registry.repair(client, name) == []  # nothing left to do
    d = registry.promote(client, name)
    assert d.candidate == "2" and _production(client, name) == "2"  # the abandoned one never
    assert [e["decision"] for e in registry.history(client, name)] == ["repair", "repair", "promote"]


def test_register_in_progress_is_left_alone(client):
    import mlflow

    mlflow.set_experiment("reliability-repair")
    with mlflow.start_run(tags=tracking.owner_tags()) as run:  # this live process owns it
        name = _model(client, [("passed", 0.5, {REGISTRATION: "incomplete", "registration.run_id": run.info.run_id})])
        assert registry.repair(client, name) == []
        assert _tags(client, name, 1)[REGISTRATION] == "incomplete"


@pytest.mark.parametrize("alias_moved", [False, True])
def test_repair_after_killed_promote(client, alias_moved):
    """The candidate's record is written (pending) before production moves, so either crash point
    ends consistent: applied when the alias moved, interrupted (and decided anew) when not."""
    name = _model(client, [("passed", 0.5), ("passed", 0.6)])
    registry.promote(client, name, margin=1.0)  # v2 beats nothing yet: production = v2
    client.create_model_version(name, "file:///nowhere", tags={"validation": "passed", "val.all.official_map10": "0.7"})
    for k, v in {"promotion.decision": "promote", "promotion.reason": "version 3 beats production",
                 "promotion.state": "pending",
                 "promotion.record": json.dumps({"incumbent": "2", "by": _dead_owner()})}.items():
        client.set_model_version_tag(name, "3", k, v)
    if alias_moved:
        client.set_registered_model_alias(name, PRODUCTION, "3")
    d = registry.promote(client, name)
    assert _production(client, name) == "3"
    t3 = _tags(client, name, 3)
    assert t3["promotion.state"] == "applied" and t3["promotion.decision"] == "promote"
    assert _tags(client, name, 2)["promotion.replaced_by"] == "3"
    h = registry.history(client, name)
    repair = [e for e in h if e["decision"] == "repair"]
    assert len(repair) == 1 and ("applied" if alias_moved else "interrupted") in repair[0]["reason"]
    assert d.action == ("noop" if alias_moved else "promote")


def test_pending_promotion_of_a_live_process_is_left_alone(client):
    name = _model(client, [("passed", 0.5)])
    client.set_model_version_tag(name, "1", "promotion.state", "pending")
    client.set_model_version_tag(name, "1", "promotion.record", json.dumps({"by": registry._by()}))  # this process
    assert registry.repair(client, name) == []


def test_dry_run_repairs_and_records_nothing(client):
    name = _model(client, [("passed", 0.5), ("failed", 0.6)])
    registry.promote(client, name, dry_run=True)
    assert registry.history(client, name) == []
    assert "promotion.decision" not in _tags(client, name, 2)


def test_history_entries_are_json_lines_in_model_tags(client):
    name = _model(client, [("passed", 0.5)])
    d = registry.promote(client, name)
    raw = client.get_registered_model(name).tags[d.history_key]
    entry = json.loads(raw)
    assert entry["decision"] == "promote" and entry["candidate"] == "1" and entry["by"]
    assert d.history_key.startswith("promotion.history.")
