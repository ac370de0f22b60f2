"""Every error sync_pipeline raises on purpose, in one tree.

::

    SyncPipelineError
    ├── TerminalError            retrying cannot help: fix the config, the schema or the data
    │   ├── ConfigError          the YAML file is wrong (names the file, table and field)
    │   ├── SchemaError          a live table does not match the config or the other side
    │   └── DataError            the data breaks an assumption (duplicate or NULL keys)
    └── TransientError           may succeed if tried again: Dagster's RetryPolicy retries these
        ├── LockTimeout          another sync of the same table and partition held the lock too long
        ├── DatabaseUnavailable  connection refused or dropped, deadlock, serialization failure
        └── PlanOutdated         a table changed after a plan made for many windows: plan again

The split exists so the orchestration layer can retry exactly what can succeed on a second try
and fail at once on everything else. Messages carry the offending value, never a password.
"""

from __future__ import annotations


class SyncPipelineError(Exception):
    """Base of every error raised on purpose by sync_pipeline."""


class TerminalError(SyncPipelineError):
    """An error a retry cannot fix."""


class ConfigError(TerminalError):
    """The configuration file is invalid; the message names the file, table and field."""


class SchemaError(TerminalError):
    """A live table is missing, lacks a configured column, or is incompatible with the other side."""


class DataError(TerminalError):
    """The rows break an assumption of the sync, such as unique, non-NULL keys."""


class TransientError(SyncPipelineError):
    """An error that may go away on its own; safe to retry because a sync is atomic and idempotent."""


class LockTimeout(TransientError):
    """Another sync of the same table and partition held the lock for longer than the timeout."""


class DatabaseUnavailable(TransientError):
    """The database refused or dropped the connection, or aborted the transaction (deadlock)."""


class PlanOutdated(TransientError):
    """A table's columns changed since the plan a ranged run reuses was made; a new plan is needed."""
