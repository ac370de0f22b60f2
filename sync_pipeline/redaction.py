"""The one place that hides secrets: in database URLs, in webhook URLs, and in free text.

Every output of sync_pipeline that could carry a URL or a driver's message (CLI lines, log records,
exception messages, Dagster metadata, alerts) goes through here, so there is one definition of what
a secret is and one way of hiding it. A password can sit in three places of a database URL, and
each is covered:

* the userinfo, ``user:password@host`` (hidden by SQLAlchemy's own rendering);
* the userinfo with an unencoded ``@`` (``user:p@ss@host``): SQLAlchemy's parser stops the password
  at the first ``@`` and reads the rest as the host, so its rendering shows half the password;
* the query, ``?password=...`` (psycopg and PyMySQL both read it), which SQLAlchemy renders as is.

Free text is scrubbed twice over: every URL found in it is redacted like a URL, and the secrets of
the configured URLs (when the caller knows them) are replaced wherever they appear, since a driver
may quote a host name or a DSN that holds part of one. Secrets shorter than four characters are not
replaced in free text: that would turn ordinary words into ``***`` and hide more than it protects.

Nothing here imports Dagster; the engine, the CLI, the config loader and the alerts all use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qsl, quote_plus, unquote, urlsplit

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "MIN_SECRET_CHARS",
    "REDACTED",
    "Scrubber",
    "is_secret_parameter",
    "redact_url",
    "redact_urls_in",
    "redact_webhook",
    "scrub",
    "url_secrets",
    "webhook_secrets",
]

REDACTED: Final = "***"
"""What a secret is replaced by, everywhere."""

MIN_SECRET_CHARS: Final = 4
"""Shorter secrets are not replaced in free text: ``pw`` would turn every ``pwd`` into ``***d``."""

UNPARSEABLE: Final = "<unparseable URL>"

# Query parameters that carry a credential: password, passwd, sslpassword, passfile, api_key, token...
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|auth|credential", re.IGNORECASE)

# ``scheme://user:password@`` with the password running to the last ``@`` before the path, so an
# unencoded ``@`` inside it is still part of it. Works on text that no parser accepts.
_USERINFO_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*:(?P<password>[^\s/?#]*)@")

# The same, anchored at the start of a URL found in text, keeping what precedes the password; here
# the password may also hold a ``/``: it runs to the last ``@`` before the query.
_LEADING_USERINFO = re.compile(r"^(?P<keep>[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*:)[^\s?#]*@")

# One ``name=value`` of a query, with the separator before it.
_QUERY_PARAMETER = re.compile(r"(?P<keep>[?&;](?P<name>[^=&;#\s]+)=)[^&;#\s]*")

# A URL inside free text: a scheme, ``://``, and everything up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_TRAILING_PUNCTUATION: Final = ".,:;!?)]}"


def is_secret_parameter(name: str) -> bool:
    """Whether a URL query parameter of this name carries a credential."""
    return bool(_SECRET_PARAMETER.search(name))


def _parse(url: str | URL) -> URL | None:
    if isinstance(url, URL):
        return url
    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        return None


def _split_unencoded_at(parsed: URL) -> tuple[str | None, int | None, str | None, str | None]:
    """``(host, port, database, password_tail)`` undoing SQLAlchemy's split of an unencoded ``@``.

    SQLAlchemy ends the password at the first ``@``; with ``user:p@ss@host/db`` it reads ``ss@host``
    as the host. Hosts never hold ``@``, so everything before the last one belongs to the password.
    When the password also holds a ``/`` the spill-over reaches the database (``p@s/s@host/db``).
    """
    host, port, database = parsed.host, parsed.port, parsed.database
    if parsed.password is None:
        return host, port, database, None
    if database and "@" in database:
        spilled, _, rest = database.rpartition("@")
        tail = make_url(f"{parsed.drivername}://{rest}")
        return tail.host, tail.port, tail.database, f"{host or ''}/{spilled}"
    if host and "@" in host:
        spilled, _, host = host.rpartition("@")
        return host, port, database, spilled
    return host, port, database, None


def redact_url(url: str | URL) -> str:
    """The URL as it may be printed: password and credential query parameters shown as ``***``.

    Scheme, user, host, port, database and the other query parameters stay, so the operator can
    tell which database is meant. A URL that cannot be parsed is not echoed at all.
    """
    parsed = _parse(url)
    if parsed is None:
        return UNPARSEABLE
    try:
        host, port, database, _ = _split_unencoded_at(parsed)
    except (ArgumentError, ValueError, TypeError):
        return UNPARSEABLE
    shown = parsed.set(host=host, port=port, database=database, query={})
    if parsed.password is not None:
        shown = shown.set(password=REDACTED)
    text = shown.render_as_string(hide_password=True)
    parameters = [
        f"{quote_plus(name)}={REDACTED if is_secret_parameter(name) else quote_plus(value)}"
        for name, values in parsed.query.items()
        for value in ((values,) if isinstance(values, str) else values)
    ]
    return f"{text}?{'&'.join(parameters)}" if parameters else text


def url_secrets(url: str | URL) -> list[str]:
    """Every string that is, or is part of, a secret of ``url``: to scrub from text it may leak into.

    Besides the password as SQLAlchemy parses it, this holds the whole password of the unencoded-``@``
    forms and the fragment a driver would quote as a host name (``ss`` of ``ss@host``), and the
    values of credential query parameters, decoded and as written. Longest first.
    """
    found: set[str] = set()
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    parsed = _parse(url)
    if parsed is not None:
        if parsed.password is not None:
            found.add(str(parsed.password))
            try:
                *_, tail = _split_unencoded_at(parsed)
            except (ArgumentError, ValueError, TypeError):
                tail = None
            if tail is not None:
                # What a driver quotes as the host name starts with the tail; a short tail is
                # only distinctive with its ``@``.
                found.update(
                    (f"{parsed.password}@{tail}", tail if len(tail) >= MIN_SECRET_CHARS else f"{tail}@")
                )
        for name, values in parsed.query.items():
            if is_secret_parameter(name):
                found.update((values,) if isinstance(values, str) else values)
    found.update(match.group("password") for match in _USERINFO_PASSWORD.finditer(text))
    _, _, query = text.partition("?")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if is_secret_parameter(name):
            found.add(value)
            found.add(quote_plus(value))
    found |= {unquote(secret) for secret in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret of at least :data:`MIN_SECRET_CHARS` characters replaced, longest first."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def redact_urls_in(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``, and nothing else changed.

    Edits in place rather than re-rendering, so the text around a URL (a closing parenthesis, a
    colon) and URLs without a credential (links) stay exactly as written.
    """

    def replace(match: re.Match[str]) -> str:
        # Punctuation that ends the sentence, not the URL: "cannot connect to <url>: refused".
        found = match.group(0).rstrip(_TRAILING_PUNCTUATION)
        after = match.group(0)[len(found) :]
        shown = _LEADING_USERINFO.sub(rf"\g<keep>{REDACTED}@", found, count=1)
        shown = _QUERY_PARAMETER.sub(
            lambda part: (
                part.group("keep") + REDACTED if is_secret_parameter(part.group("name")) else part.group(0)
            ),
            shown,
        )
        return scrub(shown, url_secrets(found)) + after

    return _URL_IN_TEXT.sub(replace, text)


