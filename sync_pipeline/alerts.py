"""Alerts: what went wrong, said once in words, delivered to the log and to webhooks.

An :class:`Alert` is a plain value built by the sensors (drift, missed sync, run failure). The
renderers turn it into the exact body each receiver accepts (plain JSON, a WeCom group robot, a
Slack incoming webhook), clipped to that receiver's limits, because a body over a limit is refused
outright and the alert is lost. :class:`AlertDispatcher` writes every alert to a logger first, so
with no webhook configured, or every webhook down, the alert still reaches the Dagster log.

Nothing here imports Dagster: the resource that wraps this module only reads its configuration
and calls ``AlertDispatcher(sinks, log=context.log).send(alert)``.

Two properties matter more than delivery:

- **A sink never raises and never blocks for long.** Sensors call it inline; a dead webhook must
  cost at most the sink's ``timeout_seconds``, which bounds the whole send (every attempt and every
  pause between attempts), not each attempt. Retries are for quick failures (refused connection,
  429, 5xx) and use only what is left of that budget.
- **The webhook URL is a credential.** Slack carries its token in the path, WeCom in the ``key``
  query parameter, so only scheme, host and port are ever shown (:func:`redact_webhook`). Exceptions
  from requests and urllib3 quote the URL, and urllib3 logs it (at DEBUG, and at WARNING when it
  retries by itself), so: retries are done here rather than by urllib3's ``Retry`` (whose warning
  quotes the path), every message built here is scrubbed of the URL's path, query and their parts,
  and a logging filter scrubs the same strings from urllib3's own log records.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import requests

from sync_pipeline.config import AlertFormat, AlertSinkConfig

__all__ = [
    "SLACK_FIELD_CHARS",
    "SLACK_HEADER_CHARS",
    "SLACK_MAX_FIELDS",
    "SLACK_SECTION_CHARS",
    "SLACK_TEXT_CHARS",
    "SOURCE",
    "WECOM_CONTENT_BYTES",
    "Alert",
    "AlertDispatcher",
    "AlertKind",
    "FactValue",
    "SendResult",
    "WebhookSink",
    "describe",
    "redact_webhook",
    "render",
    "render_json",
    "render_slack",
    "render_wecom",
]

_log = logging.getLogger(__name__)

SOURCE: Final = "sync_pipeline"
"""Names the sender in every alert, so a channel shared with other systems shows where it came from."""

WECOM_CONTENT_BYTES: Final = 4096
"""WeCom refuses a markdown message whose content exceeds 4096 bytes of UTF-8."""

SLACK_HEADER_CHARS: Final = 150
SLACK_SECTION_CHARS: Final = 3000
SLACK_FIELD_CHARS: Final = 2000
SLACK_MAX_FIELDS: Final = 10
SLACK_BUTTON_URL_CHARS: Final = 3000
SLACK_TEXT_CHARS: Final = 3000
"""Slack accepts far longer fallback text; it is only a notification preview, so keep it short."""

_ELLIPSIS: Final = "…"
_DASH: Final = "—"
_BACKOFF_SECONDS: Final = 0.2
_MAX_BACKOFF_SECONDS: Final = 2.0
_MIN_ATTEMPT_SECONDS: Final = 0.05
_MAX_ANSWER_BYTES: Final = 4096
_MAX_ERROR_CHARS: Final = 300
_MIN_SECRET_CHARS: Final = 4
_HEADERS: Final = {"Content-Type": "application/json; charset=utf-8", "User-Agent": f"{SOURCE}-alerts"}
# urllib3 modules whose log records quote the request URL (path and query included).
_URLLIB3_LOGGERS: Final = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")

FactValue = str | int | float


class AlertKind(StrEnum):
    """What happened; the value is the machine name, :attr:`label` the words a person reads."""

    DRIFT = "drift"
    MISSED_SYNC = "missed_sync"
    RUN_FAILURE = "run_failure"
    RECOVERED = "recovered"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


# ``scheme://user:password@`` inside free text such as an error message, password replaced.
_USERINFO_PASSWORD = re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*):[^\s/?#@]*@")


def _scrub_userinfo(text: str) -> str:
    """A failure message can quote a database URL; its password must not travel in an alert."""
    return _USERINFO_PASSWORD.sub(r"\g<keep>:***@", text)


@dataclass(frozen=True)
class Alert:
    """One thing an operator should know about, with the numbers needed to act on it.

    ``facts`` are kept as given (ints stay ints) because the JSON sink feeds machines; they are
    copied into a read-only mapping so a frozen alert really cannot change after it is logged.
    Passwords in ``scheme://user:password@`` form are masked in every text field on construction,
    as a last line of defence for error messages quoted from elsewhere.
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
                value = _scrub_userinfo(value)
            elif not isinstance(value, int | float):
                value = _scrub_userinfo(str(value))  # a stray Decimal or None must not break rendering
            facts[str(key)] = value
        set_ = object.__setattr__  # the dataclass is frozen; normalise once, here
        set_(self, "kind", AlertKind(self.kind))
        set_(self, "table", _scrub_userinfo(self.table))
        set_(self, "summary", _scrub_userinfo(self.summary))
        set_(self, "facts", MappingProxyType(facts))
        set_(self, "occurred_at", self.occurred_at.astimezone(UTC))

    @property
    def title(self) -> str:
        """``[sync_pipeline] drift: orders 2026-11-30-08:00`` — kind in words, table, partition."""
        subject = self.table if self.partition_key is None else f"{self.table} {self.partition_key}"
        return f"[{SOURCE}] {self.kind.label}: {subject}"


