"""Alerts: the bodies each receiver accepts, and delivery to a real HTTP server on loopback.

No mocking of requests: a ``ThreadingHTTPServer`` on 127.0.0.1 records what it receives and answers
as each test scripts it (200, 500, 429, a WeCom errcode, or no answer at all).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr

from sync_pipeline.alerts import (
    SLACK_FIELD_CHARS,
    SLACK_HEADER_CHARS,
    SLACK_MAX_FIELDS,
    SLACK_SECTION_CHARS,
    SLACK_TEXT_CHARS,
    WECOM_CONTENT_BYTES,
    Alert,
    AlertDispatcher,
    AlertKind,
    SendResult,
    WebhookSink,
    redact_webhook,
    render,
    render_json,
    render_slack,
    render_wecom,
)
from sync_pipeline.config import AlertFormat, AlertSinkConfig
from sync_pipeline_tests.helpers import free_port

SECRET = "tok-3f9a-SECRET"  # noqa: S105 - a fake token whose leaks the tests look for
PARTITION = "2026-11-30-08:00"
WHEN = datetime(2026, 11, 30, 9, 12, 30, tzinfo=UTC)
LINK = "http://127.0.0.1:3000/assets/orders?view=partitions&partition=2026-11-30-08:00"
KIND_WORDS = {
    AlertKind.DRIFT: "drift",
    AlertKind.MISSED_SYNC: "missed sync",
    AlertKind.RUN_FAILURE: "run failure",
    AlertKind.RECOVERED: "recovered",
    AlertKind.UNPLACED_ROWS: "unplaced rows",
}
FACTS: dict[str, str | int | float] = {
    "rows_differing": 3,
    "source_rows": 1204,
    "target_rows": 1201,
    "ratio": 0.25,
    "deadline": "2026-11-30T09:30:00+00:00",
}


def make_alert(kind: AlertKind = AlertKind.DRIFT, **changes: Any) -> Alert:
    values: dict[str, Any] = {
        "kind": kind,
        "table": "orders",
        "partition_key": PARTITION,
        "summary": f"{KIND_WORDS[kind].capitalize()} in orders {PARTITION}: 3 rows differ",
        "facts": FACTS,
        "link": LINK,
        "occurred_at": WHEN,
    }
    values.update(changes)
    return Alert(**values)


# --------------------------------------------------------------------------------------------------
# A scripted webhook server


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass
class Webhook:
    """A loopback webhook: answers from ``script`` in order, then ``default``; records every request."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = f"/hooks/{SECRET}", query: str = f"key={SECRET}") -> str:
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def answer(self, request: Received) -> Answer:
        with self.lock:
            self.received.append(request)
            return self.script.pop(0) if self.script else self.default


def sink_config(url: str, fmt: AlertFormat = AlertFormat.JSON, timeout: float = 2.0, retries: int = 2) -> Any:
    return AlertSinkConfig(webhook=SecretStr(url), format=fmt, timeout_seconds=timeout, retries=retries)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    state = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = Received(self.path, dict(self.headers.items()), self.rfile.read(length))
            answer = state.answer(request)
            if answer.hang:
                state.release.wait(30)  # never answer while the test runs
                return
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest's output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_port() -> int:
    return free_port()


# --------------------------------------------------------------------------------------------------
# The alert value


def test_title_names_kind_in_words_table_and_partition() -> None:
    """The title reads "[sync_pipeline] <kind in words>: <table> <partition>"."""
    assert make_alert().title == "[sync_pipeline] drift: orders 2026-11-30-08:00"
    missed = make_alert(AlertKind.MISSED_SYNC)
    assert missed.title == "[sync_pipeline] missed sync: orders 2026-11-30-08:00"
    assert (
        make_alert(AlertKind.RUN_FAILURE, partition_key=None).title == "[sync_pipeline] run failure: orders"
    )


def test_alert_requires_aware_time_and_stores_it_in_utc() -> None:
    """A naive occurred_at is refused; an aware one in another zone is normalised to UTC."""
    with pytest.raises(ValueError, match="timezone-aware"):
        make_alert(occurred_at=datetime(2026, 11, 30, 9))  # naive on purpose
    paris = make_alert(occurred_at=datetime(2026, 11, 30, 10, 12, 30, tzinfo=timezone(timedelta(hours=1))))
    assert paris.occurred_at == WHEN
    assert paris.occurred_at.tzinfo is UTC


