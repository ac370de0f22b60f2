"""Keeps the demo's source database alive: one call is one burst of application activity.

Each round does what a live application does to the three tables in a few minutes: new customers,
orders and events; orders moving pending -> paid -> shipped (or cancelled), of recent and older
orders alike; customers changing tier or e-mail; a few deletions; and late commits, rows stamped
with a time in the previous hour because their transaction began there. So the current hour, the
previous one and some older ones always have something for the hourly sync, its lookback and the
drift sensor to find.

Rows are picked in SQL with an ordering salted from the random generator, so a round reads only
the rows it changes (the demo database grows with every round) and a given seed replays exactly.
``updated_at`` only ever moves forward, as an application's would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from sync_pipeline.demo.config import utc_now
from sync_pipeline.demo.seed import (
    activity,
    customers,
    events,
    hour_of,
    metadata,
    naive_utc,
    new_customer,
    new_event,
    new_order,
    orders,
)
from sync_pipeline.engine.db.dialects.sqlite import BEGIN_OPTION
from sync_pipeline.engine.db.engine import open_engine
from sync_pipeline.errors import SchemaError

__all__ = ["ActivityStats", "TableActivity", "simulate_activity"]

Row = dict[str, Any]

# Mean changes per round at the busiest hour of the day and scale 1: (inserted, updated, moved, deleted).
# Run every five minutes, inserts then arrive at about the seeded rate, and the database grows slowly.
_MEANS: dict[str, tuple[float, float, float, float]] = {
    "customers": (0.8, 1, 0.3, 0.2),
    "orders": (8, 8, 1.5, 0.5),
    "events": (25, 2, 1.5, 1),
}
_LATE_INSERTS = {"customers": 0.0, "orders": 0.1, "events": 0.15}  # share stamped in the previous hour
_JITTER = timedelta(minutes=2)  # new stamps fall in [now - _JITTER, now)
_PRIME = 2_147_483_647  # keeps id * multiplier inside SQLite's 64-bit integers


@dataclass(frozen=True)
class TableActivity:
    """What one round did to one table, and which hourly partitions (UTC starts) it touched."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    moved: int = 0  # updated with a stamp in the previous hour: a late commit
    hours: frozenset[datetime] = frozenset()

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deleted + self.moved


@dataclass(frozen=True)
class ActivityStats:
    """One round of simulated activity, per table; the totals are sums over tables."""

    tables: dict[str, TableActivity] = field(default_factory=dict)

    @property
    def inserted(self) -> int:
        return sum(t.inserted for t in self.tables.values())

    @property
    def updated(self) -> int:
        return sum(t.updated for t in self.tables.values())

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tables.values())

    @property
    def moved(self) -> int:
        return sum(t.moved for t in self.tables.values())

    @property
    def changed(self) -> int:
        return sum(t.changed for t in self.tables.values())

    @property
    def hours(self) -> frozenset[datetime]:
        """Every partition whose rows changed in some table."""
        return frozenset().union(*(t.hours for t in self.tables.values()))

    def __str__(self) -> str:
        """One log line: totals, then each table's inserted/updated/moved/deleted."""
        parts = [
            f"{name} +{t.inserted} ~{t.updated} >{t.moved} -{t.deleted}" for name, t in self.tables.items()
        ]
        return (
            f"{self.inserted} inserted, {self.updated} updated, {self.moved} moved to the previous hour, "
            f"{self.deleted} deleted ({'; '.join(parts)})"
        )


