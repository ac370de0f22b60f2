"""The demo's source database: its three tables and realistic synthetic rows over the demo's history.

The rows are shaped like a small shop's: customers with accented and non-Latin names, orders whose
status follows their age and whose amounts are exact decimals, and a busy event log with JSON
payloads. ``updated_at`` follows a daily rhythm (quiet at night, busy in the afternoon, UTC), so
partitions differ in size the way real ones do, and a few events have no ``updated_at`` at all to
show that such rows are counted rather than lost. Timestamps are naive UTC with microseconds, as an
application writing SQLite would store them.

The generators of single rows are shared with :mod:`sync_pipeline.demo.simulator`, so rows inserted
later look like the seeded ones.
"""

from __future__ import annotations

import math
import random
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from sync_pipeline.config import SyncConfig
from sync_pipeline.demo.config import SOURCE_CONNECTION, utc_now
from sync_pipeline.engine.db.dialects.sqlite import BEGIN_OPTION
from sync_pipeline.engine.db.engine import open_engine

__all__ = [
    "COUNTS",
    "NULL_UPDATED_AT_EVENTS",
    "customers",
    "ensure_seeded",
    "events",
    "metadata",
    "orders",
]

Row = dict[str, Any]

metadata: Final = sa.MetaData()

# sqlite_autoincrement: an id is never reused after a delete, so a new row is never mistaken for an
# update of a deleted one that the target still holds.
customers: Final = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("marketing_opt_in", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
    sqlite_autoincrement=True,
)

orders: Final = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.Integer, nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("items", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
    sqlite_autoincrement=True,
)

events: Final = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("amount", sa.Numeric(12, 2), nullable=True),
    sa.Column("updated_at", sa.DateTime, nullable=True, index=True),
    sqlite_autoincrement=True,
)

COUNTS: Final = {"customers": 300, "orders": 3000, "events": 10_000}
"""Rows seeded per table (events include the NULL-``updated_at`` ones)."""

NULL_UPDATED_AT_EVENTS: Final = 6

# -- vocabularies ---------------------------------------------------------------------------------

_FIRST = (
    "Anna", "Bruno", "Chloé", "Daniel", "Elif", "Fatima", "Giulia", "Hiroshi", "Ingrid", "José",
    "Karin", "Liam", "Léa", "Mateo", "Nadia", "Olga", "Pierre", "Priya", "Rafael", "Søren",
    "Tomás", "Wei", "Yuki", "Zoë", "Łukasz", "Ángel", "Ольга", "明",
)  # fmt: skip
_LAST = (
    "Andersen", "Bianchi", "Costa", "Dubois", "Eriksson", "Fischer", "García", "Horvat", "Ito",
    "Jansen", "Kowalski", "López", "Müller", "Novak", "O'Brien", "Patel", "Rossi", "Schmidt",
    "Tanaka", "Uzun", "Virtanen", "Wang", "Yılmaz", "Zhang", "Иванова", "王",  # noqa: RUF001 -- a real Turkish surname
)  # fmt: skip
_DOMAINS = ("example.com", "example.org", "mail.example.net", "example.co.uk")
_COUNTRIES = (("DE", 18), ("FR", 15), ("US", 20), ("GB", 10), ("ES", 8), ("IT", 8), ("NL", 6), ("JP", 5),
              ("PL", 4), ("TR", 3), ("CN", 3))  # fmt: skip
_TIERS = (("free", 70), ("pro", 25), ("enterprise", 5))
_CURRENCIES = (("EUR", 60), ("USD", 30), ("GBP", 10))
_CATALOG = (
    ("SKU-1001", "Espresso beans 1 kg", 2490), ("SKU-1002", "Grinder", 12900),
    ("SKU-1003", "Milk jug", 1450), ("SKU-1004", "Paper filters x100", 399),
    ("SKU-1005", "Kettle", 5990), ("SKU-1006", "Descaler", 899), ("SKU-1007", "Tamper", 3200),
    ("SKU-1008", "Gift card", 5000), ("SKU-1009", "Cup set (4)", 2799),
)  # fmt: skip
_EVENT_KINDS = (("page_view", 55), ("click", 24), ("login", 8), ("search", 6), ("purchase", 4),
                ("refund", 1), ("signup", 2))  # fmt: skip
_PATHS = ("/", "/products", "/products/espresso-beans", "/products/grinder", "/cart", "/checkout",
          "/account", "/help/shipping")  # fmt: skip
_SEARCHES = ("grinder", "decaf", "filter", "kettle", "gift", "crème", "コーヒー")


