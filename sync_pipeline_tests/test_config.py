"""Tests of loading and validating the YAML configuration (sync_pipeline.config)."""

from __future__ import annotations

import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sync_pipeline.config import (
    CONFIG_ENV_VAR,
    MAX_CONFIG_BYTES,
    ConnectionConfig,
    DeleteMode,
    SyncConfig,
    load_config,
    parse_config,
)
from sync_pipeline.errors import ConfigError, TerminalError

PASSWORD = "s3cr3t-pw"  # noqa: S105 -- a marker to search error messages for, not a credential

VALID = """\
partition_timezone: Europe/Paris
connections:
  app: {url: "${APP_DB_URL}"}
  warehouse: {url: "postgresql+psycopg://sync@localhost:5432/warehouse"}
defaults:
  target: {connection: warehouse, schema: raw}
  chunk_size: 5000
  columns: [id, updated_at]
tables:
  - name: orders
    description: "Orders from the app"
    source: {connection: app, table: orders}
    target: {table: orders_copy}
    primary_key: [id]
    updated_at: updated_at
    start: "2026-11-01T00:00:00"
    delete_mode: soft
    columns: [id, amount, updated_at]
  - name: customers
    source: {connection: app, table: customers, schema: crm}
    target: {connection: app, table: customers_copy, schema: copy}
    primary_key: [tenant, id]
    updated_at: modified
    start: 2026-10-01
    chunk_size: 100
    columns: [tenant, id, modified]
    naive_timezone: America/New_York
    lock_timeout_seconds: 12.5
"""

ENV = {"APP_DB_URL": "mysql+pymysql://app@db.example:3306/app"}


def edit(text: str, old: str, new: str) -> str:
    """Replace one fragment of a YAML text, failing loudly if the fragment is not there."""
    assert text.count(old) == 1, f"fragment {old!r} not found exactly once"
    return text.replace(old, new)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    """Write a configuration file under tmp_path and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    """Load a configuration that must be refused and return the ConfigError message."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV if environ is None else environ)
    return str(info.value)


# --------------------------------------------------------------------------------------------------
# Valid configurations


def test_full_config_loads_with_defaults_merged(tmp_path: Path) -> None:
    """A complete file loads; defaults fill missing keys, nested target dicts merge, table keys win."""
    path = write(tmp_path, VALID)
    config = load_config(path, environ=ENV)

    assert config.source_path == path
    assert config.partition_timezone == "Europe/Paris"
    assert set(config.connections) == {"app", "warehouse"}
    orders = config.table("orders")
    assert orders.description == "Orders from the app"
    assert orders.source.connection == "app"
    assert orders.source.table == "orders"
    assert orders.source.schema_ is None
    # target merged key by key: connection and schema from defaults, table from the table itself
    assert orders.target.connection == "warehouse"
    assert orders.target.schema_ == "raw"
    assert orders.target.table == "orders_copy"
    assert orders.chunk_size == 5000
    assert orders.columns == ["id", "amount", "updated_at"]  # lists replace, never concatenate
    assert orders.delete_mode is DeleteMode.SOFT
    assert orders.soft_delete_column == "_sync_deleted"
    assert orders.naive_timezone == "UTC"
    assert orders.lock_timeout_seconds == 300.0
    assert orders.start == datetime(2026, 11, 1)  # naive, as written

    customers = config.table("customers")
    assert customers.source.schema_ == "crm"
    assert customers.target.connection == "app"
    assert customers.target.schema_ == "copy"
    assert customers.primary_key == ["tenant", "id"]
    assert customers.chunk_size == 100
    assert customers.delete_mode is DeleteMode.HARD
    assert customers.naive_timezone == "America/New_York"
    assert customers.lock_timeout_seconds == 12.5
    assert customers.start == datetime(2026, 10, 1)  # an unquoted YAML date is midnight


def test_minimal_config_uses_documented_defaults() -> None:
    """Optional keys take their documented defaults when neither table nor defaults set them."""
    config = parse_config(
        """
        connections: {db: {url: "sqlite:///x.db"}}
        tables:
          - name: t
            source: {connection: db, table: a}
            target: {connection: db, table: b}
            primary_key: [id]
            updated_at: ts
            start: "2026-01-01T05:00:00"
        """.replace("        ", ""),
        environ={},
    )
    table = config.tables[0]
    assert config.partition_timezone == "UTC"
    assert config.source_path is None
    assert table.delete_mode is DeleteMode.HARD
    assert table.soft_delete_column == "_sync_deleted"
    assert table.chunk_size == 10_000
    assert table.naive_timezone == "UTC"
    assert table.lock_timeout_seconds == 300.0
    assert table.columns is None
    assert table.description is None