def test_alert_is_immutable_and_masks_url_passwords() -> None:
    """Facts cannot be changed after construction, and user:password@ in texts is masked."""
    facts: dict[str, str | int | float] = {"error": "could not connect to postgresql://sync:hunter22@db/x"}
    alert = make_alert(AlertKind.RUN_FAILURE, facts=facts, summary="failed: mysql://root:pw1234@h/db")
    facts["error"] = "changed"
    assert alert.facts["error"] == "could not connect to postgresql://sync:***@db/x"
    assert "pw1234" not in alert.summary
    with pytest.raises(TypeError):
        alert.facts["error"] = "x"  # type: ignore[index]


# --------------------------------------------------------------------------------------------------
# Rendering


def _all_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("kind", list(AlertKind))
def test_json_body_has_typed_fields(kind: AlertKind) -> None:
    """JSON: exactly the documented keys, kind by machine name, ints stay ints, ISO-8601 time."""
    body = render(make_alert(kind), AlertFormat.JSON)
    assert body == {
        "source": "sync_pipeline",
        "kind": kind.value,
        "table": "orders",
        "partition_key": PARTITION,
        "summary": f"{KIND_WORDS[kind].capitalize()} in orders {PARTITION}: 3 rows differ",
        "facts": FACTS,
        "link": LINK,
        "occurred_at": "2026-11-30T09:12:30+00:00",
    }
    assert type(body["facts"]["rows_differing"]) is int
    assert type(body["facts"]["ratio"]) is float
    assert json.loads(json.dumps(body, allow_nan=False)) == body


def test_json_body_stays_valid_json_with_non_finite_floats() -> None:
    """NaN/inf facts become strings, so the body is still strict JSON."""
    body = render_json(make_alert(facts={"ratio": float("nan"), "rows": 1}))
    assert body["facts"] == {"ratio": "nan", "rows": 1}
    json.dumps(body, allow_nan=False)


@pytest.mark.parametrize("kind", list(AlertKind))
def test_wecom_body_is_markdown_message_naming_everything(kind: AlertKind) -> None:
    """WeCom: {msgtype: markdown, markdown: {content}} naming kind in words, table, partition, facts, link."""
    body = render(make_alert(kind), AlertFormat.WECOM)
    assert set(body) == {"msgtype", "markdown"}
    assert body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"content"}
    content = body["markdown"]["content"]
    assert isinstance(content, str)
    assert len(content.encode("utf-8")) <= WECOM_CONTENT_BYTES
    assert content.startswith("## [sync_pipeline] <font color=")
    assert f"{KIND_WORDS[kind]}</font>: orders {PARTITION}" in content
    assert "**Table:** orders" in content
    assert f"**Partition:** {PARTITION}" in content
    for key, value in FACTS.items():
        assert f"**{key}:** {value}" in content
    assert content.endswith(f"[Open in Dagster]({LINK})")


@pytest.mark.parametrize("kind", list(AlertKind))
def test_slack_body_is_text_and_blocks_naming_everything(kind: AlertKind) -> None:
    """Slack: fallback text plus header, mrkdwn section, fields section and a button, naming everything."""
    body = render(make_alert(kind), AlertFormat.SLACK)
    assert set(body) == {"text", "blocks"}
    assert KIND_WORDS[kind] in body["text"]
    assert "orders" in body["text"]
    assert PARTITION in body["text"]
    header, section, facts, actions = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": f"[sync_pipeline] {KIND_WORDS[kind]}: orders {PARTITION}"},
    }
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn"
    assert "*Table:* orders" in section["text"]["text"]
    assert f"*Partition:* {PARTITION}" in section["text"]["text"]
    assert facts["type"] == "section"
    assert facts["fields"] == [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in FACTS.items()]
    assert actions == {
        "type": "actions",
        "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in Dagster"}, "url": LINK}
        ],
    }


