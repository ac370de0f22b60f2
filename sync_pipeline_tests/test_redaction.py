"""Tests of the one redaction module (sync_pipeline.redaction) and of the places that must use it.

Pure functions, no database: every URL form a password can take (userinfo, userinfo with an
unencoded ``@``, a ``?password=`` query parameter) against every way a URL reaches output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import materialize
from dagster_shared.serdes import serialize_value
from pydantic import SecretStr

from sync_pipeline.alerts import Alert, AlertKind
from sync_pipeline.config import ConnectionConfig, load_config, parse_config
from sync_pipeline.engine.db.engine import redact_url as engine_redact_url
from sync_pipeline.errors import ConfigError
from sync_pipeline.orchestration.assets import build_sync_asset
from sync_pipeline.orchestration.resources import SyncResource
from sync_pipeline.redaction import Scrubber, redact_url, redact_urls_in, scrub, url_secrets
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import (
    H08,
    create_source,
    in_hour,
    row,
    side,
    table_entry,
    write_config,
)

SECRET = "hunter2-secret"  # noqa: S105 -- a marker searched for in output, not a credential

# (url as written, what must be shown, the secret fragments that must not be)
URL_FORMS = [
    pytest.param(
        f"postgresql+psycopg://sync:{SECRET}@db.example:5432/app",
        "postgresql+psycopg://sync:***@db.example:5432/app",
        [SECRET],
        id="userinfo",
    ),
    pytest.param(
        f"postgresql+psycopg://sync@db.example:5432/app?password={SECRET}&sslmode=require",
        "postgresql+psycopg://sync@db.example:5432/app?password=***&sslmode=require",
        [SECRET],
        id="query-password",
    ),
    pytest.param(
        f"mysql+pymysql://root@db.example/app?passwd={SECRET}",
        "mysql+pymysql://root@db.example/app?passwd=***",
        [SECRET],
        id="query-passwd",
    ),
    pytest.param(
        "postgresql+psycopg://sync:hunter2@secret-part@db.example:5432/app",
        "postgresql+psycopg://sync:***@db.example:5432/app",
        ["hunter2", "secret-part"],
        id="unencoded-at",
    ),
    pytest.param(
        "mysql+pymysql://root:pass@word/more@db.example/app",
        "mysql+pymysql://root:***@db.example/app",
        ["pass@word", "word/more"],
        id="unencoded-at-and-slash",
    ),
    pytest.param(
        "postgresql+psycopg://sync:first-part@db.example/app?password=second@part",
        "postgresql+psycopg://sync:***@db.example/app?password=***",
        ["first-part", "second", "part"],
        id="both-with-at-in-query",
    ),
]


@pytest.mark.parametrize(("url", "shown", "hidden"), URL_FORMS)
def test_redact_url_hides_the_password_in_every_form(url: str, shown: str, hidden: list[str]) -> None:
    """Host, port, database and harmless parameters stay; every part of a password goes."""
    assert redact_url(url) == shown
    for fragment in hidden:
        assert fragment not in redact_url(url)


@pytest.mark.parametrize(("url", "shown", "hidden"), URL_FORMS)
def test_every_redacting_entry_point_agrees(url: str, shown: str, hidden: list[str]) -> None:
    """The engine's redact_url, the config's redacted_url and free-text scrubbing are the same function."""
    assert engine_redact_url(url) == shown
    assert ConnectionConfig.model_construct(url=SecretStr(url)).redacted_url == shown
    text = f"cannot connect to {url}: connection refused"
    for scrubbed in (redact_urls_in(text), Scrubber([url])(text)):
        assert scrubbed == f"cannot connect to {shown}: connection refused"


def test_scrubber_hides_the_fragment_a_driver_quotes_as_host() -> None:
    """With an unencoded @, the driver resolves the password's tail as a host name and says so."""
    url = "postgresql+psycopg://sync:hunter2@secret-part@127.0.0.1:1/app"
    message = 'could not translate host name "secret-part@127.0.0.1" to address'
    assert "secret-part" in url_secrets(url)
    assert Scrubber([url])(message) == 'could not translate host name "***@127.0.0.1" to address'


