"""The Dagster layer's half of the configuration file, and the model of the whole file.

Schedule, retry, executor, alert sinks, drift and freshness settings are read only by the
orchestration layer; the tables and connections they refer to are the engine's own models
(:mod:`sync_pipeline.engine.settings`). :class:`SyncConfig` ties both together and checks what
needs the whole file: unique table names, connections that exist, a start hour that exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from enum import StrEnum
from pathlib import Path
from typing import Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    StrictInt,
    field_validator,
    model_validator,
)

from sync_pipeline.engine.settings import (
    ConnectionConfig,
    NonEmptyStr,
    TableConfig,
    check_zone,
    errors_at,
    quoted,
    reject_bool,
)
from sync_pipeline.errors import ConfigError

__all__ = [
    "AlertFormat",
    "AlertSinkConfig",
    "BackfillConfig",
    "CatchUpConfig",
    "DriftConfig",
    "ExecutorConfig",
    "ExecutorKind",
    "FreshnessConfig",
    "RetryConfig",
    "ScheduleConfig",
    "SyncConfig",
    "UnknownTableError",
]


class UnknownTableError(ConfigError, KeyError):
    """A table looked up by name is not configured.

    It is a :class:`KeyError` as well so that code treating the config as a mapping of tables can
    catch it the usual way, and a ``ConfigError`` because the name usually comes from an operator.
    """

    def __str__(self) -> str:
        # KeyError quotes its argument as a repr; this is a sentence.
        return str(self.args[0]) if self.args else ""


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


class BackfillConfig(BaseModel):
    """How a backfill of many hours is cut into Dagster runs: the sync assets' ``BackfillPolicy``.

    Each run syncs up to ``max_partitions_per_run`` hours, oldest first, each hour still in a process
    of its own and committed alone; fewer runs save a run and a step start per hour. The default, a
    week, spreads a run's fixed start (about 8 s on the reference machine) thinly enough for a year of
    hourly history to take under 45 minutes (BENCHMARKS.md, "Backfills in ranged runs").
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    max_partitions_per_run: int = Field(default=168, ge=1, le=24 * 366)


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
        return reject_bool(value)


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
        return reject_bool(value)

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
            raise errors_at(type(self).__name__, problems)
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
    """The drift sensor: how far back, how often, and how much each run compares.

    An hour is compared on a rolling schedule, not at every run, so the cost grows with the data,
    not with lookback x runs: by default once, in the last hour of the lookback, which keeps a
    table-hour within 3x of COPYing it and still finds drift at any age, up to 23 hours late
    (``orchestration.drift_schedule`` has the trade-off). ``milestones_minutes`` replaces that age
    with a team's own (earlier comparisons of young hours for a shorter wait, each about half a
    COPY more of source CPU); ``max_partitions_per_run`` bounds what one run of one table compares.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    lookback_hours: int = Field(default=24, ge=1, le=24 * 31)
    interval_seconds: int = Field(default=600, ge=30)
    max_partitions_per_run: int = Field(default=8, ge=1, le=1000)
    # Ages (minutes since an hour ended) at which it is compared; unset: once, at lookback - 1 hours.
    milestones_minutes: list[StrictInt] | None = Field(default=None, min_length=1, max_length=1000)
    enabled: bool = True

    @model_validator(mode="after")
    def _check_milestones(self) -> Self:
        """Increasing ages inside the lookback: an hour older than the lookback is never compared."""
        ages = self.milestones_minutes
        if ages is None:
            return self
        problems: list[tuple[tuple[str | int, ...], str]] = []
        limit = self.lookback_hours * 60
        for index, age in enumerate(ages):
            if not 0 <= age < limit:
                problems.append(
                    (
                        ("milestones_minutes", index),
                        f"{age} is not an age inside the lookback: from 0 to {limit - 1} minutes "
                        f"(lookback_hours {self.lookback_hours})",
                    )
                )
            elif index and age <= ages[index - 1]:
                problems.append(
                    (
                        ("milestones_minutes", index),
                        f"{age} does not follow {ages[index - 1]}: the ages must increase",
                    )
                )
        if problems:
            raise errors_at(type(self).__name__, problems)
        return self


class FreshnessConfig(BaseModel):
    """When an hourly partition counts as missed (hour H is due by H + 1h + grace), and how far back."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    grace_minutes: int = Field(default=30, ge=0, le=24 * 60)
    interval_seconds: int = Field(default=300, ge=30)
    # Every due hour this far back must be synced; older hours are history nobody is alerted about.
    horizon_hours: int = Field(default=336, ge=1, le=24 * 366)
    enabled: bool = True