def test_slack_omits_empty_fields_and_missing_link() -> None:
    """With no facts and no link, Slack gets no empty fields section (it would refuse it) and no button."""
    body = render_slack(make_alert(facts={}, link=None, partition_key=None))
    assert [block["type"] for block in body["blocks"]] == ["header", "section"]
    assert "*Partition:* —" in body["blocks"][1]["text"]["text"]


def test_slack_escapes_control_characters() -> None:
    """An error text with <!channel> or & cannot ping a channel or break Slack's markup."""
    body = render_slack(make_alert(summary="boom <!channel> a&b", facts={"error": "<@U123>"}))
    text = _all_text(body)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt; a&amp;b" in body["blocks"][1]["text"]["text"]
    assert body["blocks"][2]["fields"][0]["text"] == "*error*\n&lt;@U123&gt;"


def _huge_alert() -> Alert:
    return make_alert(
        AlertKind.RUN_FAILURE,
        table="orders_" + "x" * 300,
        summary="Run failure: " + "字é😀 & <tag> " * 2000,
        facts={f"fact_{i:02}": "value 漢字😀 & " * 400 for i in range(25)} | {"rows": 7},
        link=LINK,
    )


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_wecom_truncates_long_content_within_4096_bytes() -> None:
    """Oversized WeCom content is cut to ≤ 4096 UTF-8 bytes, keeping the heading and the link."""
    content = render_wecom(_huge_alert())["markdown"]["content"]
    assert len(content.encode("utf-8")) <= WECOM_CONTENT_BYTES
    assert content.startswith('## [sync_pipeline] <font color="warning">run failure</font>: orders_xxx')
    assert f"orders_{'x' * 300} {PARTITION}" in content
    assert "…" in content
    assert content.endswith(f"[Open in Dagster]({LINK})")


def test_slack_truncates_every_block_within_limits() -> None:
    """Oversized Slack text is cut to Slack's limits: header 150, section 3000, ≤10 fields of 2000."""
    body = render_slack(_huge_alert())
    blocks = body["blocks"]
    assert len(blocks) <= 50
    assert _utf16(body["text"]) <= SLACK_TEXT_CHARS
    header, section, facts, actions = blocks
    assert _utf16(header["text"]["text"]) <= SLACK_HEADER_CHARS
    assert header["text"]["text"].startswith("[sync_pipeline] run failure: orders_xxx")
    assert _utf16(section["text"]["text"]) <= SLACK_SECTION_CHARS
    assert f"*Partition:* {PARTITION}" in section["text"]["text"]
    assert len(facts["fields"]) == SLACK_MAX_FIELDS
    assert all(_utf16(f["text"]) <= SLACK_FIELD_CHARS for f in facts["fields"])
    assert facts["fields"][-1]["text"].startswith("*17 more facts*")
    assert actions["elements"][0]["url"] == LINK
    for text in [body["text"], section["text"]["text"], *(f["text"] for f in facts["fields"])]:
        assert "<" not in text  # escaped throughout, and no entity cut in half before the ellipsis
        assert not any(
            text.endswith(f"&{partial}…") for partial in ("", "a", "am", "amp", "l", "lt", "g", "gt")
        )


# --------------------------------------------------------------------------------------------------
# Redaction


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"https://hooks.slack.com/services/T000/B000/{SECRET}", "https://hooks.slack.com/***"),
        (f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={SECRET}", "https://qyapi.weixin.qq.com/***"),
        (f"http://user:{SECRET}@example.com:8443/x#{SECRET}", "http://example.com:8443/***"),
        (f"http://[::1]:9000/{SECRET}", "http://[::1]:9000/***"),
        (SECRET, "<webhook>/***"),
    ],
)
def test_redact_webhook_keeps_only_scheme_host_and_port(url: str, redacted: str) -> None:
    """Only scheme, host and port survive redaction; path, query, fragment and userinfo never do."""
    assert redact_webhook(url) == redacted


# --------------------------------------------------------------------------------------------------
# Delivery


