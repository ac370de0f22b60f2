"""The code location's lineage and ownership: each source table upstream of its sync, owners and tags.

Loading only: the databases named do not exist, and loading never looks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey

from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline.demo.config import DATA_DIR_ENV
from sync_pipeline_tests.dagster_helpers import load_definitions, table_entry, write_config

ORDERS, ITEMS = AssetKey(["sync", "orders"]), AssetKey(["sync", "items"])


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "demo-data"))


def test_each_source_table_is_an_external_asset_upstream_of_its_sync(tmp_path: Path) -> None:
    """Tables reading one source table share its asset; a schema is part of the key; no URL shows."""
    path = write_config(
        tmp_path / "sync.yaml",
        {
            "app": "postgresql+psycopg://sync:pw-in-url@127.0.0.1:1/app",
            "warehouse": "sqlite:///warehouse.db",
        },
        [
            table_entry("orders", "app", "warehouse"),
            table_entry("items", "app", "warehouse"),
            {
                **table_entry("archive", "app", "warehouse"),
                "source": {"connection": "app", "table": "orders", "schema": "old"},
            },
        ],
    )

    specs = {spec.key: spec for spec in load_definitions(str(path)).resolve_all_asset_specs()}

    source, archived = AssetKey(["source", "app", "orders"]), AssetKey(["source", "app", "old", "orders"])
    assert [d.asset_key for d in specs[ORDERS].deps] == [source]
    assert [d.asset_key for d in specs[ITEMS].deps] == [source]
    assert [d.asset_key for d in specs[AssetKey(["sync", "archive"])].deps] == [archived]
    assert specs[source].group_name == specs[ORDERS].group_name == "app"
    assert specs[source].kinds == {"postgres"}
    assert specs[archived].metadata["dagster/table_name"] == "old.orders"
    assert "sync/orders, sync/items" in str(specs[source].description)
    assert not any("pw-in-url" in repr(spec) for spec in specs.values())


def test_owners_and_tags_of_a_table_are_on_its_sync_asset(tmp_path: Path) -> None:
    """``owners`` and ``tags`` from the config; a table without them has none, the pipeline's tag stays."""
    path = write_config(
        tmp_path / "sync.yaml",
        {"app": "sqlite:///app.db", "warehouse": "sqlite:///warehouse.db"},
        [
            {**table_entry("orders", "app", "warehouse"), "owners": ["team:sales"], "tags": {"pii": "no"}},
            table_entry("items", "app", "warehouse"),
        ],
    )

    specs = {spec.key: spec for spec in load_definitions(str(path)).resolve_all_asset_specs()}

    assert specs[ORDERS].owners == ["team:sales"]
    assert specs[ORDERS].tags["pii"] == "no"
    assert specs[ORDERS].tags["sync_pipeline/table"] == "orders"
    assert specs[ITEMS].owners == []
    assert "pii" not in specs[ITEMS].tags