def test_start_in_makes_naive_start_aware_and_converts_aware_start() -> None:
    """start_in reads a naive start as wall time in the zone and converts an aware one."""
    config = parse_config(VALID, environ=ENV)
    paris = config.table("orders").start_in("Europe/Paris")
    assert paris == datetime(2026, 11, 1, tzinfo=ZoneInfo("Europe/Paris"))
    assert paris.utcoffset() == timedelta(hours=1)

    aware = parse_config(
        edit(VALID, '"2026-11-01T00:00:00"', '"2026-11-01T00:00:00+01:00"'), environ=ENV
    ).table("orders")
    assert aware.start.tzinfo is not None
    assert aware.start_in("UTC") == datetime(2026, 10, 31, 23, tzinfo=UTC)


def test_connection_properties_redact_password_and_normalise_backend() -> None:
    """redacted_url hides the password; backend reports mariadb as mysql."""
    connection = ConnectionConfig.model_validate({"url": f"mariadb+pymysql://u:{PASSWORD}@h:3306/db"})
    assert PASSWORD not in connection.redacted_url
    assert connection.redacted_url == "mariadb+pymysql://u:***@h:3306/db"
    assert connection.backend == "mysql"
    assert connection.sqlalchemy_url.password == PASSWORD
    assert ConnectionConfig.model_validate({"url": "sqlite://"}).backend == "sqlite"
    assert PASSWORD not in repr(connection)
    assert PASSWORD not in str(connection)


def test_config_env_var_name_is_public() -> None:
    """The environment variable naming the config file is part of the public interface."""
    assert CONFIG_ENV_VAR == "SYNC_PIPELINE_CONFIG"


def test_table_lookup_error_lists_known_names(tmp_path: Path) -> None:
    """An unknown table name raises a ConfigError (also a KeyError) listing the file and known tables."""
    path = write(tmp_path, VALID)
    config = load_config(path, environ=ENV)
    with pytest.raises(ConfigError) as info:
        config.table("ordres")
    message = str(info.value)
    assert isinstance(info.value, KeyError)
    assert str(path) in message
    assert "'ordres'" in message
    assert "'orders'" in message
    assert "'customers'" in message


def test_models_are_frozen() -> None:
    """A loaded configuration cannot be changed by accident."""
    config = parse_config(VALID, environ=ENV)
    with pytest.raises(ValueError, match="frozen"):
        config.partition_timezone = "UTC"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# ${VAR} interpolation


def test_interpolation_of_variables_defaults_and_escapes() -> None:
    """${VAR} reads the environment, ${VAR:-default} falls back when unset or empty, $${ is a literal ${."""
    text = edit(VALID, '"Orders from the app"', '"${DESC} ${UNSET:-fallback} ${EMPTY:-used} $${NOT_A_VAR}"')
    text = edit(
        text, "source: {connection: app, table: orders}", "source: {connection: app, table: '${SRC}'}"
    )
    environ = {**ENV, "DESC": "hello", "EMPTY": "", "SRC": "orders_v2"}
    config = parse_config(text, environ=environ)
    orders = config.table("orders")
    assert orders.description == "hello fallback used ${NOT_A_VAR}"
    assert orders.source.table == "orders_v2"
    assert config.connections["app"].url.get_secret_value() == ENV["APP_DB_URL"]


def test_interpolated_numbers_are_validated_as_numbers() -> None:
    """A number supplied through ${VAR} is converted and range-checked like a literal one."""
    text = edit(VALID, "chunk_size: 5000", "chunk_size: ${CHUNK:-5000}")
    assert parse_config(text, environ={**ENV, "CHUNK": "42"}).table("orders").chunk_size == 42
    assert parse_config(text, environ=ENV).table("orders").chunk_size == 5000