@pytest.mark.parametrize("fmt", list(AlertFormat))
def test_sink_posts_the_rendered_body(webhook: Webhook, fmt: AlertFormat) -> None:
    """The sink POSTs exactly render(alert, format) as UTF-8 JSON to the configured URL."""
    if fmt is AlertFormat.WECOM:
        webhook.default = Answer(body=b'{"errcode":0,"errmsg":"ok"}')
    alert = make_alert(summary="Drift in orders 漢字: 3 rows differ")
    result = WebhookSink(sink_config(webhook.url(), fmt)).send(alert)
    assert result == SendResult(
        ok=True, sink=f"http://127.0.0.1:{webhook.port}/***", status_code=200, attempts=1
    )
    (request,) = webhook.received
    assert request.path == f"/hooks/{SECRET}?key={SECRET}"
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.json() == render(alert, fmt)


def test_retries_on_500_then_succeeds(webhook: Webhook) -> None:
    """Two 500s then a 200, with retries=2: delivered on the third attempt."""
    webhook.script = [Answer(500, b"busy"), Answer(503, b"busy")]
    result = WebhookSink(sink_config(webhook.url(), retries=2)).send(make_alert())
    assert result.ok
    assert result.attempts == 3
    assert len(webhook.received) == 3


def test_retries_on_429(webhook: Webhook) -> None:
    """A 429 with Retry-After: 0 is retried."""
    webhook.script = [Answer(429, b"rate limited", {"Retry-After": "0"})]
    result = WebhookSink(sink_config(webhook.url(), retries=1)).send(make_alert())
    assert result.ok
    assert len(webhook.received) == 2


def test_gives_up_after_the_configured_retries(webhook: Webhook) -> None:
    """A webhook that keeps answering 500 gets 1 + retries attempts, then ok=False with the status."""
    webhook.default = Answer(500, b"internal error")
    result = WebhookSink(sink_config(webhook.url(), retries=2)).send(make_alert())
    assert not result.ok
    assert result.attempts == 3
    assert len(webhook.received) == 3
    assert result.status_code == 500
    assert result.error is not None
    assert "HTTP 500: internal error" in result.error


@pytest.mark.parametrize("status", [400, 404, 302])
def test_client_errors_and_redirects_are_not_retried(webhook: Webhook, status: int) -> None:
    """4xx (other than 429) and redirects fail at once: retrying cannot fix a wrong URL or body."""
    webhook.default = Answer(status, b"invalid_payload", {"Location": "http://127.0.0.1:1/"})
    result = WebhookSink(sink_config(webhook.url(), retries=3)).send(make_alert())
    assert not result.ok
    assert result.attempts == 1
    assert len(webhook.received) == 1
    assert result.status_code == status


def test_hanging_webhook_is_abandoned_within_the_budget(webhook: Webhook) -> None:
    """A webhook that never answers costs about timeout_seconds in all, retries included, and fails."""
    webhook.default = Answer(hang=True)
    budget = 0.5
    started = time.monotonic()
    result = WebhookSink(sink_config(webhook.url(), timeout=budget, retries=5)).send(make_alert())
    elapsed = time.monotonic() - started
    assert not result.ok
    assert elapsed < 3 * budget
    assert result.error is not None
    assert "no answer" in result.error


def test_connection_refused_returns_failure(closed_port: int) -> None:
    """Nothing listening on the port: ok=False with the reason, after the retries, no exception."""
    url = f"http://127.0.0.1:{closed_port}/hooks/{SECRET}?key={SECRET}"
    result = WebhookSink(sink_config(url, retries=1)).send(make_alert())
    assert not result.ok
    assert result.attempts == 2
    assert result.sink == f"http://127.0.0.1:{closed_port}/***"
    assert result.error is not None
    assert "connection failed" in result.error


def test_wecom_errcode_is_a_failure(webhook: Webhook) -> None:
    """WeCom's HTTP 200 with errcode != 0 is a failure carrying errcode and errmsg."""
    webhook.default = Answer(body=b'{"errcode":93000,"errmsg":"invalid webhook url"}')
    result = WebhookSink(sink_config(webhook.url(), AlertFormat.WECOM)).send(make_alert())
    assert not result.ok
    assert result.attempts == 1
    assert result.error == "WeCom refused the message: errcode 93000: invalid webhook url"


