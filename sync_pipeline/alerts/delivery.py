"""Delivering an alert: to the log always, then to every webhook, within a time budget each.

:class:`AlertDispatcher` writes every alert to a logger first, so with no webhook configured, or
every webhook down, the alert still reaches the Dagster log. Nothing here imports Dagster: the
resource that wraps this module only reads its configuration and calls
``AlertDispatcher(sinks, log=context.log).send(alert)``.

Two properties matter more than delivery:

- **A sink never raises and never blocks for long.** Sensors call it inline; a dead webhook must
  cost at most the sink's ``timeout_seconds``, which bounds the whole send (every attempt and every
  pause between attempts), not each attempt. Retries are for quick failures (refused connection,
  429, 5xx) and use only what is left of that budget.
- **The webhook URL is a credential.** Slack carries its token in the path, WeCom in the ``key``
  query parameter, so only scheme, host and port are ever shown
  (:func:`~sync_pipeline.redaction.redact_webhook`). Exceptions from requests and urllib3 quote the
  URL, and urllib3 logs it (at DEBUG, and at WARNING when it retries by itself), so: retries are
  done here rather than by urllib3's ``Retry`` (whose warning quotes the path), every message built
  here is scrubbed of the URL's path, query and their parts, and a logging filter scrubs the same
  strings from urllib3's own log records.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import requests

from sync_pipeline.alerts.formats import clip, describe, render
from sync_pipeline.alerts.model import SOURCE, Alert, AlertKind
from sync_pipeline.config import AlertFormat, AlertSinkConfig
from sync_pipeline.redaction import redact_webhook, scrub, webhook_secrets

__all__ = ["AlertDispatcher", "SendResult", "WebhookSink"]

# The package's logger, as before the split: operators filter on it.
_log = logging.getLogger("sync_pipeline.alerts")

_BACKOFF_SECONDS: Final = 0.2
_MAX_BACKOFF_SECONDS: Final = 2.0
_MIN_ATTEMPT_SECONDS: Final = 0.05
_MAX_ANSWER_BYTES: Final = 4096
_MAX_ERROR_CHARS: Final = 300
_HEADERS: Final = {"Content-Type": "application/json; charset=utf-8", "User-Agent": f"{SOURCE}-alerts"}
# urllib3 modules whose log records quote the request URL (path and query included).
_URLLIB3_LOGGERS: Final = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")


def _secret_parts(url: str) -> tuple[str, ...]:
    """What could reveal the token: the URL as written and as requests re-quotes it, and their parts."""
    try:
        prepared = requests.Request("POST", url).prepare().url
    except (requests.RequestException, ValueError):
        prepared = None
    return webhook_secrets(url, prepared or "")


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
        scrubbed = scrub(message, secrets)
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
        return clip(scrub(message, self._secrets), _MAX_ERROR_CHARS * 2)

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
    return f"HTTP {status}: {clip(text, _MAX_ERROR_CHARS)}" if text else f"HTTP {status}"


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
        return f"not a WeCom answer (expected JSON with errcode): {clip(text, _MAX_ERROR_CHARS)!r}"
    if not isinstance(answer, dict) or "errcode" not in answer:
        return f"not a WeCom answer (no errcode): {clip(text, _MAX_ERROR_CHARS)!r}"
    if answer["errcode"] != 0:
        message = clip(str(answer.get("errmsg", "")), _MAX_ERROR_CHARS)
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
