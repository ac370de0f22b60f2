"""The tables the sync reads, as external assets: lineage from each source table to its sync asset.

Dagster shows an asset's upstream only if that upstream is an asset too. A source table is not
produced by this pipeline, so it is an :class:`~dagster.AssetSpec` without a body (an external
asset: shown, never materialized here) keyed ``source/<connection>/[<schema>/]<table>``, and each
``sync/<name>`` depends on it. Two synced tables reading one source table share its spec.

The key and the description name the connection, never its URL: this module reads no URL beyond
its backend name, so nothing here can carry a password into the UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from dagster import AssetKey, AssetsDefinition, AssetSpec

from sync_pipeline.config import SyncConfig, TableConfig
from sync_pipeline.orchestration.assets import ENGINE_KINDS, asset_key

SOURCE_PREFIX: Final = "source"


def source_key(table: TableConfig) -> AssetKey:
    """The external asset of the table ``table`` reads: ``source/<connection>/[<schema>/]<table>``."""
    ref = table.source
    return AssetKey([SOURCE_PREFIX, ref.connection, *([ref.schema_] if ref.schema_ else []), ref.table])


def build_source_specs(config: SyncConfig) -> list[AssetSpec]:
    """One external asset per distinct source table, in the group of its connection (as its syncs)."""
    specs: dict[AssetKey, AssetSpec] = {}
    readers: dict[AssetKey, list[str]] = {}
    for table in config.tables:
        key = source_key(table)
        readers.setdefault(key, []).append(f"sync/{table.name}")
        if key in specs:
            continue
        ref = table.source
        qualified = f"{ref.schema_}.{ref.table}" if ref.schema_ else ref.table
        specs[key] = AssetSpec(
            key=key,
            group_name=ref.connection,
            kinds={ENGINE_KINDS[config.connections[ref.connection].backend]},
            metadata={"dagster/table_name": qualified},
        )
    return [
        spec.replace_attributes(
            description=f"Table {spec.metadata['dagster/table_name']} of connection {spec.group_name}, "
            f"read by {', '.join(readers[key])}; owned by the application, not materialized here."
        )
        for key, spec in specs.items()
    ]


def with_sources_and_owners(config: SyncConfig, assets: Sequence[AssetsDefinition]) -> list[AssetsDefinition]:
    """The sync assets, each depending on its source table's spec and carrying the table's ``owners``
    and ``tags`` from the config (the pipeline's own tags win over a clashing key).
    """
    tables = {asset_key(table): table for table in config.tables}

    def described(spec: AssetSpec) -> AssetSpec:
        table = tables.get(spec.key)
        if table is None:
            return spec
        return spec.replace_attributes(
            deps=[*spec.deps, source_key(table)],
            owners=[*table.owners],
            tags={**table.tags, **spec.tags},
        )

    return [asset.map_asset_specs(described) for asset in assets]
