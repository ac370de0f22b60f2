"""What the engine needs to know about one table: where it lives on each side and how to sync it.

These models are the engine's half of the configuration file (the Dagster layer's half, and the
YAML loader, live in :mod:`sync_pipeline.config`). They are plain pydantic, import neither Dagster
nor YAML, and validate everything that can be checked without a database, so that a mistake is
caught when the file loads, reported by table and field, rather than at the first partition.

Connection URLs carry passwords: they are :class:`~pydantic.SecretStr` and every model hides its
inputs from validation errors, so neither printing a model nor a failed validation shows one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Self
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from sync_pipeline.redaction import redact_url

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ConnectionConfig",
    "DeleteMode",
    "NonEmptyStr",
    "TableConfig",
    "TableRef",
]

# The default byte budget of one batch (``chunk_bytes``). A few batches' worth is held at once (the
# rows, their converted copy, the driver's and the statement's buffers; both sides when verifying):
# 4 MiB keeps a step with 1 MB rows near 200 MB, Dagster included (16 MiB: 265 MB). Rows under 400
# bytes still travel chunk_size at a time.
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

NonEmptyStr = Annotated[str, Field(min_length=1)]

# Dagster's rules for asset owners and definition tags, restated: the engine imports no Dagster.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,7}")
_TAG_KEY = re.compile(r"([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}")
_TAG_VALUE = re.compile(r"[A-Za-z0-9_.-]{0,63}")
_RESERVED_TAG_PREFIXES = ("dagster/", "sync_pipeline/")


class DeleteMode(StrEnum):
    """What to do in the target with rows that disappeared from the source."""

    HARD = "hard"
    SOFT = "soft"
    IGNORE = "ignore"


def quoted(value: object, limit: int = 80) -> str:
    """Quote a name for a message; repr shows stray whitespace, the limit bounds hostile keys."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_zone(name: str) -> str:
    """Refuse zone names zoneinfo cannot load now rather than at the first partition."""
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(
            f"unknown time zone {quoted(name)} (expected an IANA name such as 'UTC' or 'Europe/Paris')"
        ) from None
    return name


def reject_bool(value: object) -> object:
    """YAML reads ``yes``/``on`` as true, which pydantic would quietly turn into the number 1."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


def errors_at(title: str, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """Build a ValidationError pointing at exact fields from a model validator.

    Pydantic merges a ValidationError raised in a validator into the outer one with the outer
    location prefixed, so cross-field checks report ``source.connection`` rather than the table.
    """
    details = [
        InitErrorDetails(
            type=PydanticCustomError("sync_config", "{reason}", {"reason": reason}),
            loc=loc,
            input=None,
        )
        for loc, reason in problems
    ]
    return ValidationError.from_exception_data(title, details, hide_input=True)


def _duplicates(items: Iterable[str]) -> list[str]:
    """Repeated items in first-repeat order, so the message lists each once."""
    seen: set[str] = set()
    repeated: list[str] = []
    for item in items:
        if item in seen and item not in repeated:
            repeated.append(item)
        seen.add(item)
    return repeated


class ConnectionConfig(BaseModel):
    """One database the sync reads from or writes to.

    The URL is a :class:`~pydantic.SecretStr` so that printing a config, or a model holding one,
    never shows the password; use :attr:`sqlalchemy_url` to connect and :attr:`redacted_url` to log.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: SecretStr

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: SecretStr) -> SecretStr:
        """Fail at load time on a URL the engine could not use, without ever quoting it."""
        try:
            parsed = make_url(url.get_secret_value())
        except (ArgumentError, ValueError, TypeError):
            # Neither SQLAlchemy's message nor the exception itself may travel: both can hold the URL.
            raise ValueError(
                "not a valid SQLAlchemy URL (expected e.g. postgresql+psycopg://user@host:5432/db)"
            ) from None
        if parsed.password is not None and "@" in f"{parsed.host or ''}{parsed.database or ''}":
            # SQLAlchemy ends the password at the first '@' and would hand the rest to the driver
            # as a host name, which the driver then quotes in its error: refuse, quoting nothing.
            raise ValueError("the password holds an unencoded '@': percent-encode it as %40 in the URL")
        # The adapter registry is the one list of backends; imported here, as the engine package
        # imports these settings while it loads.
        from sync_pipeline.engine.db.dialects import SUPPORTED_BACKENDS

        backend = parsed.get_backend_name()
        if backend not in SUPPORTED_BACKENDS:
            raise ValueError(
                f"unsupported backend {quoted(backend, 40)} "
                f"(supported: {', '.join(sorted(SUPPORTED_BACKENDS))})"
            )
        return url

    @property
    def sqlalchemy_url(self) -> URL:
        """The parsed URL, password included; SQLAlchemy's own repr of it hides the password."""
        return make_url(self.url.get_secret_value())

    @property
    def redacted_url(self) -> str:
        """The URL with its password (in the userinfo or the query) as ``***``, safe to print."""
        return redact_url(self.url.get_secret_value())

    @property
    def backend(self) -> str:
        """The SQL dialect family; MariaDB and MySQL share every code path of the engine."""
        name = self.sqlalchemy_url.get_backend_name()
        return "mysql" if name == "mariadb" else name


