"""The registry of dialect adapters, keyed by SQLAlchemy backend name."""

from __future__ import annotations

from sync_pipeline.engine.db.dialects.base import Adapter, micros_divisor
from sync_pipeline.engine.db.dialects.mysql import MySQLAdapter
from sync_pipeline.engine.db.dialects.postgresql import PostgresAdapter
from sync_pipeline.engine.db.dialects.sqlite import SQLiteAdapter
from sync_pipeline.engine.diff.segments import HASH_MODULUS

_ADAPTERS: dict[str, Adapter] = {
    "postgresql": PostgresAdapter(),
    "mysql": MySQLAdapter(),
    "mariadb": MySQLAdapter(),
    "sqlite": SQLiteAdapter(),
}

SUPPORTED_BACKENDS = tuple(sorted(_ADAPTERS))


def adapter_for(backend: str) -> Adapter:
    """The adapter of a SQLAlchemy backend name (``engine.dialect.name``)."""
    try:
        return _ADAPTERS[backend]
    except KeyError:
        raise ValueError(
            f"unsupported database {backend!r}; supported: {', '.join(SUPPORTED_BACKENDS)}"
        ) from None


__all__ = ["HASH_MODULUS", "SUPPORTED_BACKENDS", "Adapter", "adapter_for", "micros_divisor"]
