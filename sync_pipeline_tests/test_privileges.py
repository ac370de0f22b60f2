"""Issue 6.7: the minimum grants, as README "Least privilege" lists them, are enough, and no more.

Each test creates a login role (PostgreSQL) or user (MariaDB) for the source and one for the
target, grants exactly what the README lists, and runs a full cycle as those users: a first sync
into a target table that already exists (the sync may not create or alter tables), inserts,
updates, deletes and a row moved to another hour, the verification, and a second sync that finds
nothing. It also proves the grants are as narrow as claimed: the source user cannot write its
table, and the target user can neither read the source database nor create a table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from sync_pipeline.engine.verify import verify_partition
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.helpers import (
    CHANGE_COUNTS,
    TS,
    W_AFTER,
    Pair,
    Side,
    W,
    assert_same_rows,
    counts,
    delete,
    engine_for,
    insert,
    make_pair,
    stamp,
    table_config,
    update,
)

PASSWORD = "least-privilege-pw"  # noqa: S105 -- a test user's password on the loopback servers

# The grants README "Least privilege" documents, per engine. {db}, {user} and {table} are filled in.
GRANTS = {
    "postgresql": {
        "source": [
            "GRANT CONNECT ON DATABASE {db} TO {user}",
            "GRANT USAGE ON SCHEMA public TO {user}",
            "GRANT SELECT ON {table} TO {user}",
        ],
        "target": [
            "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {user}",
            "GRANT USAGE ON SCHEMA public TO {user}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {user}",
        ],
    },
    "mysql": {
        "source": ["GRANT SELECT ON {db}.{table} TO {user}"],
        "target": [
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {db}.{table} TO {user}",
            "GRANT CREATE TEMPORARY TABLES ON {db}.* TO {user}",
        ],
    },
}


def orders() -> sa.Table:
    return sa.Table(
        "orders",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("note", sa.String(50)),
    )


@dataclass
class Users:
    """Creates restricted users on the test's databases and drops them at teardown."""

    created: list[tuple[Side, str]] = field(default_factory=list)

    def restricted(self, side: Side, role: str) -> Side:
        """A user holding exactly the README's ``role`` grants on ``side``: the same database, as it."""
        user = f"sp_{role}_{uuid.uuid4().hex[:8]}"
        url = sa.make_url(side.url)
        preparer = side.engine.dialect.identifier_preparer
        if side.kind == "postgresql":
            account = preparer.quote(user)
            create = f"CREATE ROLE {account} LOGIN PASSWORD '{PASSWORD}'"
        else:
            account = f"'{user}'@'127.0.0.1'"
            create = f"CREATE USER {account} IDENTIFIED BY '{PASSWORD}'"
        names = {"db": preparer.quote(str(url.database)), "user": account, "table": preparer.quote("orders")}
        with side.engine.begin() as conn:
            conn.exec_driver_sql(create)
            self.created.append((side, account))
            for grant in GRANTS[side.kind][role]:
                conn.exec_driver_sql(grant.format(**names))
        as_user = url.set(username=user, password=PASSWORD).render_as_string(hide_password=False)
        return Side(side.kind, as_user, engine_for(side.kind, as_user))

    def drop_all(self) -> None:
        for side, account in reversed(self.created):
            with side.engine.begin() as conn:
                if side.kind == "postgresql":
                    conn.exec_driver_sql(f"DROP OWNED BY {account}")  # its grants in this database
                    conn.exec_driver_sql(f"DROP ROLE {account}")
                else:
                    conn.exec_driver_sql(f"DROP USER {account}")


@pytest.fixture
def users() -> Iterator[Users]:
    made = Users()
    try:
        yield made
    finally:
        made.drop_all()


def refused(side: Side, statement: str) -> bool:
    """Whether the server refuses ``statement`` to this user for lack of a privilege."""
    try:
        with side.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    except sa.exc.DBAPIError as error:
        text = str(error.orig).lower()
        return any(
            word in text for word in ("permission denied", "must be owner", "command denied", "access denied")
        )
    return False


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("postgresql", "postgresql"), ("mysql", "mysql"), ("mysql", "postgresql"), ("postgresql", "mysql")],
    ids=lambda kind: kind,
)
def test_a_full_cycle_runs_with_the_documented_grants_only(
    make_db_url: MakeDbUrl, users: Users, source_kind: str, target_kind: str
) -> None:
    """Read-only on the source table; on the target, read-write on its table plus temporary tables
    (the stage) — locks need no grant. A full cycle of changes syncs and verifies as those users.
    """
    admin = make_pair(make_db_url, source_kind, target_kind)
    table = orders()
    table.create(admin.source.engine)
    table.create(admin.target.engine)  # created by its owner: the sync's user may not create tables
    insert(admin.source, table, [{"id": i, "updated_at": stamp(W, i), "note": f"n{i}"} for i in range(1, 51)])
    reader, writer = users.restricted(admin.source, "source"), users.restricted(admin.target, "target")
    pair = Pair(reader, writer)
    config = table_config("orders", add_missing_columns=False)

    assert pair.sync(config).inserted == 50
    update(admin.source, table, table.c.id <= 5, updated_at=stamp(W, 3000), note="changed")
    delete(admin.source, table, table.c.id.between(6, 8))
    update(admin.source, table, table.c.id == 9, updated_at=stamp(W_AFTER, 9))  # moved to the next hour
    insert(admin.source, table, [{"id": 100, "updated_at": stamp(W, 100), "note": "new"}])

    stats = pair.sync(config)

    # "updated" counts the moved row too: it is brought to its current version (SyncStats).
    assert counts(stats, *CHANGE_COUNTS) == {"inserted": 1, "updated": 6, "deleted": 3}
    assert stats.moved_out == 1
    assert_same_rows(admin, "orders", "orders", ["id"], ["id", "updated_at", "note"])
    assert verify_partition(config, reader.url, writer.url, W).in_sync
    assert counts(pair.sync(config), *CHANGE_COUNTS) == {"inserted": 0, "updated": 0, "deleted": 0}

    # ... and the grants are no wider than that.
    assert refused(reader, "DELETE FROM orders")
    assert refused(writer, "CREATE TABLE other (id INTEGER PRIMARY KEY)")
    assert refused(writer, "ALTER TABLE orders ADD COLUMN extra INTEGER")