# --------------------------------------------------------------------------------------------------
# Rendering


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def _utf16_size(text: str) -> int:
    """Slack's limits are in characters as JavaScript counts them: an emoji counts twice."""
    return len(text.encode("utf-16-le")) // 2


def _clip(text: str, limit: int, size: Callable[[str], int] = len) -> str:
    """``text`` cut to at most ``limit`` units of ``size``, on a character boundary, marked with "…"."""
    if size(text) <= limit:
        return text
    room = limit - size(_ELLIPSIS)
    if room <= 0:
        return ""
    low, high = 0, len(text)
    while low < high:  # longest prefix that fits; code points never split, so UTF-8 stays valid
        middle = (low + high + 1) // 2
        if size(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low] + _ELLIPSIS


def _fact_text(value: FactValue) -> str:
    return str(value)


def _occurred(alert: Alert) -> str:
    return alert.occurred_at.isoformat()


def render_json(alert: Alert) -> dict[str, Any]:
    """A flat document for machines: typed facts, ISO-8601 time, the kind as its machine name."""
    return {
        "source": SOURCE,
        "kind": alert.kind.value,
        "table": alert.table,
        "partition_key": alert.partition_key,
        "summary": alert.summary,
        "facts": {key: _json_value(value) for key, value in alert.facts.items()},
        "link": alert.link,
        "occurred_at": _occurred(alert),
    }


def _json_value(value: FactValue) -> FactValue:
    # NaN and infinities are not JSON; a receiver would reject the whole body.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def render_wecom(alert: Alert) -> dict[str, Any]:
    """A WeCom group-robot markdown message, at most 4096 bytes of content.

    The heading (kind, table, partition) and the link are kept whole as far as possible; the body
    between them is what gets clipped, since the heading alone already says what happened.
    """
    color = "info" if alert.kind is AlertKind.RECOVERED else "warning"
    subject = alert.table if alert.partition_key is None else f"{alert.table} {alert.partition_key}"
    heading = _clip(
        f'## [{SOURCE}] <font color="{color}">{alert.kind.label}</font>: {subject}', 1024, _utf8_size
    )
    summary = _clip(alert.summary, 1024, _utf8_size)
    lines = [f"> {line}" if line else ">" for line in summary.splitlines() or [""]]
    lines += [
        f"**Kind:** {alert.kind.label}",
        f"**Table:** {alert.table}",
        f"**Partition:** {alert.partition_key or _DASH}",
        f"**Occurred at:** {_occurred(alert)}",
    ]
    lines += [_clip(f"**{key}:** {_fact_text(value)}", 512, _utf8_size) for key, value in alert.facts.items()]
    link = f"[Open in Dagster]({alert.link})" if alert.link and _utf8_size(alert.link) <= 1024 else ""
    room = WECOM_CONTENT_BYTES - _utf8_size(heading) - (_utf8_size(link) + 1 if link else 0) - 1
    body = _clip("\n".join(lines), room, _utf8_size)
    content = "\n".join(part for part in (heading, body, link) if part)
    return {"msgtype": "markdown", "markdown": {"content": content}}