def _weighted(rng: random.Random, options: Sequence[tuple[str, int]]) -> str:
    return rng.choices([value for value, _ in options], weights=[weight for _, weight in options])[0]


# -- time -----------------------------------------------------------------------------------------


def activity(moment: datetime) -> float:
    """Relative traffic at ``moment`` (UTC): 0.3 in the small hours, 1.0 mid-afternoon."""
    hour = moment.hour + moment.minute / 60
    return 0.3 + 0.7 * (0.5 - 0.5 * math.cos(2 * math.pi * (hour - 4) / 24))


def hour_of(moment: datetime) -> datetime:
    """The start of the hourly partition holding ``moment`` (naive values are UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def naive_utc(moment: datetime) -> datetime:
    """How the demo stores a timestamp: a naive UTC wall time."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def spread(rng: random.Random, start: datetime, end: datetime, n: int) -> list[datetime]:
    """``n`` naive UTC instants in ``[start, end)``, denser in busy hours (see :func:`activity`)."""
    hours: list[datetime] = []
    weights: list[float] = []
    hour = hour_of(start)
    while hour < end:
        covered = (min(hour + timedelta(hours=1), end) - max(hour, start)).total_seconds()
        hours.append(hour)
        weights.append(activity(hour + timedelta(minutes=30)) * covered)
        hour += timedelta(hours=1)
    moments = []
    for chosen in rng.choices(hours, weights=weights, k=n):
        low, high = max(chosen, start), min(chosen + timedelta(hours=1), end)
        offset = rng.randrange(int((high - low) / timedelta(microseconds=1)))
        moments.append(naive_utc(low + timedelta(microseconds=offset)))
    return moments


# -- rows -----------------------------------------------------------------------------------------