class TableRef(BaseModel):
    """A table on one side of a sync: which connection, and which (optionally schema-qualified) table."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, populate_by_name=True)

    connection: NonEmptyStr
    table: NonEmptyStr
    # ``schema`` would shadow a (deprecated) BaseModel method, hence the alias.
    schema_: NonEmptyStr | None = Field(default=None, alias="schema")


class TableConfig(BaseModel):
    """Everything the engine needs to sync one table hourly.

    ``start`` is kept as written: naive means "in the partition time zone", which this model does
    not know, so convert it with :meth:`start_in` rather than reading it directly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str
    description: str | None = None
    source: TableRef
    target: TableRef
    primary_key: list[NonEmptyStr] = Field(min_length=1)
    updated_at: NonEmptyStr
    start: datetime
    delete_mode: DeleteMode = DeleteMode.HARD
    soft_delete_column: NonEmptyStr = "_sync_deleted"
    chunk_size: int = Field(default=10_000, ge=1, le=1_000_000)
    # What one batch of rows (or keys) may weigh, whatever the row width: batches hold at most
    # chunk_size rows and about chunk_bytes of values, so 1 MB rows travel 4 at a time, not 10,000.
    # A single row wider than the budget still travels, alone.
    chunk_bytes: int = Field(default=DEFAULT_CHUNK_BYTES, ge=64 * 1024, le=4 * 1024**3)
    naive_timezone: str = "UTC"
    lock_timeout_seconds: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    columns: list[NonEmptyStr] | None = Field(default=None, min_length=1)
    # After every sync, compare the partition's rows in source and target, every column (the
    # asset's in_sync check). One aggregate query per side when they match.
    verify: bool = True
    # A synced column the existing target lacks (added to the source later) is added to the target,
    # nullable. False for a target whose schema is managed elsewhere (or whose user may not ALTER):
    # the sync then fails, naming the column, before writing anything.
    add_missing_columns: bool = True
    # Who answers for the table, and labels to filter by: shown on its asset in the Dagster UI, in
    # Dagster's own forms (checked here, so that a mistake names the table and field at load).
    owners: list[NonEmptyStr] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        """The name becomes the Dagster asset key ``sync/<name>``, which allows only these characters."""
        if not _TABLE_NAME.fullmatch(name):
            raise ValueError(
                "must match ^[A-Za-z_][A-Za-z0-9_]*$ (letters, digits and underscores, not starting "
                "with a digit) because it becomes the asset key sync/<name>"
            )
        return name

    @field_validator("primary_key", "columns")
    @classmethod
    def _check_unique(cls, names: list[str] | None) -> list[str] | None:
        """A repeated column would be selected and compared twice, which SQL rejects or miscounts."""
        if names is not None and (repeated := _duplicates(names)):
            raise ValueError(f"duplicate column(s): {', '.join(quoted(n) for n in repeated)}")
        return names

    @field_validator("start")
    @classmethod
    def _check_on_the_hour(cls, start: datetime) -> datetime:
        """Partitions are whole hours; a start inside an hour would sync a partial first partition."""
        if (start.minute, start.second, start.microsecond) != (0, 0, 0):
            raise ValueError(
                f"must be on the hour (minute, second and microsecond 0), got {start.isoformat()}"
            )
        return start

    @field_validator("owners")
    @classmethod
    def _check_owners(cls, owners: list[str]) -> list[str]:
        for owner in owners:
            if not (_EMAIL.fullmatch(owner) or (owner.startswith("team:") and len(owner) > len("team:"))):
                raise ValueError(
                    f"{quoted(owner)} is neither an email address nor a team ('team:<name>'), "
                    "the two forms Dagster accepts as asset owners"
                )
        return owners

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not _TAG_KEY.fullmatch(key) or key.startswith(_RESERVED_TAG_PREFIXES):
                raise ValueError(
                    f"tag key {quoted(key)}: letters, digits, '_', '-' and '.', at most 63, optionally "
                    "after a 'prefix/' of the same; the prefixes dagster/ and sync_pipeline/ are reserved"
                )
            if not _TAG_VALUE.fullmatch(value):
                raise ValueError(
                    f"tag {quoted(key)}: value {quoted(value)} may hold only letters, digits, '_', '-' "
                    "and '.', at most 63 (Dagster's rule for tags on definitions)"
                )
        return tags

    @field_validator("naive_timezone")
    @classmethod
    def _check_naive_timezone(cls, name: str) -> str:
        return check_zone(name)

    @field_validator("chunk_size", "chunk_bytes", "lock_timeout_seconds", mode="before")
    @classmethod
    def _check_not_bool(cls, value: object) -> object:
        return reject_bool(value)

    @model_validator(mode="after")
    def _check_columns(self) -> Self:
        """Cross-field rules: the engine keys, orders and marks rows by these columns."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.updated_at in self.primary_key:
            problems.append(
                (
                    ("updated_at",),
                    f"{quoted(self.updated_at)} is also a primary_key column; it must change on update",
                )
            )
        if self.columns is not None:
            missing = [c for c in (*self.primary_key, self.updated_at) if c not in self.columns]
            if missing:
                problems.append(
                    (
                        ("columns",),
                        "must include every primary_key column and updated_at; missing "
                        + ", ".join(quoted(c) for c in dict.fromkeys(missing)),
                    )
                )
        if self.delete_mode is DeleteMode.SOFT:
            clashes = {*self.primary_key, self.updated_at, *(self.columns or ())}
            if self.soft_delete_column in clashes:
                problems.append(
                    (
                        ("soft_delete_column",),
                        f"{quoted(self.soft_delete_column)} is a synced column; "
                        "the soft-delete marker needs a column of its own",
                    )
                )
        if problems:
            raise errors_at(type(self).__name__, problems)
        return self

    def start_in(self, tz: str) -> datetime:
        """The first partition as an aware datetime in ``tz``.

        A naive start is read as wall-clock time in ``tz`` (the first occurrence if a DST change
        makes it ambiguous); an aware start is the same instant, converted.
        """
        zone = ZoneInfo(tz)
        if self.start.tzinfo is None:
            return self.start.replace(tzinfo=zone)
        return self.start.astimezone(zone)