def simulate_activity(
    source_url: str | URL,
    now: datetime | None = None,
    rng: random.Random | None = None,
    scale: float = 1.0,
) -> ActivityStats:
    """Apply one round of inserts, updates, moves and deletes to the demo source, in one transaction.

    The round is busier in the afternoon than at night (UTC), and ``scale`` multiplies it. The
    same ``rng`` seed, database and ``now`` give the same changes.
    """
    if not scale >= 0:
        raise ValueError(f"scale must be a non-negative number, got {scale!r}")
    now = utc_now(now)
    rng = rng if rng is not None else random.Random()  # noqa: S311 -- synthetic data
    url = make_url(source_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise SchemaError(f"demo source {url.database} does not exist: run ensure_seeded first")
    with open_engine(url) as engine, engine.connect() as conn:
        conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            inspector = sa.inspect(conn)
            missing = [t.name for t in metadata.sorted_tables if not inspector.has_table(t.name)]
            if missing:
                raise SchemaError(f"demo source lacks table(s) {', '.join(missing)}: run ensure_seeded first")
            return _Round(conn, now, rng, scale * activity(now)).run()


class _Round:
    """One round inside one open transaction; tables and draws go in a fixed order so a seed replays."""

    def __init__(self, conn: sa.Connection, now: datetime, rng: random.Random, intensity: float) -> None:
        self.conn = conn
        self.rng = rng
        self.intensity = intensity
        self.now = naive_utc(now)
        self.previous_hour = naive_utc(hour_of(now) - timedelta(hours=1))
        self.max_customer_id = conn.execute(sa.select(sa.func.max(customers.c.id))).scalar() or 1

    def run(self) -> ActivityStats:
        return ActivityStats(
            {
                "customers": self._table(customers, self._new_customer, self._change_customer),
                "orders": self._table(
                    orders, self._new_order, self._change_order, orders.c.status.in_(("pending", "paid"))
                ),
                "events": self._table(events, self._new_event, self._change_event),
            }
        )

    # -- one table ------------------------------------------------------------------------------
    def _table(
        self,
        table: sa.Table,
        make: Callable[[datetime], Row],
        change: Callable[[sa.RowMapping], Row],
        changeable: sa.ColumnElement[bool] | None = None,
    ) -> TableActivity:
        """Delete, change, move and insert rows of ``table``; each picked row is touched once."""
        n_insert, n_update, n_move, n_delete = (self._draw(mean) for mean in _MEANS[table.name])
        hours: set[datetime] = set()
        ts = table.c.updated_at
        taken: list[int] = []
        only = () if changeable is None else (changeable,)

        doomed = self._pick(table, n_delete, taken, ts.is_not(None))
        if doomed:
            self.conn.execute(table.delete().where(table.c.id.in_([row["id"] for row in doomed])))
        hours.update(hour_of(row["updated_at"]) for row in doomed)

        # Half the updates among recent rows, half anywhere: both young and old partitions change.
        recent = self.now - timedelta(hours=3)
        fresh = n_update // 2
        settled = ts < self.now - _JITTER  # so that the new stamp is later than the old one
        updated = self._pick(table, fresh, taken, *only, settled, ts >= recent)
        updated += self._pick(table, n_update - len(updated), taken, *only, settled)
        moved = self._pick(table, n_move, taken, *only, ts < self.previous_hour)
        stamped = [(row, self._stamp()) for row in updated] + [(row, self._late()) for row in moved]
        for row, stamp in stamped:
            values = change(row)
            values["updated_at"] = stamp
            self.conn.execute(table.update().where(table.c.id == row["id"]).values(values))
            hours.update((hour_of(row["updated_at"]), hour_of(stamp)))

        late_share = _LATE_INSERTS[table.name]
        new_rows = [
            make(self._late() if self.rng.random() < late_share else self._stamp()) for _ in range(n_insert)
        ]
        if new_rows:
            self.conn.execute(table.insert(), new_rows)
        hours.update(hour_of(row["updated_at"]) for row in new_rows)

        return TableActivity(
            inserted=len(new_rows),
            updated=len(updated),
            deleted=len(doomed),
            moved=len(moved),
            hours=frozenset(hours),
        )

    def _pick(
        self, table: sa.Table, count: int, taken: list[int], *conditions: sa.ColumnElement[bool]
    ) -> list[sa.RowMapping]:
        """Up to ``count`` rows meeting ``conditions``, in an order drawn from the generator.

        Ordering by a salted hash of the id reads only the rows returned, however big the table
        has grown, and replays exactly for the same seed, which ``ORDER BY random()`` would not.
        """
        if count <= 0:
            return []
        multiplier, offset = self.rng.randrange(1, _PRIME), self.rng.randrange(_PRIME)
        query = (
            sa.select(table)
            .where(*conditions, table.c.id.not_in(taken))
            .order_by((table.c.id * multiplier + offset) % _PRIME, table.c.id)
            .limit(count)
        )
        rows = list(self.conn.execute(query).mappings())
        taken.extend(row["id"] for row in rows)
        return rows

    def _draw(self, mean: float) -> int:
        """A Poisson-like count around ``mean`` scaled by the round's intensity."""
        expected = mean * self.intensity
        if expected <= 0:
            return 0
        if expected > 30:  # the normal approximation; Knuth's product underflows for large means
            return max(0, round(self.rng.gauss(expected, math.sqrt(expected))))
        limit, count, product = math.exp(-expected), 0, self.rng.random()
        while product > limit:
            count += 1
            product *= self.rng.random()
        return count

    def _stamp(self) -> datetime:
        """A commit a few seconds to two minutes ago."""
        return self.now - self.rng.random() * _JITTER

    def _late(self) -> datetime:
        """A commit stamped in the previous hour: its transaction began before the hour turned."""
        return self.previous_hour + self.rng.random() * timedelta(hours=1)

    # -- what changes in each table -------------------------------------------------------------
    def _new_customer(self, at: datetime) -> Row:
        return new_customer(self.rng, at)

    def _new_order(self, at: datetime) -> Row:
        return new_order(self.rng, at, self.rng.randrange(1, self.max_customer_id + 1))

    def _new_event(self, at: datetime) -> Row:
        return new_event(self.rng, at, self.rng.randrange(1, self.max_customer_id + 1))

    def _change_customer(self, row: sa.RowMapping) -> Row:
        what = self.rng.choice(("tier", "email", "opt_in"))
        if what == "tier":
            ladder = ("free", "pro", "enterprise")
            step = 1 if row["tier"] != "enterprise" else -1
            return {"tier": ladder[ladder.index(row["tier"]) + step]}
        if what == "email":
            local, _, domain = row["email"].partition("@")
            return {"email": f"{local.rstrip('0123456789')}{self.rng.randrange(1, 1000)}@{domain}"}
        return {"marketing_opt_in": not row["marketing_opt_in"]}

    def _change_order(self, row: sa.RowMapping) -> Row:
        if row["status"] == "pending":
            return {"status": "paid" if self.rng.random() < 0.8 else "cancelled"}
        return {"status": "shipped" if self.rng.random() < 0.9 else "cancelled"}

    def _change_event(self, row: sa.RowMapping) -> Row:
        """Late enrichment of an event, as a pipeline adding geo data after the fact would."""
        payload = dict(row["payload"])
        payload["geo"] = self.rng.choice(("DE", "FR", "US", "GB", "JP", "BR"))
        return {"payload": payload}
