"""The YAML configuration of sync_pipeline: which tables to sync, from where to where, from when.

The file is the only input an operator writes by hand, so every mistake in it must be caught here,
before any database is touched, and reported in terms of the file: its path, the table (by name)
and the dotted field. Errors are raised as :class:`~sync_pipeline.errors.ConfigError`, which the
orchestration layer treats as terminal (retrying cannot fix a typo).

Connection URLs carry passwords, often injected through ``${VAR}`` from the environment. Nothing
in this module echoes an input value it does not control: pydantic is told to hide inputs, YAML
syntax errors are re-worded without their source snippet, exceptions from URL parsing are never
chained, and as a last line of defence messages built from validation errors are scrubbed of the
passwords (of four characters or more) of the configured URLs before they are raised.

The file is also untrusted in size and shape: it is read only up to 1 MiB, and the parsed
structure is walked with a node budget and a depth limit so that a YAML alias bomb ("billion
laughs") or a self-referencing alias is refused instead of exhausting memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from sync_pipeline.errors import ConfigError

__all__ = [
    "CONFIG_ENV_VAR",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "SUPPORTED_BACKENDS",
    "ConnectionConfig",
    "DeleteMode",
    "SyncConfig",
    "TableConfig",
    "TableRef",
    "UnknownTableError",
    "load_config",
    "parse_config",
]

CONFIG_ENV_VAR: Final = "SYNC_PIPELINE_CONFIG"
"""Environment variable holding the path of the configuration file."""

MAX_CONFIG_BYTES: Final = 1024 * 1024
"""A real configuration is a few kilobytes; anything near a megabyte is a mistake or an attack."""

MAX_CONFIG_NODES: Final = 100_000
"""Budget of values visited while walking the parsed YAML; aliases count once per use."""

MAX_CONFIG_DEPTH: Final = 50
"""The format nests four levels deep; fifty leaves room and stops self-referencing aliases."""

SUPPORTED_BACKENDS: Final = frozenset({"postgresql", "mysql", "mariadb", "sqlite"})
"""SQLAlchemy backend names the sync engine has dialect-specific code and tests for."""

_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MIN_REDACTED_SECRET = 4
_MAX_REPORTED_ERRORS = 50

NonEmptyStr = Annotated[str, Field(min_length=1)]


class UnknownTableError(ConfigError, KeyError):
    """A table looked up by name is not configured.

    It is a :class:`KeyError` as well so that code treating the config as a mapping of tables can
    catch it the usual way, and a ``ConfigError`` because the name usually comes from an operator.
    """

    def __str__(self) -> str:
        # KeyError quotes its argument as a repr; this is a sentence.
        return str(self.args[0]) if self.args else ""


class DeleteMode(StrEnum):
    """What to do in the target with rows that disappeared from the source."""

    HARD = "hard"
    SOFT = "soft"
    IGNORE = "ignore"


def _quote(value: object, limit: int = 80) -> str:
    """Quote a name for a message; repr shows stray whitespace, the limit bounds hostile keys."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_zone(name: str) -> str:
    """Refuse zone names zoneinfo cannot load now rather than at the first partition."""
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(
            f"unknown time zone {_quote(name)} (expected an IANA name such as 'UTC' or 'Europe/Paris')"
        ) from None
    return name


