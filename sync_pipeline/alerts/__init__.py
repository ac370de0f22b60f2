"""Alerts: what went wrong, said once in words, delivered to the log and to webhooks.

Three modules, one concern each: :mod:`~sync_pipeline.alerts.model` (the :class:`Alert` value the
sensors build), :mod:`~sync_pipeline.alerts.formats` (the body each receiver accepts: plain JSON, a
WeCom group robot, a Slack incoming webhook, clipped to its limits) and
:mod:`~sync_pipeline.alerts.delivery` (the log first, then every webhook within a time budget, never
raising). Nothing here imports Dagster. Every public name is importable from ``sync_pipeline.alerts``.
"""

from sync_pipeline.alerts.delivery import AlertDispatcher, SendResult, WebhookSink
from sync_pipeline.alerts.formats import (
    SLACK_FIELD_CHARS,
    SLACK_HEADER_CHARS,
    SLACK_MAX_FIELDS,
    SLACK_SECTION_CHARS,
    SLACK_TEXT_CHARS,
    WECOM_CONTENT_BYTES,
    describe,
    render,
    render_json,
    render_slack,
    render_wecom,
)
from sync_pipeline.alerts.model import SOURCE, Alert, AlertKind, FactValue
from sync_pipeline.redaction import redact_webhook

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