def test_interpolation_does_not_touch_keys_or_rescan_values() -> None:
    """Keys are never interpolated, and a substituted value containing ${ is not expanded again."""
    text = edit(VALID, '"Orders from the app"', '"${DESC}"')
    config = parse_config(text, environ={**ENV, "DESC": "${APP_DB_URL}"})
    assert config.table("orders").description == "${APP_DB_URL}"


def test_missing_variable_names_file_place_and_variable(tmp_path: Path) -> None:
    """A variable that is not set is reported with the file, the place and the variable name."""
    message = config_error(tmp_path, VALID, environ={})
    assert str(tmp_path / "config.yaml") in message
    assert "connections.app.url" in message
    assert "APP_DB_URL" in message

    text = edit(VALID, "table: customers,", "table: '${CUSTOMERS_TABLE}',")
    message = config_error(tmp_path, text)
    assert "table 'customers', field 'source.table'" in message
    assert "CUSTOMERS_TABLE" in message


def test_malformed_reference_is_refused(tmp_path: Path) -> None:
    """An unterminated ${ is an error that points at the place, instead of a silent literal."""
    text = edit(VALID, '"Orders from the app"', '"costs ${oops"')
    message = config_error(tmp_path, text)
    assert "table 'orders', field 'description'" in message
    assert "$${" in message


# --------------------------------------------------------------------------------------------------
# Structural errors


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("partition_timezone:", "partition_zone:", "field 'partition_zone': unknown key"),
        ("primary_key: [id]\n", "primary_keys: [id]\n", "table 'orders': field 'primary_keys': unknown key"),
        (
            "source: {connection: app, table: orders}",
            "source: {connection: app, table: orders, shema: x}",
            "table 'orders': field 'source.shema': unknown key",
        ),
    ],
    ids=["top-level", "table", "source"],
)
def test_unknown_key_is_reported_by_name(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """An unknown key is reported with its name and, inside a table, the table's name."""
    message = config_error(tmp_path, edit(VALID, old, new))
    assert expected in message
    assert "extra inputs are not permitted" in message
    assert str(tmp_path / "config.yaml") in message


def test_unknown_key_from_defaults_says_so(tmp_path: Path) -> None:
    """An unknown key set in defaults is blamed on each table, with a pointer to defaults."""
    message = config_error(tmp_path, edit(VALID, "chunk_size: 5000", "chunk_sise: 5000"))
    assert "table 'orders': field 'chunk_sise': unknown key" in message
    assert "(set in defaults)" in message


def test_missing_required_field(tmp_path: Path) -> None:
    """A missing required key is reported with the table and field."""
    message = config_error(tmp_path, edit(VALID, "    updated_at: updated_at\n", ""))
    assert "table 'orders': field 'updated_at': required key is missing" in message


def test_table_without_name_is_labelled_by_position(tmp_path: Path) -> None:
    """A table that has no name is named by its position in the list."""
    message = config_error(tmp_path, edit(VALID, "  - name: customers\n    source", "  - source"))
    assert "tables[1]: field 'name': required key is missing" in message


def test_several_errors_are_reported_one_per_line(tmp_path: Path) -> None:
    """All validation errors are reported at once, one line each, each naming the file."""
    text = edit(VALID, "primary_key: [id]", "primary_key: []")
    text = edit(text, "chunk_size: 100", "chunk_size: 0")
    lines = config_error(tmp_path, text).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(str(tmp_path / "config.yaml") + ": ") for line in lines)
    assert any("table 'orders': field 'primary_key'" in line for line in lines)
    assert any("table 'customers': field 'chunk_size'" in line for line in lines)


def test_unknown_connection_names_table_field_and_name(tmp_path: Path) -> None:
    """An undefined connection is reported with the table, the field, the name and the defined ones."""
    message = config_error(
        tmp_path,
        edit(VALID, "source: {connection: app, table: orders}", "source: {connection: ap, table: orders}"),
    )
    assert "table 'orders': field 'source.connection'" in message
    assert "'ap'" in message
    assert "'app'" in message
    assert "'warehouse'" in message


def test_unknown_target_connection_from_defaults(tmp_path: Path) -> None:
    """An unknown connection inherited from defaults is reported against target.connection."""
    message = config_error(
        tmp_path, edit(VALID, "target: {connection: warehouse,", "target: {connection: wh,")
    )
    assert "table 'orders': field 'target.connection': unknown connection 'wh'" in message