def test_scrub_leaves_short_secrets_and_other_links_alone() -> None:
    """A two-letter password would blank ordinary words; a UI link holds no credential."""
    assert scrub("pwd is ok", ["pw"]) == "pwd is ok"
    link = "http://127.0.0.1:3000/runs/abc?partition=2026-11-30-08:00"
    assert redact_urls_in(f"see {link}") == f"see {link}"


def test_unparseable_url_is_never_echoed() -> None:
    """A URL SQLAlchemy cannot parse cannot be shown safely: not a character of it is."""
    assert redact_url(f"postgresql://u:{SECRET}@host:notaport/db") == "<unparseable URL>"


def test_alert_texts_hide_passwords_in_every_url_form() -> None:
    """An error message quoted into an alert keeps no password, whatever form its URL had."""
    for param in URL_FORMS:
        url, shown, hidden = param.values
        alert = Alert(
            kind=AlertKind.RUN_FAILURE,
            table="orders",
            partition_key=None,
            summary=f"sync failed: {url}",
            facts={"error": f"cannot connect to {url}"},
        )
        assert alert.summary == f"sync failed: {shown}"
        assert alert.facts["error"] == f"cannot connect to {shown}"
        for fragment in hidden:
            assert fragment not in alert.summary + str(alert.facts["error"])


def test_config_refuses_a_password_with_an_unencoded_at() -> None:
    """Such a URL never connects (the driver gets half the password as host): refused at load, unquoted."""
    text = """\
connections:
  app: {url: "postgresql+psycopg://sync:hunter2@secret-part@db.example/app"}
tables:
  - name: orders
    source: {connection: app, table: orders}
    target: {connection: app, table: orders_copy}
    primary_key: [id]
    updated_at: updated_at
    start: "2026-11-01T00:00:00"
"""
    with pytest.raises(ConfigError, match=r"connection 'app': field 'url': .*unencoded '@'.*%40") as caught:
        parse_config(text, source="sync.yaml")
    assert "hunter2" not in str(caught.value)
    assert "secret-part" not in str(caught.value)


def test_config_error_hides_a_query_password() -> None:
    """A file rejected for another reason does not quote a ?password= it holds, not even as a key name."""
    text = f"""\
connections:
  app: {{url: "postgresql+psycopg://sync@db.example/app?password={SECRET}"}}
tables:
  - name: orders
    source: {{connection: app, table: orders}}
    target: {{connection: app, table: orders_copy}}
    primary_key: [id]
    updated_at: updated_at
    start: "2026-11-01T00:00:00"
    {SECRET}: 1
"""
    with pytest.raises(ConfigError, match=r"table 'orders': field '\*\*\*': unknown key") as caught:
        parse_config(text, source="sync.yaml")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("reachable", [True, False], ids=["synced", "unreachable"])
def test_query_password_stays_out_of_dagster_events(
    tmp_path: Path, make_db_url: MakeDbUrl, reachable: bool
) -> None:
    """A ?password= target URL appears in no event of a run, whether the sync succeeds or fails.

    Every event the run records (materialization metadata, logs, the failure and its message) is
    serialized as Dagster stores it and searched for the secret.
    """
    source_url = make_db_url("sqlite", "app")
    create_source(side("sqlite", source_url), [row(i, in_hour(H08, i)) for i in range(1, 4)])
    target = (
        make_db_url("postgresql", "warehouse")
        if reachable
        else "postgresql+psycopg://postgres@127.0.0.1:1/db"
    )
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": source_url, "warehouse": f"{target}?password={SECRET}"},
        [table_entry("orders", "app", "warehouse")],
        retry={"max_retries": 0},
    )
    config = load_config(path)
    result = materialize(
        [build_sync_asset(config.tables[0], config)],
        partition_key="2026-11-30-08:00",
        resources={"sync": SyncResource(config_path=str(path))},
        raise_on_error=False,
    )
    assert result.success is reachable
    events = result.all_events
    assert events
    assert SECRET not in serialize_value(events)