class Scrubber:
    """The secrets of a set of URLs, to hide in any text shown to a person or sent elsewhere.

    Built once per command or sink from the URLs it was given; :meth:`__call__` redacts URLs in the
    text first (whatever their origin) and then replaces the known secrets wherever they appear.
    """

    def __init__(self, urls: Iterable[str | URL] = (), extra: Iterable[str] = ()) -> None:
        secrets: set[str] = set(extra)
        for url in urls:
            secrets.update(url_secrets(url))
        self.secrets: tuple[str, ...] = tuple(
            sorted((s for s in secrets if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)
        )

    def __call__(self, text: str) -> str:
        return scrub(redact_urls_in(text), self.secrets)


def redact_webhook(url: str) -> str:
    """``scheme://host[:port]/***``: the host tells an operator which webhook, the rest is the token.

    Slack carries its token in the path, WeCom in the ``key`` query parameter, so of a webhook URL
    only scheme, host and port are ever shown.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return f"<invalid webhook URL>/{REDACTED}"
    host = parts.netloc.rpartition("@")[2]  # user:password@ is a credential too
    if not parts.scheme or not host:
        return f"<webhook>/{REDACTED}"
    return f"{parts.scheme.lower()}://{host}/{REDACTED}"


def webhook_secrets(*variants: str) -> tuple[str, ...]:
    """Every string that could reveal a webhook's token, from the URL in each of its written forms.

    The URL as given and as an HTTP client re-quotes it (pass both), decoded, its path and query,
    and their segments and values, longest first so that a longer match wins. The host is not a
    secret: it is what :func:`redact_webhook` shows.
    """
    forms = {variant for variant in variants if variant}
    forms |= {unquote(form) for form in forms}
    secrets: set[str] = set()
    for form in forms:
        secrets.add(form)
        try:
            parts = urlsplit(form)
        except ValueError:
            continue
        if parts.netloc:
            secrets.add(form.split(parts.netloc, 1)[1])  # path, query and fragment together
            secrets.add(parts.netloc.rpartition("@")[0])
        secrets.update((parts.path, parts.query, parts.fragment))
        secrets.update(parts.path.split("/"))
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            secrets.update((value, f"{key}={value}"))
    hosts = {redact_webhook(form).split("://", 1)[-1].removesuffix(f"/{REDACTED}") for form in forms}
    kept = {s for s in secrets if len(s) >= MIN_SECRET_CHARS and not any(s in host for host in hosts)}
    return tuple(sorted(kept, key=len, reverse=True))
