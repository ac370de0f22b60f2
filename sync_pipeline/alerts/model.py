"""The alert itself: what happened, to which table and hour, said once in words and numbers.

An :class:`Alert` is a plain, frozen value built by the sensors (drift, missed sync, run failure,
unplaced rows)
and rendered by :mod:`sync_pipeline.alerts.formats`. It often quotes an error message from
elsewhere, so every text in it is passed through :func:`~sync_pipeline.redaction.redact_urls_in`
on construction: a database URL in it keeps no password, in any of its forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from sync_pipeline.redaction import redact_urls_in

__all__ = ["SOURCE", "Alert", "AlertKind", "FactValue"]

SOURCE: Final = "sync_pipeline"
"""Names the sender in every alert, so a channel shared with other systems shows where it came from."""


FactValue = str | int | float


class AlertKind(StrEnum):
    """What happened; the value is the machine name, :attr:`label` the words a person reads."""

    DRIFT = "drift"
    MISSED_SYNC = "missed_sync"
    RUN_FAILURE = "run_failure"
    RECOVERED = "recovered"
    UNPLACED_ROWS = "unplaced_rows"  # source rows whose updated_at no hour holds: never synced

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class Alert:
    """One thing an operator should know about, with the numbers needed to act on it.

    ``facts`` are kept as given (ints stay ints) because the JSON sink feeds machines; they are
    copied into a read-only mapping so a frozen alert really cannot change after it is logged.
    Passwords in URLs (userinfo or query, see :mod:`sync_pipeline.redaction`) are masked in every
    text field on construction, as a last line of defence for error messages quoted from elsewhere.
    """

    kind: AlertKind
    table: str
    partition_key: str | None
    summary: str
    facts: Mapping[str, FactValue] = field(default_factory=dict, hash=False)
    link: str | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.occurred_at.utcoffset() is None:
            raise ValueError(
                f"Alert.occurred_at must be timezone-aware, got naive {self.occurred_at.isoformat()}; "
                "use datetime.now(UTC)"
            )
        facts: dict[str, FactValue] = {}
        for key, value in self.facts.items():
            if isinstance(value, str):
                value = redact_urls_in(value)
            elif not isinstance(value, int | float):
                value = redact_urls_in(str(value))  # a stray Decimal or None must not break rendering
            facts[str(key)] = value
        set_ = object.__setattr__  # the dataclass is frozen; normalise once, here
        set_(self, "kind", AlertKind(self.kind))
        set_(self, "table", redact_urls_in(self.table))
        set_(self, "summary", redact_urls_in(self.summary))
        set_(self, "facts", MappingProxyType(facts))
        set_(self, "occurred_at", self.occurred_at.astimezone(UTC))

    @property
    def title(self) -> str:
        """``[sync_pipeline] drift: orders 2026-11-30-08:00`` — kind in words, table, partition."""
        subject = self.table if self.partition_key is None else f"{self.table} {self.partition_key}"
        return f"[{SOURCE}] {self.kind.label}: {subject}"
