"""The dg component: synced tables declared in a ``defs.yaml``, loaded by Dagster's component loading.

The component is loaded the way a dg project loads it (a defs folder, ``type:`` and ``attributes:``)
with none of the connection secrets in the environment, then one partition is materialized on real
databases with them set: the URLs are resolved in the step and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from dagster import AssetKey, Definitions, instance_for_test
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from dagster.components.testing import create_defs_folder_sandbox
from sqlalchemy.engine import make_url

from sync_pipeline.errors import ConfigError
from sync_pipeline.orchestration.component import SyncedTablesComponent
from sync_pipeline_tests.conftest import MakeDbUrl
from sync_pipeline_tests.dagster_helpers import H08, H09, create_source, in_hour, row, rows_in, side

SECRET = "pw-component-only-in-the-step"  # noqa: S105 - the marker the test looks for
ORDERS = AssetKey(["sync", "orders"])
SOURCE = AssetKey(["source", "app", "orders"])
TYPE = "sync_pipeline.orchestration.component.SyncedTablesComponent"


def orders_attributes(**table: Any) -> dict[str, Any]:
    """A ``defs.yaml``'s attributes: orders from a SQLite file into PostgreSQL, URLs through ${VAR}."""
    return {
        "connections": {
            "app": {"url": "sqlite:///${APP_DB_FILE}"},
            "warehouse": {"url": "postgresql+psycopg://postgres:${WH_PASSWORD}@${WH_HOST}/${WH_DATABASE}"},
        },
        "defaults": {"primary_key": ["id"], "updated_at": "updated_at"},
        "retry": {"max_retries": 0},  # a failure shows at once
        "tables": [
            {
                "name": "orders",
                "source": {"connection": "app", "table": "orders"},
                "target": {"connection": "warehouse", "table": "orders"},
                "start": "2026-11-30T00:00:00",
                **table,
            }
        ],
    }


@contextmanager
def component_defs(attributes: dict[str, Any]) -> Iterator[tuple[SyncedTablesComponent, Definitions]]:
    """Load a defs folder holding one ``defs.yaml`` of the component, as a dg project does."""
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "warehouse_sync"
        folder.mkdir()
        (folder / "defs.yaml").write_text(yaml.safe_dump({"type": TYPE, "attributes": attributes}))
        with sandbox.load_component_and_build_defs(defs_path=folder) as (component, defs):
            assert isinstance(component, SyncedTablesComponent)
            yield component, defs


def load_error(attributes: dict[str, Any]) -> ConfigError:
    """The configuration error that loading ``attributes`` fails with (Dagster wraps it in its own)."""
    with pytest.raises(Exception) as raised:  # noqa: PT011, SIM117 - the wrapper's class is private
        with component_defs(attributes):
            pass
    error: BaseException | None = raised.value
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__ or error.__context__
    assert isinstance(error, ConfigError), raised.value
    return error


