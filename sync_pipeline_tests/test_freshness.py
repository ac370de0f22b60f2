"""Tests of the freshness sensor (orchestration.sensors, orchestration.freshness), ticked as the daemon ticks
them at instants the test sets, alerting over real HTTP.

Deployed like test_sensors.py's (whose site, receiver and clock fixtures these reuse): a SQLite source,
a PostgreSQL target, a dead WeCom sink listed first and a JSON receiver on loopback, the syncs run
for real on a temporary instance. What is pinned: a gap of missed hours is alerted once however long
it grows, named as ranges and with what the catch-up will do about it, and once more when closed.
"""

from __future__ import annotations

from typing import Any

import pytest
from dagster import AssetCheckEvaluation

from sync_pipeline.engine.diff.window import Window
from sync_pipeline.orchestration.checks import FRESHNESS_CHECK
from sync_pipeline_tests import test_sensors as sensor_site
from sync_pipeline_tests.dagster_helpers import in_hour, row, utc
from sync_pipeline_tests.test_sensors import (
    CATCH_UP_NOTE,
    UI_URL,
    Clock,
    Deploy,
    Site,
    assert_delivered_only_to_the_receiver,
    assert_no_secrets,
    check_evaluations,
)

# test_sensors.py's fixtures, by name: pytest finds fixtures in the module's namespace.
_debug_logs = sensor_site._debug_logs
clock = sensor_site.clock
deploy = sensor_site.deploy
instance = sensor_site.instance
receiver = sensor_site.receiver


def partition_rows(*keys: str) -> list[dict[str, Any]]:
    """One source row in each hour of ``keys``."""
    return [row(i, in_hour(Window.from_partition_key(key), 5)) for i, key in enumerate(keys, 1)]