def test_duplicate_table_names(tmp_path: Path) -> None:
    """Two tables with the same name (the same asset key) are refused."""
    message = config_error(tmp_path, edit(VALID, "name: customers", "name: orders"))
    assert "duplicate table name 'orders'" in message
    assert "field 'name'" in message


@pytest.mark.parametrize(
    ("primary_key", "expected"),
    [
        ("[]", "at least 1 item"),
        ("[id, id]", "duplicate column(s): 'id'"),
        ("[id, '']", "at least 1 character"),
        ("id", "valid list"),
    ],
    ids=["empty", "duplicate", "empty-name", "not-a-list"],
)
def test_bad_primary_key(tmp_path: Path, primary_key: str, expected: str) -> None:
    """primary_key must be a non-empty list of distinct, non-empty column names."""
    message = config_error(tmp_path, edit(VALID, "primary_key: [id]", f"primary_key: {primary_key}"))
    assert "table 'orders': field 'primary_key" in message
    assert expected in message


def test_updated_at_must_not_be_a_key_column(tmp_path: Path) -> None:
    """updated_at cannot be part of the primary key: it changes on update."""
    message = config_error(tmp_path, edit(VALID, "updated_at: modified", "updated_at: tenant"))
    assert "table 'customers': field 'updated_at'" in message


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        pytest.param('"2026-11-01T00:30:00"', "on the hour", id="minutes"),
        pytest.param('"2026-11-01T00:00:01"', "on the hour", id="seconds"),
        pytest.param('"2026-11-01T00:00:00.5"', "on the hour", id="fraction"),
        # On the hour in its own offset, not in partition_timezone: the zone is named.
        pytest.param('"2026-11-01T00:00:00+05:30"', "Europe/Paris", id="aware-off-the-hour-in-zone"),
        # A naive wall time that partition_timezone skips (spring forward).
        pytest.param('"2027-03-28T02:00:00"', "does not exist", id="skipped-by-daylight-saving"),
    ],
)
def test_start_that_is_no_partition_start_is_refused(tmp_path: Path, start: str, expected: str) -> None:
    """A start that is not the start of an hour of partition_timezone is refused, naming the table,
    the field and why.
    """
    message = config_error(tmp_path, edit(VALID, '"2026-11-01T00:00:00"', start))
    assert "table 'orders': field 'start'" in message
    assert expected in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "partition_timezone: Europe/Paris",
            "partition_timezone: Europe/Pariss",
            "field 'partition_timezone'",
        ),
        (
            "naive_timezone: America/New_York",
            "naive_timezone: EST5EDTX",
            "table 'customers': field 'naive_timezone'",
        ),
        (
            "partition_timezone: Europe/Paris",
            "partition_timezone: ../../etc/passwd",
            "field 'partition_timezone'",
        ),
        ("partition_timezone: Europe/Paris", "partition_timezone: America", "field 'partition_timezone'"),
    ],
    ids=["partition", "naive", "path-traversal", "directory"],
)
def test_bad_timezone(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """Zone names are checked with zoneinfo when the file is loaded."""
    message = config_error(tmp_path, edit(VALID, old, new))
    assert expected in message
    assert "unknown time zone" in message


def test_bad_delete_mode(tmp_path: Path) -> None:
    """delete_mode accepts only hard, soft and ignore."""
    message = config_error(tmp_path, edit(VALID, "delete_mode: soft", "delete_mode: purge"))
    assert "table 'orders': field 'delete_mode'" in message
    assert "'hard', 'soft' or 'ignore'" in message


def test_soft_delete_column_must_not_be_synced(tmp_path: Path) -> None:
    """In soft mode the marker column cannot also be a synced column."""
    text = edit(VALID, "delete_mode: soft", "delete_mode: soft\n    soft_delete_column: amount")
    message = config_error(tmp_path, text)
    assert "table 'orders': field 'soft_delete_column'" in message


def test_columns_must_include_key_and_updated_at(tmp_path: Path) -> None:
    """columns, when given, must contain every primary_key column and updated_at."""
    message = config_error(tmp_path, edit(VALID, "columns: [tenant, id, modified]", "columns: [id, name]"))
    assert "table 'customers': field 'columns'" in message
    assert "'tenant'" in message
    assert "'modified'" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("chunk_size: 100", "chunk_size: 0", "chunk_size"),
        ("chunk_size: 100", "chunk_size: 1000001", "chunk_size"),
        ("chunk_size: 100", "chunk_size: yes", "chunk_size"),
        ("lock_timeout_seconds: 12.5", "lock_timeout_seconds: 0", "lock_timeout_seconds"),
        ("lock_timeout_seconds: 12.5", "lock_timeout_seconds: .inf", "lock_timeout_seconds"),
        ("name: customers", "name: 9customers", "name"),
        ("name: customers", "name: cust-omers", "name"),
    ],
)
def test_out_of_range_values(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """Numeric bounds and the table name pattern are enforced."""
    message = config_error(tmp_path, edit(VALID, old, new))
    assert f"field '{expected}'" in message


def test_unsupported_backend_names_connection_and_backend(tmp_path: Path) -> None:
    """A URL for a backend the engine does not support names the connection and the backend."""
    message = config_error(tmp_path, VALID, environ={"APP_DB_URL": f"oracle://scott:{PASSWORD}@db/orcl"})
    assert "connection 'app'" in message
    assert "'oracle'" in message
    assert PASSWORD not in message


def test_empty_connections_and_tables_are_refused(tmp_path: Path) -> None:
    """A file with no connections or no tables is refused."""
    message = config_error(tmp_path, "connections: {}\ntables: []\n")
    assert "field 'connections'" in message
    assert "field 'tables'" in message


# --------------------------------------------------------------------------------------------------
# Hostile or broken files


def test_non_yaml_file_reports_line_and_column(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line and column."""
    message = config_error(tmp_path, "connections: {app: {url: sqlite://}\ntables: [\n")
    assert str(tmp_path / "config.yaml") in message
    assert "invalid YAML" in message
    assert "line " in message
    assert "column " in message


def test_binary_file_is_refused(tmp_path: Path) -> None:
    """A file that is not UTF-8 text is refused with a ConfigError."""
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, environ=ENV)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "a list"),
        ("just a sentence\n", "a string"),
        ("", "empty"),
        ("# only a comment\n", "empty"),
    ],
)
def test_document_that_is_not_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    """The top level must be a mapping."""
    message = config_error(tmp_path, text)
    assert "mapping" in message
    assert expected in message


def test_non_string_key_is_refused(tmp_path: Path) -> None:
    """A key YAML reads as a boolean (on/yes) or number is refused with a hint to quote it."""
    message = config_error(tmp_path, VALID + "on: true\n")
    assert "not a string" in message


def test_file_over_one_mebibyte_is_refused_before_reading(tmp_path: Path) -> None:
    """A file over 1 MiB is refused with a message giving the limit."""
    text = VALID + "#" + "x" * MAX_CONFIG_BYTES + "\n"
    message = config_error(tmp_path, text)
    assert "1 MiB" in message


def test_text_over_one_mebibyte_is_refused_by_parse_config() -> None:
    """parse_config applies the same size limit to text built in memory."""
    with pytest.raises(ConfigError, match="1 MiB"):
        parse_config(VALID + "#" + "x" * MAX_CONFIG_BYTES, environ=ENV)


def test_missing_file_and_directory_are_config_errors(tmp_path: Path) -> None:
    """A path that is missing or a directory raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ=ENV)
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path, environ=ENV)