def _reject_bool(value: object) -> object:
    """YAML reads ``yes``/``on`` as true, which pydantic would quietly turn into the number 1."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return value


def _errors_at(title: str, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> ValidationError:
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
        backend = parsed.get_backend_name()
        if backend not in SUPPORTED_BACKENDS:
            raise ValueError(
                f"unsupported backend {_quote(backend, 40)} "
                f"(supported: {', '.join(sorted(SUPPORTED_BACKENDS))})"
            )
        return url

    @property
    def sqlalchemy_url(self) -> URL:
        """The parsed URL, password included; SQLAlchemy's own repr of it hides the password."""
        return make_url(self.url.get_secret_value())

    @property
    def redacted_url(self) -> str:
        """The URL with its password replaced by ``***``, safe for logs and error messages."""
        return self.sqlalchemy_url.render_as_string(hide_password=True)

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
            raise ValueError(f"duplicate column(s): {', '.join(_quote(n) for n in repeated)}")
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

    @field_validator("naive_timezone")
    @classmethod
    def _check_naive_timezone(cls, name: str) -> str:
        return _check_zone(name)

    @field_validator("chunk_size", "lock_timeout_seconds", mode="before")
    @classmethod
    def _check_not_bool(cls, value: object) -> object:
        return _reject_bool(value)

    @model_validator(mode="after")
    def _check_columns(self) -> Self:
        """Cross-field rules: the engine keys, orders and marks rows by these columns."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.updated_at in self.primary_key:
            problems.append(
                (
                    ("updated_at",),
                    f"{_quote(self.updated_at)} is also a primary_key column; it must change on update",
                )
            )
        if self.columns is not None:
            missing = [c for c in (*self.primary_key, self.updated_at) if c not in self.columns]
            if missing:
                problems.append(
                    (
                        ("columns",),
                        "must include every primary_key column and updated_at; missing "
                        + ", ".join(_quote(c) for c in dict.fromkeys(missing)),
                    )
                )
        if self.delete_mode is DeleteMode.SOFT:
            clashes = {*self.primary_key, self.updated_at, *(self.columns or ())}
            if self.soft_delete_column in clashes:
                problems.append(
                    (
                        ("soft_delete_column",),
                        f"{_quote(self.soft_delete_column)} is a synced column; "
                        "the soft-delete marker needs a column of its own",
                    )
                )
        if problems:
            raise _errors_at(type(self).__name__, problems)
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


class ScheduleConfig(BaseModel):
    """When the hourly schedule fires, and how far back each tick re-checks for late commits."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Hour H is first synced at H+1h plus this many minutes: the lag lets long transactions that
    # stamped updated_at inside H commit before H is read (SPEC 4.10).
    minute: int = Field(default=10, ge=0, le=59)
    # Each tick also re-checks this many earlier hours (two aggregate queries each when unchanged)
    # and re-syncs those that changed, so a row committed after its hour was synced still lands.
    lookback_hours: int = Field(default=3, ge=0, le=168)
    enabled: bool = True


class RetryConfig(BaseModel):
    """How Dagster retries a sync step that failed transiently (a lost connection, a lock timeout).

    Attempt n waits ``delay_seconds * 2**(n-1)``, give or take up to ``delay_seconds`` of jitter, so
    syncs that failed together (a database restart) do not come back together. Configuration and
    schema errors are never retried.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    max_retries: int = Field(default=3, ge=0, le=20)
    delay_seconds: float = Field(default=15.0, ge=0, le=3600, allow_inf_nan=False)

    @field_validator("max_retries", "delay_seconds", mode="before")
    @classmethod
    def _check_not_bool(cls, value: object) -> object:
        return _reject_bool(value)


ExecutorKind = Literal["multiprocess", "celery", "k8s"]

_EXECUTOR_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "multiprocess": frozenset({"max_concurrent", "start_method"}),
    "celery": frozenset({"broker", "backend", "queue", "visibility_timeout_seconds"}),
    "k8s": frozenset({"max_concurrent", "job_namespace", "image_pull_policy", "env_secrets"}),
}
_BROKER_SCHEMES: Final = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class ExecutorConfig(BaseModel):
    """Where each sync step runs: a local process, a Celery worker, or a Kubernetes job.

    One flat section rather than one model per kind, so a file written before ``kind`` existed
    (``max_concurrent``, ``start_method``) still means the multiprocess executor, and a key that
    the chosen kind would ignore is an error naming it rather than a setting silently dropped.
    The broker and backend URLs carry passwords, so they are secrets: never printed or quoted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: ExecutorKind = "multiprocess"
    # multiprocess: step processes at once per run; k8s: step pods at once per run (unset: no limit).
    max_concurrent: int = Field(default=2, ge=1, le=256)
    start_method: Literal["forkserver", "spawn"] = "forkserver"
    # celery: the broker the run process queues steps on and the workers consume from.
    broker: SecretStr | None = None
    # celery: where workers put each step's events for the run process (default: rpc://, the broker).
    backend: SecretStr | None = None
    # celery: the queue of the sync steps; workers must listen on it (celery worker -Q <queue>).
    queue: str = "dagster"
    # celery with a Redis broker: how long a step taken by a worker that died stays invisible before
    # Redis hands it to another worker. Longer than the slowest step, or a live step runs twice.
    visibility_timeout_seconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    # k8s: namespace of the step jobs (default: the run launcher's, else "default").
    job_namespace: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    # k8s: Kubernetes Secrets whose keys become the step pods' environment (e.g. the ${VAR}s of URLs).
    env_secrets: list[NonEmptyStr] | None = None

    @field_validator("max_concurrent", "visibility_timeout_seconds", mode="before")
    @classmethod
    def _check_not_bool(cls, value: object) -> object:
        return _reject_bool(value)

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(_BROKER_SCHEMES):
            raise ValueError(
                "must be a Redis or RabbitMQ URL (redis://, rediss://, amqp://, amqps:// or pyamqp://)"
            )
        return url

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and "://" not in url.get_secret_value():
            raise ValueError("must be a Celery result backend URL such as redis://host:6379/1 or rpc://")
        return url

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, name: str) -> str:
        if not _QUEUE_NAME.fullmatch(name):
            raise ValueError("must be 1 to 200 letters, digits, '_', '.' or '-'")
        return name

    @field_validator("job_namespace")
    @classmethod
    def _check_namespace(cls, name: str | None) -> str | None:
        if name is not None and not _K8S_NAME.fullmatch(name):
            raise ValueError("must be a Kubernetes namespace name (lowercase letters, digits and '-')")
        return name

    @model_validator(mode="after")
    def _check_kind(self) -> Self:
        """Each key belongs to one kind (max_concurrent to two); celery cannot guess its broker."""
        allowed = _EXECUTOR_FIELDS[self.kind]
        problems: list[tuple[tuple[str | int, ...], str]] = [
            ((name,), f"not used by kind {self.kind!r} (it is a setting of kind {_owner_of(name)})")
            for name in sorted(self.model_fields_set - allowed - {"kind"})
        ]
        if self.kind == "celery" and self.broker is None:
            problems.append((("broker",), "required when kind is 'celery' (e.g. redis://host:6379/0)"))
        if problems:
            raise _errors_at(type(self).__name__, problems)
        return self


