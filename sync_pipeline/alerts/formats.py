"""Rendering an alert into the exact body each receiver accepts: plain JSON, WeCom, Slack.

Each body is clipped to its receiver's limits, because a body over a limit is refused outright
and the alert is lost; what gets clipped is the detail, never the heading that says what happened.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from sync_pipeline.alerts.model import SOURCE, Alert, AlertKind, FactValue
from sync_pipeline.config import AlertFormat

__all__ = [
    "SLACK_BUTTON_URL_CHARS",
    "SLACK_FIELD_CHARS",
    "SLACK_HEADER_CHARS",
    "SLACK_MAX_FIELDS",
    "SLACK_SECTION_CHARS",
    "SLACK_TEXT_CHARS",
    "WECOM_CONTENT_BYTES",
    "clip",
    "describe",
    "render",
    "render_json",
    "render_slack",
    "render_wecom",
]

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


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def _utf16_size(text: str) -> int:
    """Slack's limits are in characters as JavaScript counts them: an emoji counts twice."""
    return len(text.encode("utf-16-le")) // 2


def clip(text: str, limit: int, size: Callable[[str], int] = len) -> str:
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
    heading = clip(
        f'## [{SOURCE}] <font color="{color}">{alert.kind.label}</font>: {subject}', 1024, _utf8_size
    )
    summary = clip(alert.summary, 1024, _utf8_size)
    lines = [f"> {line}" if line else ">" for line in summary.splitlines() or [""]]
    lines += [
        f"**Kind:** {alert.kind.label}",
        f"**Table:** {alert.table}",
        f"**Partition:** {alert.partition_key or _DASH}",
        f"**Occurred at:** {_occurred(alert)}",
    ]
    lines += [clip(f"**{key}:** {_fact_text(value)}", 512, _utf8_size) for key, value in alert.facts.items()]
    link = f"[Open in Dagster]({alert.link})" if alert.link and _utf8_size(alert.link) <= 1024 else ""
    room = WECOM_CONTENT_BYTES - _utf8_size(heading) - (_utf8_size(link) + 1 if link else 0) - 1
    body = clip("\n".join(lines), room, _utf8_size)
    content = "\n".join(part for part in (heading, body, link) if part)
    return {"msgtype": "markdown", "markdown": {"content": content}}


def _slack_escape(text: str) -> str:
    """Slack reads ``<...>`` as links and mentions: an error text with ``<!channel>`` would ping everyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_PARTIAL_ENTITY = re.compile(r"&[a-z]*" + _ELLIPSIS + "$")


def _slack_clip(escaped: str, limit: int) -> str:
    """Clip escaped mrkdwn without leaving half an ``&amp;`` before the ellipsis."""
    return _PARTIAL_ENTITY.sub(_ELLIPSIS, clip(escaped, limit, _utf16_size))


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
            "text": {"type": "plain_text", "text": clip(alert.title, SLACK_HEADER_CHARS, _utf16_size)},
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