def test_billion_laughs_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """A YAML alias bomb (10**9 leaves from a few hundred bytes) is refused in well under a second."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
        previous = name
    started = time.perf_counter()
    message = config_error(tmp_path, "\n".join(lines) + "\n")
    assert time.perf_counter() - started < 2.0
    assert "too large or too deeply aliased" in message


def test_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    """A recursive alias is refused by the depth limit instead of looping forever."""
    message = config_error(tmp_path, "tables: &t [*t]\n")
    assert "nested deeper than 50" in message


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    """Nesting deeper than 50 levels is refused, whether or not the YAML parser itself copes."""
    for depth in (60, 5000):
        message = config_error(tmp_path, "x: " + "[" * depth + "]" * depth + "\n")
        assert "deep" in message


# --------------------------------------------------------------------------------------------------
# Passwords never leak


def _failing_configs() -> list[tuple[str, str, dict[str, str]]]:
    """Broken configurations that each hold the password, directly or through ${VAR}."""
    direct_url = f"postgresql+psycopg://sync:{PASSWORD}@localhost:5432/warehouse"
    with_direct = edit(VALID, "postgresql+psycopg://sync@localhost:5432/warehouse", direct_url)
    env_url = {"APP_DB_URL": f"mysql+pymysql://app:{PASSWORD}@db:3306/app"}
    env_password = edit(VALID, "postgresql+psycopg://sync@", "postgresql+psycopg://sync:${PW}@")
    bad_port = f"postgresql+psycopg://u:{PASSWORD}@host:notaport/db"
    return [
        ("table-error-direct", edit(with_direct, "primary_key: [id]", "primary_key: []"), ENV),
        ("table-error-env", edit(VALID, "primary_key: [id]", "primary_key: []"), env_url),
        (
            "table-error-env-password",
            edit(env_password, "delete_mode: soft", "delete_mode: x"),
            {**ENV, "PW": PASSWORD},
        ),
        ("bad-port-direct", edit(VALID, "postgresql+psycopg://sync@localhost:5432/warehouse", bad_port), ENV),
        ("bad-port-env", VALID, {"APP_DB_URL": bad_port}),
        ("oracle", VALID, {"APP_DB_URL": f"oracle://u:{PASSWORD}@h/db"}),
        ("unparsable", VALID, {"APP_DB_URL": f"u:{PASSWORD}@host/db"}),
        ("url-not-string", edit(VALID, 'url: "${APP_DB_URL}"', f"url: [{PASSWORD}]"), ENV),
        (
            "extra-key-next-to-url",
            edit(VALID, 'url: "${APP_DB_URL}"', 'url: "${APP_DB_URL}", pw: 1'),
            env_url,
        ),
        ("missing-variable", edit(with_direct, "table: customers,", "table: '${NOPE}',"), ENV),
        ("yaml-syntax", edit(with_direct, '/warehouse"}', '/warehouse"}}'), ENV),
        ("yaml-unclosed-quote", edit(with_direct, f'{PASSWORD}@localhost:5432/warehouse"', PASSWORD), ENV),
        (
            "unknown-connection",
            edit(with_direct, "connection: app, table: orders", "connection: x, table: o"),
            ENV,
        ),
    ]


@pytest.mark.parametrize(
    ("case", "text", "environ"), _failing_configs(), ids=[c[0] for c in _failing_configs()]
)
def test_password_never_appears_in_errors(
    tmp_path: Path, case: str, text: str, environ: dict[str, str]
) -> None:
    """No ConfigError message, repr or printed traceback contains a URL password."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ)
    assert PASSWORD not in str(info.value)
    assert PASSWORD not in repr(info.value)
    assert PASSWORD not in "".join(traceback.format_exception(info.value))
    with pytest.raises(ConfigError) as from_text:
        parse_config(text, environ=environ)
    assert PASSWORD not in str(from_text.value)