def _owner_of(field: str) -> str:
    return " or ".join(repr(kind) for kind, fields in _EXECUTOR_FIELDS.items() if field in fields)


class AlertFormat(StrEnum):
    JSON = "json"  # plain JSON with typed fields
    WECOM = "wecom"  # WeCom group robot, msgtype markdown
    SLACK = "slack"  # Slack incoming webhook, text + blocks


class AlertSinkConfig(BaseModel):
    """One webhook that receives alerts. The URL usually embeds a token, so it is a secret."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    webhook: SecretStr
    format: AlertFormat = AlertFormat.JSON
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    retries: int = Field(default=2, ge=0, le=10)

    @field_validator("webhook")
    @classmethod
    def _check_webhook(cls, url: SecretStr) -> SecretStr:
        value = url.get_secret_value()
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url


class DriftConfig(BaseModel):
    """The drift sensor: how far back and how often it compares source and target."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    lookback_hours: int = Field(default=24, ge=1, le=24 * 31)
    interval_seconds: int = Field(default=600, ge=30)
    enabled: bool = True


class FreshnessConfig(BaseModel):
    """When an hourly partition counts as missed: hour H is due by H + 1h + grace."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    grace_minutes: int = Field(default=30, ge=0, le=24 * 60)
    interval_seconds: int = Field(default=300, ge=30)
    enabled: bool = True


class SyncConfig(BaseModel):
    """The whole configuration file, validated, with cross-references between its parts checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    partition_timezone: str = "UTC"
    connections: dict[str, ConnectionConfig] = Field(min_length=1)
    tables: list[TableConfig] = Field(min_length=1)
    schedule: ScheduleConfig = ScheduleConfig()
    executor: ExecutorConfig = ExecutorConfig()
    retry: RetryConfig = RetryConfig()
    alerts: list[AlertSinkConfig] = Field(default_factory=list)
    # Where the Dagster UI is reachable, for links in alerts.
    ui_url: str = "http://127.0.0.1:3000"
    drift: DriftConfig = DriftConfig()
    freshness: FreshnessConfig = FreshnessConfig()

    # Set by load_config so that errors found later (a missing live table, say) can name the file.
    _source_path: Path | None = PrivateAttr(default=None)

    @field_validator("partition_timezone")
    @classmethod
    def _check_partition_timezone(cls, name: str) -> str:
        return _check_zone(name)

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        """Checks that need the whole file: unique names, known connections, a start that exists."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first_index: dict[str, int] = {}
        defined = ", ".join(_quote(name) for name in sorted(self.connections))
        for index, table in enumerate(self.tables):
            if table.name in first_index:
                problems.append(
                    (
                        ("tables", index, "name"),
                        f"duplicate table name {_quote(table.name)} "
                        f"(first used by tables[{first_index[table.name]}])",
                    )
                )
            first_index.setdefault(table.name, index)
            for side, ref in (("source", table.source), ("target", table.target)):
                if ref.connection not in self.connections:
                    problems.append(
                        (
                            ("tables", index, side, "connection"),
                            f"unknown connection {_quote(ref.connection)} (defined: {defined})",
                        )
                    )
            if problem := self._start_problem(table):
                problems.append((("tables", index, "start"), problem))
        if problems:
            raise _errors_at(type(self).__name__, problems)
        return self

    def _start_problem(self, table: TableConfig) -> str | None:
        """Partitions are whole hours of the partition zone; the start must be one that exists."""
        local = table.start_in(self.partition_timezone)
        if (local.minute, local.second, local.microsecond) != (0, 0, 0):
            return (
                f"{table.start.isoformat()} is {local.strftime('%H:%M')} in partition_timezone "
                f"{_quote(self.partition_timezone)}; partitions start on the hour"
            )
        if table.start.tzinfo is None:
            round_trip = local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None)
            if round_trip != table.start:
                return (
                    f"{table.start.isoformat()} does not exist in partition_timezone "
                    f"{_quote(self.partition_timezone)} (skipped by a daylight-saving change)"
                )
        return None

    @property
    def source_path(self) -> Path | None:
        """The file this configuration was loaded from, or None if it was built in memory."""
        return self._source_path

    def table(self, name: str) -> TableConfig:
        """Look a table up by name; the error lists the known names because the caller usually typed one."""
        for table in self.tables:
            if table.name == name:
                return table
        where = f"{self._source_path}: " if self._source_path is not None else ""
        known = ", ".join(_quote(t.name) for t in self.tables)
        raise UnknownTableError(f"{where}no table named {_quote(name)} (known tables: {known})")


# --------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> SyncConfig:
    """Read, interpolate and validate the configuration file at ``path``.

    ``environ`` defaults to :data:`os.environ`; tests pass a dict to stay independent of the host.
    """
    file = Path(path)
    label = str(file)
    try:
        with file.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(_too_big(label, size))
            # Read one byte more than allowed: the size of a pipe or special file is not known upfront.
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{label}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory, expected a YAML configuration file") from None
    except OSError as error:
        raise ConfigError(f"{label}: cannot read configuration file: {error.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(_too_big(label, len(data)))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{label}: not UTF-8 text (invalid byte at offset {error.start})") from None
    config = parse_config(text, source=label, environ=environ)
    config._source_path = file
    return config


def parse_config(text: str, source: str = "<string>", environ: Mapping[str, str] | None = None) -> SyncConfig:
    """Validate a configuration given as YAML text; ``source`` names it in error messages."""
    if environ is None:
        environ = os.environ
    # Characters never outnumber UTF-8 bytes, so the cheap length check settles most oversize texts.
    size = len(text) if len(text) > MAX_CONFIG_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(_too_big(source, size))
    document = _parse_yaml(text, source)
    if document is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping with 'connections' and 'tables'")
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: the top level is {_yaml_kind(document)}; "
            "expected a mapping with 'connections' and 'tables'"
        )
    raw_tables = document.get("tables")
    walker = _Walker(source, environ, raw_tables if isinstance(raw_tables, list) else [])
    tree = walker.walk(document)
    tables_before_defaults = tree.get("tables")
    defaults = tree.pop("defaults", None)
    if defaults is not None:
        if not isinstance(defaults, dict):
            raise ConfigError(f"{source}: field 'defaults': must be a mapping of table keys")
        if isinstance(tables_before_defaults, list):
            if _count_nodes(defaults) * len(tables_before_defaults) > MAX_CONFIG_NODES:
                raise ConfigError(f"{source}: too large once 'defaults' is copied into every table")
            tree["tables"] = [
                _deep_merge(defaults, table) if isinstance(table, dict) else table
                for table in tables_before_defaults
            ]
    try:
        return SyncConfig.model_validate(tree)
    except ValidationError as error:
        message = _describe_validation_error(
            error,
            source,
            raw_tables if isinstance(raw_tables, list) else [],
            tables_before_defaults if isinstance(tables_before_defaults, list) else [],
            defaults if isinstance(defaults, dict) else {},
        )
        # Chaining is cut: the ValidationError keeps the inputs, passwords included, in .errors().
        raise ConfigError(_redact(message, _url_passwords(tree))) from None


def _too_big(source: str, size: int) -> str:
    return (
        f"{source}: configuration is {size} bytes, more than the limit of {MAX_CONFIG_BYTES} bytes (1 MiB); "
        "is this the right file?"
    )


def _parse_yaml(text: str, source: str) -> object:
    """Parse with safe_load, re-wording errors: PyYAML's own text quotes the offending line."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        where = _mark(error.problem_mark)
        message = f"{source}: invalid YAML{where}: {error.problem or 'syntax error'}"
        if error.context:
            message += f" ({error.context}{_mark(error.context_mark)})"
        raise ConfigError(message) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        raise ConfigError(
            f"{source}: invalid YAML at line {line}, column {column}: character #x{error.character:04x} "
            "is not allowed"
            if isinstance(error.character, int)
            else f"{source}: invalid YAML at line {line}, column {column}: {error.reason}"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML ({type(error).__name__})") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply (more than {MAX_CONFIG_DEPTH} levels)") from None


