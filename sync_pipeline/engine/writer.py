"""Writing one partition's changes: stage in session-private tables, apply set-based, commit once.

While the diff streams, changed rows are appended to a temporary stage table (binary COPY on
PostgreSQL, multi-row INSERTs elsewhere) and keys to delete to a second one, a chunk at a time. When
the diff is done, one upsert and one delete move the stage into the target inside the same
transaction. A crash anywhere before the commit leaves the target untouched; stage tables vanish with
the session. Reads of the target use other connections, which never see the uncommitted stage.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from sync_pipeline.engine.db.dialects import Adapter
from sync_pipeline.engine.db.side import TableSide
from sync_pipeline.engine.diff.merge import Key
from sync_pipeline.engine.diff.window import Window

STAGE_ROWS = "sync_pipeline_stage_rows"
STAGE_KEYS = "sync_pipeline_stage_keys"


class PartitionWriter:
    """Stages upserts and deletes for one window of one target table, then applies them at once."""

    def __init__(
        self,
        conn: sa.Connection,
        target: TableSide,
        columns: list[str],
        window: Window,
        soft_delete_column: str | None,
    ) -> None:
        self.conn = conn
        self.target = target
        self.adapter: Adapter = target.adapter
        self.window = window
        self.soft_delete_column = soft_delete_column
        self.columns = columns + ([soft_delete_column] if soft_delete_column else [])
        self.rows = self._stage_table(STAGE_ROWS, self.columns)
        self.keys = self._stage_table(STAGE_KEYS, target.key_columns)
        self.staged_rows = 0
        self.staged_keys = 0

    def _stage_table(self, name: str, columns: list[str]) -> sa.Table:
        like = sa.select(*(self.target.table.c[c] for c in columns))
        self.adapter.create_stage(self.conn, name, like)
        return sa.Table(
            name, sa.MetaData(), *(sa.Column(c, _bind_type(self.target.table.c[c].type)) for c in columns)
        )

    def stage_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Stage full rows (in the synced columns' order) to upsert."""
        if self.soft_delete_column:
            rows = [(*row, False) for row in rows]
        self.adapter.copy_rows(self.conn, self.rows, rows)
        self.staged_rows += len(rows)

    def stage_deletes(self, keys: list[Key]) -> None:
        """Stage keys whose rows left the source: deleted, or marked deleted in soft mode."""
        rows = [key if isinstance(key, tuple) else (key,) for key in keys]
        self.adapter.copy_rows(self.conn, self.keys, rows)
        self.staged_keys += len(rows)

    def apply(self) -> tuple[int, int]:
        """Upsert the staged rows and delete the staged keys; returns the rows each statement touched."""
        upserted = deleted = 0
        target = self.target
        if self.staged_rows:
            stmt = self.adapter.merge_statement(target.table, self.rows, target.key_columns, target.ts_column)
            upserted = self.conn.execute(stmt).rowcount
        if self.staged_keys:
            matches = self.adapter.staged_keys_match(target.table, self.keys, target.key_columns)
            # Only rows still inside this window: a row that a concurrent sync of a later window
            # has just brought up to date is not ours to delete.
            where = sa.and_(matches, target.window_clause(self.window))
            if self.soft_delete_column:
                stmt = sa.update(target.table).where(where).values({self.soft_delete_column: True})
            else:
                stmt = sa.delete(target.table).where(where)
            deleted = self.conn.execute(stmt).rowcount
        return upserted, deleted

    def close(self) -> None:
        """Drop the stage tables (PostgreSQL drops them at commit already)."""
        for name in (STAGE_ROWS, STAGE_KEYS):
            self.adapter.drop_stage(self.conn, name)


def _bind_type(type_: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    # A reflected JSON column would write SQL NULL as the JSON text 'null'; keep NULL a NULL.
    if isinstance(type_, sa.JSON):
        return type(type_)(none_as_null=True)
    return type_