def _slack_escape(text: str) -> str:
    """Slack reads ``<...>`` as links and mentions: an error text with ``<!channel>`` would ping everyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PARTIAL_ENTITY = re.compile(r"&[a-z]*" + _ELLIPSIS + "$")


def _slack_clip(escaped: str, limit: int) -> str:
    """Clip escaped mrkdwn without leaving half an ``&amp;`` before the ellipsis."""
    return _PARTIAL_ENTITY.sub(_ELLIPSIS, _clip(escaped, limit, _utf16_size))


def render_slack(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: fallback text, then header, summary, facts and a button.

    Every block respects Slack's limits (header 150 characters, section text 3000, ten fields of
    2000, button URL 3000), since one oversized block makes Slack refuse the whole message.
    """
    meta = _slack_clip(
        "\n".join(
            [
                f"*Table:* {_slack_escape(alert.table)}",
                f"*Partition:* {_slack_escape(alert.partition_key or _DASH)}",
                f"*Occurred at:* {_occurred(alert)}",
            ]
        ),
        1000,
    )
    summary = _slack_clip(_slack_escape(alert.summary), SLACK_SECTION_CHARS - _utf16_size(meta) - 1)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(alert.title, SLACK_HEADER_CHARS, _utf16_size)},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{summary}\n{meta}" if summary else meta}},
    ]
    facts = list(alert.facts.items())
    if facts:
        shown = facts if len(facts) <= SLACK_MAX_FIELDS else facts[: SLACK_MAX_FIELDS - 1]
        fields = [
            _slack_clip(f"*{_slack_escape(key)}*\n{_slack_escape(_fact_text(value))}", SLACK_FIELD_CHARS)
            for key, value in shown
        ]
        if len(facts) > len(shown):
            rest = facts[len(shown) :]
            listed = ", ".join(f"{key}={_fact_text(value)}" for key, value in rest)
            fields.append(
                _slack_clip(f"*{len(rest)} more facts*\n{_slack_escape(listed)}", SLACK_FIELD_CHARS)
            )
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": text} for text in fields]})
    link = alert.link
    if link and link.startswith(("http://", "https://")) and _utf16_size(link) <= SLACK_BUTTON_URL_CHARS:
        button = {"type": "button", "text": {"type": "plain_text", "text": "Open in Dagster"}, "url": link}
        blocks.append({"type": "actions", "elements": [button]})
    text = _slack_clip(_slack_escape(f"{alert.title}: {alert.summary}"), SLACK_TEXT_CHARS)
    return {"text": text, "blocks": blocks}


_RENDERERS: Final[Mapping[AlertFormat, Callable[[Alert], dict[str, Any]]]] = {
    AlertFormat.JSON: render_json,
    AlertFormat.WECOM: render_wecom,
    AlertFormat.SLACK: render_slack,
}


def render(alert: Alert, format: AlertFormat) -> dict[str, Any]:
    """The body a receiver of ``format`` accepts, ready for ``json.dumps``."""
    return _RENDERERS[AlertFormat(format)](alert)


def describe(alert: Alert) -> str:
    """One log line: the title, the summary and every fact, for loggers that are not webhooks."""
    facts = ", ".join(f"{key}={_fact_text(value)}" for key, value in alert.facts.items())
    text = f"{alert.title}: {alert.summary}"
    if facts:
        text += f" ({facts})"
    if alert.link:
        text += f" {alert.link}"
    return text


# --------------------------------------------------------------------------------------------------
# Redaction