def test_freshness_sensor_alerts_once_per_gap_and_once_when_it_closes(
    deploy: Deploy, clock: Clock, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A gap is alerted once, however many ticks see it and however long it grows; closed, once more.

    The check evaluation is recorded only when what it says changes. A later outage of ten hours,
    seen at once, is one more alert naming all ten hours as a range. The dead WeCom sink listed
    first does not stop the JSON receiver from getting each alert, nor the tick from completing.
    """
    site: Site = deploy(
        "2026-11-30T08:00:00",
        partition_rows("2026-11-30-09:00", "2026-11-30-10:00"),
        freshness={"grace_minutes": 15},
    )
    site.sync("2026-11-30-08:00")
    name = "freshness_sensor"

    first = site.tick(name)  # 10:20: 09:00 was due by 10:15
    [alert] = site.receiver.alerts()
    assert alert == {
        "source": "sync_pipeline",
        "kind": "missed_sync",
        "table": "orders",
        "partition_key": "2026-11-30-09:00",
        "summary": (
            "Missed sync: orders has 1 due hours not synced: 2026-11-30-09:00, 1 hour; "
            + CATCH_UP_NOTE.format("it")
        ),
        "facts": {
            "hours": "2026-11-30-09:00, 1 hour",
            "missing_hours": 1,
            "missing_in_horizon": 1,
            "deadline": "2026-11-30T10:15:00+00:00",
            "grace_minutes": 15,
        },
        "link": f"{UI_URL}/assets/sync/orders?view=partitions&partition=2026-11-30-09:00",
        "occurred_at": "2026-11-30T10:20:00+00:00",
    }
    assert check_evaluations(first) == [(FRESHNESS_CHECK, False, "2026-11-30-09:00")]
    assert first.run_requests == []

    cursor = first.cursor
    for at in ("10:30", "10:45"):
        clock.at = utc(f"2026-11-30T{at}")
        again = site.tick(name, cursor)
        assert check_evaluations(again) == [], at
        cursor = again.cursor

    clock.at = utc("2026-11-30T11:20")  # 10:00 was due by 11:15: the same gap, grown
    grown = site.tick(name, cursor)
    [evaluation] = grown.asset_events
    assert isinstance(evaluation, AssetCheckEvaluation)
    assert evaluation.description == ("2 due hours not synced: 2026-11-30-09:00 … 2026-11-30-10:00, 2 hours")
    assert evaluation.metadata["missing_hours"].value == 2
    assert len(site.receiver.alerts()) == 1

    site.sync("2026-11-30-09:00")
    clock.at = utc("2026-11-30T11:30")
    half = site.tick(name, grown.cursor)
    assert check_evaluations(half) == [(FRESHNESS_CHECK, False, "2026-11-30-10:00")]
    assert len(site.receiver.alerts()) == 1

    site.sync("2026-11-30-10:00")
    clock.at = utc("2026-11-30T11:40")
    closed = site.tick(name, half.cursor)
    assert check_evaluations(closed) == [(FRESHNESS_CHECK, True, "2026-11-30-10:00")]
    recovered = site.receiver.alerts("recovered")
    assert [(a["partition_key"], a["summary"], a["facts"]) for a in recovered] == [
        (
            "2026-11-30-09:00",
            "Recovered: orders has synced every hour of its gap 2026-11-30-09:00 … 2026-11-30-10:00, 2 hours",
            {"hours": "2026-11-30-09:00 … 2026-11-30-10:00, 2 hours", "missing_hours": 2},
        )
    ]
    clock.at = utc("2026-11-30T12:00")
    still = site.tick(name, closed.cursor)
    assert check_evaluations(still) == []
    assert len(site.receiver.alerts()) == 2

    clock.at = utc("2026-11-30T21:20")  # an outage: 11:00 .. 20:00 missed, seen at once
    outage = site.tick(name, still.cursor)
    clock.at = utc("2026-11-30T21:40")
    after = site.tick(name, outage.cursor)
    assert check_evaluations(after) == []
    missed = site.receiver.alerts("missed_sync")
    assert [(a["partition_key"], a["facts"]["hours"], a["facts"]["missing_hours"]) for a in missed] == [
        ("2026-11-30-09:00", "2026-11-30-09:00, 1 hour", 1),
        ("2026-11-30-11:00", "2026-11-30-11:00 … 2026-11-30-20:00, 10 hours", 10),
    ]
    assert missed[1]["summary"] == (
        "Missed sync: orders has 10 due hours not synced: 2026-11-30-11:00 … 2026-11-30-20:00, "
        "10 hours; " + CATCH_UP_NOTE.format("them")
    )

    err = assert_no_secrets(caplog, capfd, first, again, grown, half, closed, still, outage, after)
    assert_delivered_only_to_the_receiver(site, err)


def test_a_gap_beyond_the_catch_up_horizon_is_alerted_once_naming_its_hours(
    deploy: Deploy, clock: Clock
) -> None:
    """Hours older than catch_up.max_hours are not caught up; freshness still names them, once.

    The alert says which of its hours need a backfill from the UI and that the newer ones are
    requested by the catch-up.
    """
    site: Site = deploy(
        "2026-11-30T00:00:00",
        [],
        freshness={"grace_minutes": 0, "horizon_hours": 48},
        catch_up={"max_hours": 3},
    )
    site.sync("2026-11-30-00:00")
    site.sync("2026-11-30-10:00")
    clock.at = utc("2026-11-30T11:05")  # 01:00 .. 09:00 missed; the catch-up covers 08:00 .. 10:00

    first = site.tick("freshness_sensor")
    second = site.tick("freshness_sensor", first.cursor)

    [alert] = site.receiver.alerts()
    assert alert["facts"]["hours"] == "2026-11-30-01:00 … 2026-11-30-09:00, 9 hours"
    assert alert["summary"] == (
        "Missed sync: orders has 9 due hours not synced: 2026-11-30-01:00 … 2026-11-30-09:00, 9 hours; "
        "2026-11-30-01:00 … 2026-11-30-07:00, 7 hours older than catch_up.max_hours (3h): backfill from "
        "the UI; the catch-up requests the other 2 (failed ones after 60 min, the wait doubling up to 24 h)"
    )
    assert check_evaluations(second) == []