def new_customer(rng: random.Random, created_at: datetime) -> Row:
    """A customer as the sign-up form would store it (no id: the database assigns it)."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    handle = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
    handle = handle.lower().replace("'", "").strip(".") or "user"
    return {
        "name": f"{first} {last}",
        "email": f"{handle}{rng.randrange(1, 1000)}@{rng.choice(_DOMAINS)}",
        "country": _weighted(rng, _COUNTRIES),
        "tier": _weighted(rng, _TIERS),
        "marketing_opt_in": rng.random() < 0.4,
        "created_at": created_at,
        "updated_at": created_at,
    }


def new_order(rng: random.Random, created_at: datetime, customer_id: int, status: str = "pending") -> Row:
    """An order of one to four catalogue lines; the amount is their exact sum."""
    lines = []
    total_cents = 0
    for sku, name, price in rng.sample(_CATALOG, rng.choice((1, 1, 1, 2, 2, 3, 4))):
        qty = rng.choice((1, 1, 1, 2, 3))
        total_cents += qty * price
        lines.append({"sku": sku, "name": name, "qty": qty, "unit_price": str(Decimal(price) / 100)})
    return {
        "customer_id": customer_id,
        "status": status,
        "amount": Decimal(total_cents) / 100,
        "currency": _weighted(rng, _CURRENCIES),
        "items": lines,
        "created_at": created_at,
        "updated_at": created_at,
    }


def new_event(rng: random.Random, at: datetime | None, account_id: int) -> Row:
    """One activity event; purchases and refunds carry an amount, the rest a NULL one."""
    kind = _weighted(rng, _EVENT_KINDS)
    payload: dict[str, Any] = {"session": f"{rng.getrandbits(48):012x}"}
    amount: Decimal | None = None
    if kind in ("page_view", "click"):
        payload["path"] = rng.choice(_PATHS)
        if kind == "page_view":
            payload["load_ms"] = rng.randrange(40, 2500)
        else:
            payload["element"] = rng.choice(("buy-button", "nav", "banner", "footer-link"))
    elif kind == "search":
        payload["query"] = rng.choice(_SEARCHES)
        payload["results"] = rng.randrange(0, 60)
    elif kind in ("purchase", "refund"):
        cents = rng.randrange(399, 30000)
        amount = Decimal(cents if kind == "purchase" else -cents) / 100
        payload["currency"] = _weighted(rng, _CURRENCIES)
    elif kind == "login":
        payload["method"] = rng.choice(("password", "sso", "magic-link"))
    return {"account_id": account_id, "kind": kind, "payload": payload, "amount": amount, "updated_at": at}


def _order_status(rng: random.Random, age: timedelta) -> str:
    """Young orders are mostly pending or paid, older ones mostly shipped."""
    if age < timedelta(hours=2):
        weights = (("pending", 50), ("paid", 35), ("shipped", 5), ("cancelled", 10))
    elif age < timedelta(hours=12):
        weights = (("pending", 15), ("paid", 45), ("shipped", 30), ("cancelled", 10))
    else:
        weights = (("pending", 5), ("paid", 20), ("shipped", 65), ("cancelled", 10))
    return _weighted(rng, weights)


def _created_before(rng: random.Random, updated_at: datetime, mean_hours: float) -> datetime:
    """A creation time before ``updated_at``: the same instant for rows never changed since."""
    if rng.random() < 0.4:
        return updated_at
    return updated_at - timedelta(seconds=rng.expovariate(1 / (mean_hours * 3600)))


def _with_ids(rows: list[Row]) -> list[Row]:
    """Number rows in creation order, as an auto-increment key would have."""
    rows.sort(key=lambda row: row.get("created_at") or row["updated_at"] or datetime.max)
    return [{"id": index, **row} for index, row in enumerate(rows, start=1)]


def _seed_rows(rng: random.Random, start: datetime, now: datetime) -> dict[str, list[Row]]:
    customer_rows = []
    for updated_at in spread(rng, start, now, COUNTS["customers"]):
        row = new_customer(rng, _created_before(rng, updated_at, mean_hours=24 * 90))
        row["updated_at"] = updated_at
        customer_rows.append(row)

    order_rows = []
    for updated_at in spread(rng, start, now, COUNTS["orders"]):
        created_at = _created_before(rng, updated_at, mean_hours=18)
        customer_id = rng.randrange(1, COUNTS["customers"] + 1)
        row = new_order(rng, created_at, customer_id, _order_status(rng, naive_utc(now) - updated_at))
        row["updated_at"] = updated_at
        order_rows.append(row)

    timestamps: list[datetime | None] = [*spread(rng, start, now, COUNTS["events"] - NULL_UPDATED_AT_EVENTS)]
    timestamps.extend([None] * NULL_UPDATED_AT_EVENTS)
    event_rows = [new_event(rng, at, rng.randrange(1, COUNTS["customers"] + 1)) for at in timestamps]
    return {
        "customers": _with_ids(customer_rows),
        "orders": _with_ids(order_rows),
        "events": _with_ids(event_rows),
    }


# -- seeding --------------------------------------------------------------------------------------


def _source(config: SyncConfig) -> tuple[sa.URL, Path]:
    """The demo source's URL and file; any other config is refused rather than written into."""
    connection = config.connections.get(SOURCE_CONNECTION)
    url = connection.sqlalchemy_url if connection is not None else None
    if url is None or url.get_backend_name() != "sqlite" or not url.database:
        raise ValueError(f"not the demo config: no SQLite connection named {SOURCE_CONNECTION!r}")
    return url, Path(url.database)


def _present(conn: sa.Connection) -> set[str]:
    inspector = sa.inspect(conn)
    return {table.name for table in metadata.sorted_tables if inspector.has_table(table.name)}


def ensure_seeded(config: SyncConfig, now: datetime | None = None) -> bool:
    """Create and fill the demo's source tables unless they exist; True if this call seeded.

    Safe to call from every process that may be first: the check is repeated inside one
    ``BEGIN IMMEDIATE`` transaction, which SQLite grants to one writer at a time, and the tables
    and their rows are committed together, so a reader never sees an empty table. Rows span the
    demo's start (the earliest table ``start``) to ``now``; the same start gives the same rows.
    The target database is left alone: the first sync creates its tables.
    """
    now = utc_now(now)
    url, path = _source(config)
    start = min(table.start_in(config.partition_timezone) for table in config.tables).astimezone(UTC)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {table.name for table in metadata.sorted_tables}
    with open_engine(url) as engine, engine.connect() as conn:
        with conn.begin():  # a cheap read first: every call but the first ends here
            if _present(conn) == names:
                return False
        conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            missing = [table for table in metadata.sorted_tables if table.name not in _present(conn)]
            if not missing:
                return False
            metadata.create_all(conn, tables=missing)
            # A fixed seed per start: rebuilding the demo from the same demo.json gives the same rows.
            rng = random.Random(f"sync_pipeline demo {start.isoformat()}")  # noqa: S311 -- synthetic data
            rows = _seed_rows(rng, start, max(now, start + timedelta(minutes=1)))
            for table in missing:
                conn.execute(table.insert(), rows[table.name])
    return True