def test_password_never_appears_in_config_repr_or_str() -> None:
    """A loaded config prints its URLs masked, whether given directly or through ${VAR}."""
    text = edit(VALID, "postgresql+psycopg://sync@", f"postgresql+psycopg://sync:{PASSWORD}@")
    config = parse_config(text, environ={"APP_DB_URL": f"mysql+pymysql://app:{PASSWORD}@db/app"})
    assert PASSWORD not in repr(config)
    assert PASSWORD not in str(config)
    assert PASSWORD not in repr(config.connections)
    for connection in config.connections.values():
        assert PASSWORD not in connection.redacted_url
        assert PASSWORD in connection.url.get_secret_value()


def test_config_error_is_terminal() -> None:
    """Configuration errors are terminal: the orchestration layer must not retry them."""
    with pytest.raises(TerminalError):
        parse_config("- not a mapping\n")


def test_sync_config_can_be_built_in_code() -> None:
    """Programs can build a SyncConfig without YAML, and the same checks apply."""
    config = SyncConfig.model_validate(
        {
            "connections": {"db": {"url": "sqlite://"}},
            "tables": [
                {
                    "name": "t",
                    "source": {"connection": "db", "table": "a"},
                    "target": {"connection": "db", "table": "b", "schema": "s"},
                    "primary_key": ["id"],
                    "updated_at": "ts",
                    "start": datetime(2026, 1, 1),
                }
            ],
        }
    )
    assert config.tables[0].target.schema_ == "s"