def redact_webhook(url: str) -> str:
    """``scheme://host[:port]/***``: the host tells an operator which webhook, the rest is the token."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "<invalid webhook URL>/***"
    host = parts.netloc.rpartition("@")[2]  # user:password@ is a credential too
    if not parts.scheme or not host:
        return "<webhook>/***"
    return f"{parts.scheme.lower()}://{host}/***"


def _secret_parts(url: str) -> tuple[str, ...]:
    """Every string that could reveal the token: the URL as written and as requests re-quotes it,
    its path and query, and their segments and values, longest first so that a longer match wins.
    """
    variants = {url}
    try:
        prepared = requests.Request("POST", url).prepare().url
    except (requests.RequestException, ValueError):
        prepared = None
    if prepared:
        variants.add(prepared)
    variants |= {unquote(variant) for variant in variants}
    secrets: set[str] = set()
    for variant in variants:
        try:
            parts = urlsplit(variant)
        except ValueError:
            secrets.add(variant)
            continue
        secrets.add(variant)
        if parts.netloc:
            secrets.add(variant.split(parts.netloc, 1)[1])  # path, query and fragment together
            userinfo = parts.netloc.rpartition("@")[0]
            secrets.add(userinfo)
        secrets.update((parts.path, parts.query, parts.fragment))
        secrets.update(segment for segment in parts.path.split("/"))
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            secrets.update((value, f"{key}={value}"))
    host = redact_webhook(url).split("://", 1)[-1].removesuffix("/***")
    kept = {s for s in secrets if len(s) >= _MIN_SECRET_CHARS and s not in host}
    return tuple(sorted(kept, key=len, reverse=True))


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class _ScrubSecrets(logging.Filter):
    """Rewrites urllib3's records that quote a webhook URL; added once to the loggers that do.

    A logger's filters do not see records of its children, hence one filter on each module logger.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._secrets: tuple[str, ...] = ()
        self._installed = False

    def register(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._known.update(secrets)
            self._secrets = tuple(sorted(self._known, key=len, reverse=True))
            if not self._installed:
                for name in _URLLIB3_LOGGERS:
                    logging.getLogger(name).addFilter(self)
                self._installed = True

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record is the logging module's problem
            return True
        scrubbed = _scrub(message, secrets)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_URLLIB3_SCRUBBER: Final = _ScrubSecrets()


# --------------------------------------------------------------------------------------------------
# Delivery


@dataclass(frozen=True)
class SendResult:
    """How one delivery went; ``sink`` is the redacted URL, ``error`` is safe to log and show."""

    ok: bool
    sink: str
    error: str | None = None
    status_code: int | None = None
    attempts: int = 0


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    error: str | None = None
    retryable: bool = False
    status_code: int | None = None
    retry_after: float | None = None


class WebhookSink:
    """Posts alerts to one webhook, within a time budget, and reports instead of raising.

    The budget is the config's ``timeout_seconds`` for the whole send. A webhook that accepts the
    connection and never answers uses it up in one attempt; one that refuses, or answers 429 or
    5xx, is tried again after 0.2 s, 0.4 s, ... up to ``retries`` more times while budget remains.
    POST is not idempotent, so a retry after a timeout can deliver twice: for alerts a duplicate
    is better than silence. Other 4xx answers and redirects are final (the URL or body is wrong).
    """

    def __init__(self, config: AlertSinkConfig) -> None:
        self._url = config.webhook.get_secret_value()
        self.format = config.format
        self.budget_seconds = config.timeout_seconds
        self.retries = config.retries
        self.redacted = redact_webhook(self._url)
        self._secrets = _secret_parts(self._url)
        _URLLIB3_SCRUBBER.register(self._secrets)

    def __repr__(self) -> str:
        return f"WebhookSink({self.redacted!r}, format={self.format.value!r})"

    def send(self, alert: Alert) -> SendResult:
        """Deliver ``alert``; any failure comes back as ``ok=False`` and a WARNING with the host only."""
        try:
            result = self._send(alert)
        except Exception as error:  # noqa: BLE001 - a sink must never break the sensor calling it
            result = SendResult(
                ok=False, sink=self.redacted, error=self._safe(f"{type(error).__name__}: {error}")
            )
        if not result.ok:
            _log.warning(
                "alert %s not delivered to %s after %d attempt(s): %s",
                alert.title,
                self.redacted,
                result.attempts,
                result.error,
            )
        return result

    def _safe(self, message: str) -> str:
        return _clip(_scrub(message, self._secrets), _MAX_ERROR_CHARS * 2)

    def _send(self, alert: Alert) -> SendResult:
        body = json.dumps(render(alert, self.format), ensure_ascii=False, allow_nan=False).encode("utf-8")
        deadline = time.monotonic() + self.budget_seconds
        attempts = 0
        with requests.Session() as session:
            while True:
                attempts += 1
                outcome = self._attempt(session, body, max(deadline - time.monotonic(), _MIN_ATTEMPT_SECONDS))
                error = outcome.error
                if outcome.ok or not outcome.retryable or attempts > self.retries:
                    break
                pause = min(_BACKOFF_SECONDS * 2 ** (attempts - 1), _MAX_BACKOFF_SECONDS)
                pause = max(pause, outcome.retry_after or 0.0)
                if time.monotonic() + pause + _MIN_ATTEMPT_SECONDS >= deadline:
                    error = f"{error}; gave up, the {self.budget_seconds:g}s time budget is spent"
                    break
                _log.debug("alert to %s: attempt %d failed (%s), retrying", self.redacted, attempts, error)
                time.sleep(pause)
        return SendResult(
            ok=outcome.ok,
            sink=self.redacted,
            error=None if outcome.ok else self._safe(error or "failed"),
            status_code=outcome.status_code,
            attempts=attempts,
        )

    def _attempt(self, session: requests.Session, body: bytes, timeout: float) -> _Attempt:
        try:
            with session.post(
                self._url,
                data=body,
                headers=_HEADERS,
                timeout=(timeout, timeout),
                allow_redirects=False,
                stream=True,  # read at most a few KiB of whatever the server answers
            ) as response:
                answer = _read_prefix(response)
                status = response.status_code
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except requests.Timeout:
            return _Attempt(ok=False, error=f"no answer within {timeout:.1f}s", retryable=True)
        except requests.ConnectionError as error:
            return _Attempt(ok=False, error=f"connection failed: {_root_cause(error)}", retryable=True)
        except requests.RequestException as error:
            return _Attempt(ok=False, error=f"{type(error).__name__}: {error}")
        text = " ".join(answer.decode("utf-8", "replace").split())
        if status == 429 or status >= 500:
            return _Attempt(
                ok=False,
                error=_http_error(status, text),
                retryable=True,
                status_code=status,
                retry_after=retry_after,
            )
        if not 200 <= status < 300:
            return _Attempt(ok=False, error=_http_error(status, text), status_code=status)
        if self.format is AlertFormat.WECOM:
            problem = _wecom_problem(text)
            if problem is not None:
                return _Attempt(ok=False, error=problem, status_code=status)
        return _Attempt(ok=True, status_code=status)


def _read_prefix(response: requests.Response) -> bytes:
    """The first few KiB of the answer: enough for an error text, never a hostile server's gigabytes."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= _MAX_ANSWER_BYTES:
            break
    return b"".join(chunks)[:_MAX_ANSWER_BYTES]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is ignored (the budget is seconds anyway)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _http_error(status: int, text: str) -> str:
    return f"HTTP {status}: {_clip(text, _MAX_ERROR_CHARS)}" if text else f"HTTP {status}"


def _root_cause(error: requests.ConnectionError) -> str:
    """The OS-level reason (refused, reset, DNS) rather than requests' wrapper naming the URL."""
    reason: object = error.args[0] if error.args else error
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the real error
    return f"{type(reason).__name__}: {reason}"


def _wecom_problem(text: str) -> str | None:
    """WeCom answers 200 even when it refuses a message; the verdict is ``errcode`` in the body."""
    try:
        answer = json.loads(text)
    except ValueError:
        return f"not a WeCom answer (expected JSON with errcode): {_clip(text, _MAX_ERROR_CHARS)!r}"
    if not isinstance(answer, dict) or "errcode" not in answer:
        return f"not a WeCom answer (no errcode): {_clip(text, _MAX_ERROR_CHARS)!r}"
    if answer["errcode"] != 0:
        message = _clip(str(answer.get("errmsg", "")), _MAX_ERROR_CHARS)
        return f"WeCom refused the message: errcode {answer['errcode']}: {message}"
    return None


class AlertDispatcher:
    """Sends each alert to the log and to every configured webhook, one after the other.

    The log comes first and always: it is the sink that cannot be misconfigured, and in Dagster it
    is the sensor's own log. Failures of a webhook are logged there too (host only), since the
    module logger where the sink reports them is not shown in the Dagster UI.
    """

    def __init__(self, sinks: Sequence[AlertSinkConfig], log: logging.Logger | None = None) -> None:
        self._log = log if log is not None else _log
        self._sinks = [WebhookSink(config) for config in sinks]

    @property
    def sinks(self) -> list[WebhookSink]:
        return list(self._sinks)

    def send(self, alert: Alert) -> list[SendResult]:
        """Log ``alert`` and deliver it to every sink; never raises, returns one result per sink."""
        level = logging.INFO if alert.kind is AlertKind.RECOVERED else logging.WARNING
        try:
            self._log.log(level, describe(alert))
        except Exception:  # noqa: BLE001 - a broken log handler must not stop the webhooks
            _log.exception("could not log alert %s", alert.title)
        results: list[SendResult] = []
        for sink in self._sinks:
            result = sink.send(alert)
            results.append(result)
            if not result.ok and self._log is not _log:
                try:
                    self._log.warning(f"alert not delivered to {result.sink}: {result.error}")
                except Exception:  # noqa: BLE001 - same reason as above
                    _log.exception("could not log a delivery failure")
        return results