class CatchUpConfig(BaseModel):
    """Which missed hours are requested again by Dagster's declarative automation, and how often.

    ``max_hours`` bounds the catch-up so that a new table with a long history does not flood the
    queue: older hours are backfilled on purpose, from the UI. A failed hour (retries exhausted)
    is requested again ``retry_failed_after_minutes`` after its failure, and each further failure
    of that hour doubles the wait, up to ``retry_failed_max_minutes``: a passing outage is retried
    soon, a hopeless hour does not take a run every hour for a week.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    max_hours: int = Field(default=168, ge=2, le=24 * 366)
    retry_failed_after_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)
    retry_failed_max_minutes: int = Field(default=24 * 60, ge=1, le=7 * 24 * 60)
    interval_seconds: int = Field(default=60, ge=30)
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        # The fixed period of earlier versions; its meaning changed, so it is not read silently.
        if isinstance(data, Mapping) and "retry_failed_every_minutes" in data:
            raise errors_at(
                cls.__name__,
                [
                    (
                        ("retry_failed_every_minutes",),
                        "replaced by retry_failed_after_minutes (the wait after an hour's first "
                        "failure, doubling at each further failure) and retry_failed_max_minutes "
                        "(the longest wait)",
                    )
                ],
            )
        return data

    @model_validator(mode="after")
    def _check_backoff(self) -> Self:
        if self.retry_failed_max_minutes < self.retry_failed_after_minutes:
            raise errors_at(
                type(self).__name__,
                [
                    (
                        ("retry_failed_max_minutes",),
                        f"{self.retry_failed_max_minutes} is below retry_failed_after_minutes "
                        f"({self.retry_failed_after_minutes})",
                    )
                ],
            )
        return self


class SyncConfig(BaseModel):
    """The whole configuration file, validated, with cross-references between its parts checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    partition_timezone: str = "UTC"
    connections: dict[str, ConnectionConfig] = Field(min_length=1)
    tables: list[TableConfig] = Field(min_length=1)
    schedule: ScheduleConfig = ScheduleConfig()
    executor: ExecutorConfig = ExecutorConfig()
    retry: RetryConfig = RetryConfig()
    backfill: BackfillConfig = BackfillConfig()
    alerts: list[AlertSinkConfig] = Field(default_factory=list)
    # Where the Dagster UI is reachable, for links in alerts.
    ui_url: str = "http://127.0.0.1:3000"
    drift: DriftConfig = DriftConfig()
    freshness: FreshnessConfig = FreshnessConfig()
    catch_up: CatchUpConfig = CatchUpConfig()

    # Set by load_config so that errors found later (a missing live table, say) can name the file.
    _source_path: Path | None = PrivateAttr(default=None)

    @field_validator("partition_timezone")
    @classmethod
    def _check_partition_timezone(cls, name: str) -> str:
        return check_zone(name)

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        """Checks that need the whole file: unique names, known connections, a start that exists."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first_index: dict[str, int] = {}
        defined = ", ".join(quoted(name) for name in sorted(self.connections))
        for index, table in enumerate(self.tables):
            if table.name in first_index:
                problems.append(
                    (
                        ("tables", index, "name"),
                        f"duplicate table name {quoted(table.name)} "
                        f"(first used by tables[{first_index[table.name]}])",
                    )
                )
            first_index.setdefault(table.name, index)
            for side, ref in (("source", table.source), ("target", table.target)):
                if ref.connection not in self.connections:
                    problems.append(
                        (
                            ("tables", index, side, "connection"),
                            f"unknown connection {quoted(ref.connection)} (defined: {defined})",
                        )
                    )
            if problem := self._start_problem(table):
                problems.append((("tables", index, "start"), problem))
        if self.catch_up.enabled and self.catch_up.max_hours > self.freshness.horizon_hours:
            # An hour the catch-up keeps failing on must still be seen, and alerted, by freshness.
            problems.append(
                (
                    ("catch_up", "max_hours"),
                    f"{self.catch_up.max_hours} is beyond freshness.horizon_hours "
                    f"({self.freshness.horizon_hours}); raise freshness.horizon_hours to at least it",
                )
            )
        if problems:
            raise errors_at(type(self).__name__, problems)
        return self

    def _start_problem(self, table: TableConfig) -> str | None:
        """Partitions are whole hours of the partition zone; the start must be one that exists."""
        local = table.start_in(self.partition_timezone)
        if (local.minute, local.second, local.microsecond) != (0, 0, 0):
            return (
                f"{table.start.isoformat()} is {local.strftime('%H:%M')} in partition_timezone "
                f"{quoted(self.partition_timezone)}; partitions start on the hour"
            )
        if table.start.tzinfo is None:
            round_trip = local.astimezone(UTC).astimezone(local.tzinfo).replace(tzinfo=None)
            if round_trip != table.start:
                return (
                    f"{table.start.isoformat()} does not exist in partition_timezone "
                    f"{quoted(self.partition_timezone)} (skipped by a daylight-saving change)"
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
        known = ", ".join(quoted(t.name) for t in self.tables)
        raise UnknownTableError(f"{where}no table named {quoted(name)} (known tables: {known})")