@pytest.fixture
def no_secrets(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """None of the URLs' variables is set: loading must not need them."""
    for name in ("APP_DB_FILE", "WH_PASSWORD", "WH_HOST", "WH_DATABASE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defs_yaml_tables_sync_with_urls_resolved_only_in_the_step(
    make_db_url: MakeDbUrl, no_secrets: pytest.MonkeyPatch
) -> None:
    """A defs.yaml loads without the secrets, shows no URL or password, and syncs a partition.

    The partition's rows arrive exact through the component's own hourly job, once the variables
    are set for the step; the password is in no definition, snapshot or event.
    """
    source = side("sqlite", make_db_url("sqlite", "app"))
    target = side("postgresql", make_db_url("postgresql", "warehouse"))
    create_source(source, [*(row(i, in_hour(H08, i)) for i in range(1, 6)), row(9, in_hour(H09, 1))])
    target_url = make_url(target.url)

    with component_defs(orders_attributes()) as (_, defs), instance_for_test() as instance:
        specs = {spec.key: spec for spec in defs.resolve_all_asset_specs()}
        assert set(specs) == {ORDERS, SOURCE}
        assert [dep.asset_key for dep in specs[ORDERS].deps] == [SOURCE]
        assert specs[ORDERS].kinds == {"sqlite", "postgres"}
        snapshot = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
        for shown in ("${WH_PASSWORD}", "${APP_DB_FILE}", "postgresql+psycopg://postgres"):
            assert shown not in snapshot

        no_secrets.setenv("APP_DB_FILE", str(source.sqlite_path()))
        no_secrets.setenv("WH_PASSWORD", SECRET)  # trust authentication: any password connects
        no_secrets.setenv("WH_HOST", f"{target_url.host}:{target_url.port}")
        no_secrets.setenv("WH_DATABASE", str(target_url.database))
        result = defs.resolve_job_def("sync_hourly").execute_in_process(
            partition_key=H08.partition_key(), instance=instance
        )

        assert result.success
        [event] = result.get_asset_materialization_events()
        metadata = event.materialization.metadata
        assert (metadata["inserted"].value, metadata["source_rows"].value) == (5, 5)
        assert rows_in(target, "orders", H08) == rows_in(source, "orders", H08)
        assert rows_in(target, "orders", H09) == {}
        records = serialize_value(list(instance.all_logs(result.run_id)))
        for shown in (SECRET, str(source.sqlite_path()), str(target_url.database)):
            assert shown not in snapshot
        assert SECRET not in records
        assert str(source.sqlite_path()) not in records


def test_a_mistake_in_the_attributes_fails_the_load_naming_table_and_field(
    no_secrets: pytest.MonkeyPatch,
) -> None:
    """The attributes go through the configuration file's loader: the same message, at load."""
    message = str(load_error(orders_attributes(chunk_size=0)))
    assert "defs.yaml (attributes): table 'orders': field 'chunk_size'" in message


def test_a_url_without_a_written_scheme_is_refused_at_load(no_secrets: pytest.MonkeyPatch) -> None:
    """``url: ${VAR}`` alone hides the engine until the step; the component asks for the scheme."""
    attributes = orders_attributes()
    attributes["connections"]["app"]["url"] = "${APP_DB_URL}"
    assert "connections.app.url: write the URL's scheme out" in str(load_error(attributes))


def test_owners_and_tags_of_a_table_are_on_its_asset(no_secrets: pytest.MonkeyPatch) -> None:
    """``owners`` and ``tags`` of a table reach its asset; the pipeline's own table tag stays."""
    attributes = orders_attributes(owners=["data@example.com", "team:warehouse"], tags={"tier": "gold"})
    with component_defs(attributes) as (_, defs):
        spec = defs.get_assets_def(ORDERS).specs_by_key[ORDERS]
        assert spec.owners == ["data@example.com", "team:warehouse"]
        assert spec.tags["tier"] == "gold"
        assert spec.tags["sync_pipeline/table"] == "orders"


@pytest.mark.parametrize(
    ("table", "field", "problem"),
    [
        ({"owners": ["alice"]}, "owners", "neither an email address nor a team"),
        ({"tags": {"dagster/kind": "x"}}, "tags", "reserved"),
        ({"tags": {"tier": "gold class"}}, "tags", "may hold only"),
    ],
)
def test_bad_owners_and_tags_fail_the_load_naming_table_and_field(
    no_secrets: pytest.MonkeyPatch, table: dict[str, Any], field: str, problem: str
) -> None:
    """Dagster's rules for owners and tags are checked while the config loads, naming where."""
    message = str(load_error(orders_attributes(**table)))
    assert f"table 'orders': field '{field}'" in message
    assert problem in message


def test_a_scaffolded_defs_yaml_loads_as_it_is(no_secrets: pytest.MonkeyPatch) -> None:
    """``dg scaffold defs`` writes an example that loads before any variable is set, one table of it."""
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.scaffold_component(component_cls=SyncedTablesComponent, defs_path="tables")
        assert "${APP_DB_PASSWORD}" in (folder / "defs.yaml").read_text()
        with sandbox.load_component_and_build_defs(defs_path=folder) as (_, defs):
            keys = {spec.key for spec in defs.resolve_all_asset_specs()}
    assert keys == {ORDERS, SOURCE}