def _mark(mark: yaml.Mark | None) -> str:
    return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"


def _yaml_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


_REFERENCE = re.compile(r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")
_LITERAL_ESCAPE = "$${"
_SCALARS = (str, int, float, bool, date, type(None))  # datetime is a date


class _Walker:
    """Copy the parsed YAML into a plain tree, interpolating ``${VAR}`` and enforcing size limits.

    One pass does both because the copy is where an alias bomb would explode: PyYAML shares an
    aliased node, so the parsed value is small, but any walk over it is exponential. Counting
    every visit bounds the walk, and the copy, whatever the aliasing.
    """

    def __init__(self, source: str, environ: Mapping[str, str], raw_tables: list[Any]) -> None:
        self.source = source
        self.environ = environ
        self.raw_tables = raw_tables
        self.nodes = 0
        self.problems: list[str] = []
        # The same aliased string would otherwise be interpolated, and copied, once per use.
        self.cache: dict[str, str] = {}

    def walk(self, document: dict[Any, Any]) -> dict[str, Any]:
        tree = self._visit(document, (), 1)
        if self.problems:
            lines = self.problems[:_MAX_REPORTED_ERRORS]
            if len(self.problems) > len(lines):
                lines.append(f"{self.source}: ... and {len(self.problems) - len(lines)} more")
            raise ConfigError("\n".join(lines))
        assert isinstance(tree, dict)
        return tree

    def _visit(self, value: object, path: tuple[str | int, ...], depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_CONFIG_NODES:
            raise ConfigError(
                f"{self.source}: too large or too deeply aliased (more than {MAX_CONFIG_NODES} values)"
            )
        if isinstance(value, dict):
            self._check_depth(path, depth)
            copy: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ConfigError(
                        f"{self.source}: {self._place(path)}: key {_quote(key)} is a {type(key).__name__}, "
                        "not a string (YAML reads yes/no/on/off as booleans and digits as numbers: quote it)"
                    )
                copy[key] = self._visit(item, (*path, key), depth + 1)
            return copy
        if isinstance(value, list):
            self._check_depth(path, depth)
            return [self._visit(item, (*path, index), depth + 1) for index, item in enumerate(value)]
        if isinstance(value, str):
            return self._interpolate(value, path)
        if isinstance(value, _SCALARS):
            return value
        raise ConfigError(
            f"{self.source}: {self._place(path)}: unsupported YAML value of type {type(value).__name__}"
        )

    def _check_depth(self, path: tuple[str | int, ...], depth: int) -> None:
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"{self.source}: {self._place(path[:3])}: nested deeper than {MAX_CONFIG_DEPTH} levels "
                "(a self-referencing alias?)"
            )

    def _interpolate(self, text: str, path: tuple[str | int, ...]) -> str:
        if "${" not in text:
            return text
        cached = self.cache.get(text)
        if cached is not None:
            return cached
        failed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal failed
            token = match.group(0)
            if token == _LITERAL_ESCAPE:
                return "${"
            name = match.group("name")
            if name is None:
                failed = True
                self.problems.append(
                    f"{self.source}: {self._place(path)}: malformed '${{' at character {match.start() + 1}: "
                    "expected ${NAME} or ${NAME:-default} (write $${ for a literal ${)"
                )
                return token
            default = match.group("default")
            value = self.environ.get(name)
            if default is not None and not value:
                return default
            if value is None:
                failed = True
                self.problems.append(
                    f"{self.source}: {self._place(path)}: environment variable {name} is not set "
                    f"(set it, or write ${{{name}:-default}})"
                )
                return token
            return value

        result = _REFERENCE.sub(replace, text)
        if not failed:
            self.cache[text] = result
        return result

    def _place(self, path: tuple[str | int, ...]) -> str:
        """Where a value sits, naming a table by the name written in the file (never a substituted one)."""
        if len(path) >= 2 and path[0] == "tables" and isinstance(path[1], int):
            label = _table_label(self.raw_tables, path[1])
            rest = path[2:]
            return f"{label}, field {_quote(_dotted(rest))}" if rest else label
        return _dotted(path) if path else "top level"


def _dotted(path: Sequence[str | int]) -> str:
    """``('source', 'schema')`` → ``source.schema``; list positions as ``primary_key[1]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _table_label(raw_tables: Sequence[Any], index: int) -> str:
    raw = raw_tables[index] if 0 <= index < len(raw_tables) else None
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
        return f"table {_quote(raw['name'])}"
    return f"tables[{index}]"


def _count_nodes(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_count_nodes(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(_count_nodes(item) for item in value)
    return 1


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Defaults under a table's own keys: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _has_path(value: object, path: Sequence[str | int]) -> bool:
    for part in path:
        if isinstance(value, dict) and isinstance(part, str):
            if part not in value:
                return False
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int):
            if not 0 <= part < len(value):
                return False
            value = value[part]
        else:
            return False
    return True


def _describe_validation_error(
    error: ValidationError,
    source: str,
    raw_tables: Sequence[Any],
    own_tables: Sequence[Any],
    defaults: Mapping[str, Any],
) -> str:
    """One line per problem, in the file's terms: file, table by name, dotted field, reason."""
    lines: list[str] = []
    for detail in error.errors(include_url=False, include_input=False):
        loc = detail["loc"]
        where = ""
        suffix = ""
        if len(loc) >= 2 and loc[0] == "tables" and isinstance(loc[1], int):
            index, rest = loc[1], loc[2:]
            where = _table_label(raw_tables, index)
            if rest:
                where += f": field {_quote(_dotted(rest))}"
                own = own_tables[index] if index < len(own_tables) else None
                if not _has_path(own, rest) and _has_path(defaults, rest):
                    suffix = " (set in defaults)"
        elif len(loc) >= 2 and loc[0] == "connections":
            where = f"connection {_quote(loc[1])}"
            if loc[2:]:
                where += f": field {_quote(_dotted(loc[2:]))}"
        elif loc:
            where = f"field {_quote(_dotted(loc))}"
        reason = _reason(detail["type"], detail["msg"])
        line = f"{source}: {where}: {reason}{suffix}" if where else f"{source}: {reason}{suffix}"
        if line not in lines:
            lines.append(line)
    if len(lines) > _MAX_REPORTED_ERRORS:
        hidden = len(lines) - _MAX_REPORTED_ERRORS
        lines = [*lines[:_MAX_REPORTED_ERRORS], f"{source}: ... and {hidden} more"]
    return "\n".join(lines)


def _reason(kind: str, message: str) -> str:
    if kind == "extra_forbidden":
        return "unknown key (extra inputs are not permitted)"
    if kind == "missing":
        return "required key is missing"
    return message.removeprefix("Value error, ")


_USERINFO_PASSWORD = re.compile(r"://[^/?#@:]*:(?P<password>[^/?#]*)@")


def _url_passwords(tree: Mapping[str, Any]) -> list[str]:
    """Passwords of every configured URL, parsed or not, to scrub from messages as a last resort."""
    secrets: set[str] = set()
    connections = tree.get("connections")
    if not isinstance(connections, dict):
        return []
    for connection in connections.values():
        url = connection.get("url") if isinstance(connection, dict) else None
        if not isinstance(url, str):
            continue
        try:
            password = make_url(url).password
        except (ArgumentError, ValueError, TypeError):
            password = None
        if password:
            secrets.add(str(password))
        secrets.update(match.group("password") for match in _USERINFO_PASSWORD.finditer(url))
    return sorted((s for s in secrets if len(s) >= _MIN_REDACTED_SECRET), key=len, reverse=True)


def _redact(message: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "***")
    return message