def test_wecom_answer_without_errcode_is_a_failure(webhook: Webhook) -> None:
    """A 200 that is not WeCom's JSON means the message went nowhere: ok=False."""
    webhook.default = Answer(body=b"ok")
    result = WebhookSink(sink_config(webhook.url(), AlertFormat.WECOM)).send(make_alert())
    assert not result.ok
    assert result.error is not None
    assert "not a WeCom answer" in result.error


def _assert_no_secret(caplog: pytest.LogCaptureFixture, *values: object) -> None:
    for record in caplog.records:
        assert SECRET not in record.getMessage(), record.name
    for value in values:
        assert SECRET not in repr(value)


@pytest.mark.parametrize("failure", ["500", "echo", "hang", "wecom", "refused", "502-then-ok"])
def test_webhook_token_never_appears_in_logs_or_results(
    webhook: Webhook, closed_port: int, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    """The token in the path and the query never reaches a log record (any logger, DEBUG up) or a result."""
    caplog.set_level(logging.DEBUG)
    fmt = AlertFormat.JSON
    url = webhook.url()
    if failure == "500":
        webhook.default = Answer(500, b"oops")
    elif failure == "echo":  # a server that quotes the request line back, like many 404 pages
        webhook.default = Answer(404, f"Cannot POST /hooks/{SECRET}?key={SECRET}".encode())
    elif failure == "hang":
        webhook.default = Answer(hang=True)
    elif failure == "wecom":
        fmt = AlertFormat.WECOM
        webhook.default = Answer(body=json.dumps({"errcode": 93000, "errmsg": f"bad key {SECRET}"}).encode())
    elif failure == "refused":
        url = f"http://127.0.0.1:{closed_port}/hooks/{SECRET}?key={SECRET}"
    else:
        webhook.script = [Answer(502, b"x"), Answer(502, b"x")]
    sink = WebhookSink(sink_config(url, fmt, timeout=0.5, retries=2))
    dispatcher_log = logging.getLogger("test_alerts.dagster")
    results = AlertDispatcher([sink_config(url, fmt, timeout=0.5, retries=2)], log=dispatcher_log).send(
        make_alert()
    )
    result = sink.send(make_alert())
    assert caplog.records, "the failure should have been logged"
    _assert_no_secret(caplog, result, results, sink, result.error)
    if failure == "502-then-ok":
        assert result.ok
    else:
        assert not result.ok
        assert any(r.levelno == logging.WARNING and "127.0.0.1" in r.getMessage() for r in caplog.records)


def test_dispatcher_without_sinks_still_logs_the_alert(caplog: pytest.LogCaptureFixture) -> None:
    """With no webhook configured the alert, title and facts, is logged at WARNING."""
    log = logging.getLogger("test_alerts.no_sinks")
    with caplog.at_level(logging.WARNING, logger=log.name):
        results = AlertDispatcher([], log=log).send(make_alert())
    assert results == []
    (record,) = [r for r in caplog.records if r.name == log.name]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "[sync_pipeline] drift: orders 2026-11-30-08:00" in message
    assert "rows_differing=3" in message
    assert "source_rows=1204" in message


def test_one_failing_sink_does_not_stop_the_next(
    webhook: Webhook, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead first webhook fails on its own; the second still receives the alert."""
    log = logging.getLogger("test_alerts.two_sinks")
    dead = f"http://127.0.0.1:{closed_port}/hooks/{SECRET}"
    with caplog.at_level(logging.WARNING):
        results = AlertDispatcher(
            [sink_config(dead, retries=0), sink_config(webhook.url(), AlertFormat.SLACK)], log=log
        ).send(make_alert())
    assert [r.ok for r in results] == [False, True]
    assert len(webhook.received) == 1
    assert webhook.received[0].json() == render_slack(make_alert())
    delivery = [
        r.getMessage() for r in caplog.records if r.name == log.name and "not delivered" in r.getMessage()
    ]
    assert delivery == [f"alert not delivered to http://127.0.0.1:{closed_port}/***: {results[0].error}"]
    _assert_no_secret(caplog, results)


def test_sink_repr_hides_the_url(webhook: Webhook) -> None:
    """Printing a sink (in a traceback, a debugger) shows the host only."""
    sink = WebhookSink(sink_config(webhook.url()))
    assert repr(sink) == f"WebhookSink('http://127.0.0.1:{webhook.port}/***', format='json')"
