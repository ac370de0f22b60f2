"""Tests of the ``sync-pipeline`` command (sync_pipeline.cli) on real databases.

Most tests drive the command through click's ``CliRunner`` (fast, same process); a few start the
installed console script as a real process, which is how operators and cron jobs run it, to prove
the entry point, exit codes and stream separation hold outside the test harness too.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from sync_pipeline.cli.main import cli
from sync_pipeline.config import CONFIG_ENV_VAR
from sync_pipeline_tests.conftest import MakeDbUrl

PASSWORD = "hunter2-secret"  # noqa: S105 -- a marker searched for in output, not a credential
PARTITION = "2026-11-30-08:00"
SCRIPT = Path(sys.executable).parent / "sync-pipeline"

ORDERS = sa.Table(
    "orders",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("amount", sa.Numeric(12, 2)),
    sa.Column("note", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)


def at(hour: int, minute: int) -> datetime:
    """An instant on the test day, 2026-11-30, in UTC."""
    return datetime(2026, 11, 30, hour, minute, tzinfo=UTC)


def seed(url: str, ids: list[int], *, outside: int = 1, null: int = 1) -> None:
    """Create the source ``orders`` table: ``ids`` inside the 08:00 hour, more rows outside it."""
    engine = sa.create_engine(url)
    rows = [{"id": i, "amount": i * 1.5, "note": f"order {i}", "updated_at": at(8, i % 60)} for i in ids]
    rows += [{"id": 1000 + i, "amount": 1, "note": "later", "updated_at": at(10, i)} for i in range(outside)]
    rows += [{"id": 2000 + i, "amount": 1, "note": "undated", "updated_at": None} for i in range(null)]
    try:
        with engine.begin() as conn:
            ORDERS.create(conn)
            conn.execute(ORDERS.insert(), rows)
    finally:
        engine.dispose()


def execute(url: str, *statements: sa.Executable) -> None:
    """Run statements in one transaction on ``url``."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        engine.dispose()


def rows_of(url: str) -> list[tuple[Any, ...]] | None:
    """The target's ``orders`` rows ordered by id, or None when the table does not exist."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("orders"):
                return None
            table = sa.Table("orders", sa.MetaData(), autoload_with=conn)
            return [tuple(row) for row in conn.execute(sa.select(table).order_by(table.c.id))]
    finally:
        engine.dispose()


def write_config(tmp_path: Path, source: str, target: str, *, extra_tables: str = "") -> Path:
    """A config with connections ``app`` (source) and ``warehouse`` (target) and table ``orders``."""
    path = tmp_path / "sync.yaml"
    path.write_text(
        f"""\
connections:
  app: {{url: "{source}"}}
  warehouse: {{url: "{target}"}}
tables:
  - name: orders
    source: {{connection: app, table: orders}}
    target: {{connection: warehouse, table: orders}}
    primary_key: [id]
    updated_at: updated_at
    start: "2026-11-01T00:00:00"
{extra_tables}""",
        encoding="utf-8",
    )
    return path


def run(*args: str | Path, env: dict[str, str | None] | None = None) -> Result:
    """Invoke the command in-process; SYNC_PIPELINE_CONFIG is unset unless ``env`` sets it."""
    environment: dict[str, str | None] = {CONFIG_ENV_VAR: None}
    environment.update(env or {})
    return CliRunner().invoke(cli, [str(arg) for arg in args], env=environment, catch_exceptions=False)


def run_process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Start the installed console script as a real process, as an operator would."""
    env = {name: value for name, value in os.environ.items() if name != CONFIG_ENV_VAR}
    return subprocess.run(
        [str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def counts(output: str) -> dict[str, int]:
    """The ``  name   value`` lines of the text output, as a dict."""
    found: dict[str, int] = {}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) >= 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found


def samples(output: str) -> dict[str, str]:
    """The ``kind: key, key`` sample lines of the diff output (the part after the colon)."""
    kinds = ("inserted", "updated", "moved_in", "moved_out", "deleted")
    return {
        line.split(":")[0].split(" (")[0]: line.split(": ", 1)[1]
        for line in output.splitlines()
        if line.startswith(kinds) and ": " in line
    }


@pytest.fixture
def sqlite_pair(make_db_url: MakeDbUrl, tmp_path: Path) -> tuple[str, str, Path]:
    """A seeded SQLite source (ids 1-3 in the hour), a SQLite target that does not exist yet, the config."""
    source, target = make_db_url("sqlite", "app"), make_db_url("sqlite", "warehouse")
    seed(source, [1, 2, 3])
    return source, target, write_config(tmp_path, source, target)


@pytest.fixture
def pg_pair(make_db_url: MakeDbUrl, tmp_path: Path) -> tuple[str, str, Path]:
    """A seeded SQLite source (ids 1-3 in the hour), an empty PostgreSQL target database, the config."""
    source, target = make_db_url("sqlite", "app"), make_db_url("postgresql", "warehouse")
    seed(source, [1, 2, 3])
    return source, target, write_config(tmp_path, source, target)


# --------------------------------------------------------------------------------------------------
# Help


@pytest.mark.parametrize("command", [[], ["validate"], ["diff"], ["sync"]])
def test_help_of_every_command(command: list[str]) -> None:
    """Every command explains itself and the --config option with its environment default."""
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: sync-pipeline")
    assert "--config PATH" in result.stdout
    assert CONFIG_ENV_VAR in result.stdout
    if command in (["diff"], ["sync"]):
        assert "--partition KEY" in result.stdout
        assert "--json" in result.stdout
    if command == ["diff"]:
        assert "--limit" in result.stdout
        assert "nothing is written" in result.stdout.lower()


def test_help_of_the_installed_script() -> None:
    """The console script declared in pyproject is installed and runs as its own process."""
    result = run_process("--help")
    assert result.returncode == 0, result.stderr
    for command in ("validate", "diff", "sync"):
        assert command in result.stdout


# --------------------------------------------------------------------------------------------------
# validate


def test_validate_ok_before_and_after_the_first_sync(pg_pair: tuple[str, str, Path]) -> None:
    """validate passes on a good table, saying whether the target exists, and creates nothing."""
    _, target, config = pg_pair
    result = run("validate", "--config", config)
    assert result.exit_code == 0, result.output
    assert result.stdout == "ok   orders  source app → target warehouse (target will be created)\n"
    assert rows_of(target) is None

    assert run("sync", "orders", "--partition", PARTITION, "--config", config).exit_code == 0
    result = run("validate", "--config", config)
    assert result.exit_code == 0, result.output
    assert "(target exists)" in result.stdout


def test_validate_as_a_real_process(sqlite_pair: tuple[str, str, Path]) -> None:
    """The installed script validates and exits 0, printing to stdout and nothing to stderr."""
    _, _, config = sqlite_pair
    result = run_process("validate", "--config", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok   orders")
    assert result.stderr == ""


def test_validate_missing_table_fails_naming_it(
    make_db_url: MakeDbUrl, tmp_path: Path, sqlite_pair: tuple[str, str, Path]
) -> None:
    """A table whose source does not exist fails (exit 1) with its name; the good table still passes."""
    source, target, _ = sqlite_pair
    ghost = """\
  - name: ghost
    source: {connection: app, table: ghost_orders}
    target: {connection: warehouse, table: ghost_copy}
    primary_key: [id]
    updated_at: updated_at
    start: "2026-11-01T00:00:00"
"""
    config = write_config(tmp_path, source, target, extra_tables=ghost)
    result = run("validate", "--config", config)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok   orders")
    assert lines[1] == "FAIL ghost: source table 'ghost_orders' (connection 'app') does not exist"
    assert "1 of 2 table(s) failed" in result.stderr
    assert "Traceback" not in result.output

    only_good = run("validate", "orders", "--config", config)  # named tables only
    assert only_good.exit_code == 0, only_good.output
    assert "ghost" not in only_good.stdout


def test_validate_reports_an_incompatible_target(pg_pair: tuple[str, str, Path]) -> None:
    """An existing target whose column has the wrong type fails validation naming the column."""
    _, target, config = pg_pair
    execute(
        target,
        sa.text(
            "CREATE TABLE orders (id integer primary key, amount numeric, note integer, "
            "updated_at timestamptz)"
        ),
    )
    result = run("validate", "--config", config)
    assert result.exit_code == 1
    assert result.stdout.startswith("FAIL orders: target table 'orders'")
    assert "column 'note'" in result.stdout


def test_validate_unreachable_database_hides_the_password(make_db_url: MakeDbUrl, tmp_path: Path) -> None:
    """A refused connection is reported per table, redacted, with no traceback (in-process and real)."""
    source = make_db_url("sqlite", "app")
    seed(source, [1])
    config = write_config(tmp_path, source, f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/db")
    result = run("validate", "--config", config)
    process = run_process("validate", "--config", config)
    for exit_code, stdout, stderr in (
        (result.exit_code, result.stdout, result.stderr),
        (process.returncode, process.stdout, process.stderr),
    ):
        assert exit_code == 1
        assert stdout.startswith(
            "FAIL orders: cannot connect to target connection 'warehouse' "
            "(postgresql+psycopg://postgres:***@127.0.0.1:1/db)"
        )
        assert PASSWORD not in stdout + stderr
        assert "Traceback" not in stdout + stderr


@pytest.mark.parametrize("command", ["diff", "sync"])
def test_diff_and_sync_on_unreachable_database_hide_the_password(
    make_db_url: MakeDbUrl, tmp_path: Path, command: str
) -> None:
    """diff and sync fail with exit 1 and a one-line, redacted message naming both connections."""
    target = make_db_url("sqlite", "warehouse")
    config = write_config(tmp_path, f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:1/app", target)
    result = run(command, "orders", "--partition", PARTITION, "--config", config)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: orders: ")
    assert "mysql+pymysql://root:***@127.0.0.1:1/app" in result.stderr
    assert PASSWORD not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_driver_that_is_not_installed_is_named(make_db_url: MakeDbUrl, tmp_path: Path) -> None:
    """A URL naming a driver the project does not ship fails with what to use instead, no traceback."""
    assert importlib.util.find_spec("pg8000") is None, "pg8000 must not be installed for this test"
    source = make_db_url("sqlite", "app")
    seed(source, [1])
    config = write_config(tmp_path, source, f"postgresql+pg8000://postgres:{PASSWORD}@127.0.0.1:1/db")
    result = run("validate", "--config", config)
    assert result.exit_code == 1
    assert result.stdout.startswith("FAIL orders: target connection 'warehouse': database driver 'pg8000'")
    assert "postgresql+psycopg://" in result.stdout
    synced = run("sync", "orders", "-p", PARTITION, "--config", config)
    assert synced.exit_code == 2
    assert "database driver 'pg8000' is not installed" in synced.stderr
    assert PASSWORD not in result.output + synced.output
    assert "Traceback" not in result.output + synced.output


# --------------------------------------------------------------------------------------------------
# diff


def test_diff_into_missing_target_counts_and_creates_nothing(sqlite_pair: tuple[str, str, Path]) -> None:
    """Before the first sync every source row of the hour would be inserted, and the target is not created."""
    _, target, config = sqlite_pair
    result = run("diff", "orders", "--partition", PARTITION, "--config", config)
    assert result.exit_code == 0, result.output
    assert "dry run, nothing written" in result.stdout
    assert counts(result.stdout) | {"seconds": 0} == {
        "inserted": 3,
        "updated": 0,
        "deleted": 0,
        "unchanged": 0,
        "source_rows": 3,
        "target_rows": 3,
        "null_updated_at": 1,
        "unplaced_updated_at": 0,
        "skipped_newer": 0,
        "kept_deleted": 0,
        "seconds": 0,
    }
    assert rows_of(target) is None


def test_diff_shows_counts_and_sample_keys_and_writes_nothing(pg_pair: tuple[str, str, Path]) -> None:
    """After source changes diff counts an insert, an update, a delete, lists their keys, writes nothing."""
    source, target, config = pg_pair
    assert run("sync", "orders", "--partition", PARTITION, "--config", config).exit_code == 0
    execute(
        source,
        ORDERS.insert().values(id=10, amount=10, note="new", updated_at=at(8, 40)),
        ORDERS.update().where(ORDERS.c.id == 2).values(note="changed", updated_at=at(8, 50)),
        ORDERS.delete().where(ORDERS.c.id == 3),
    )
    before = rows_of(target)
    result = run("diff", "orders", "-p", PARTITION, "--config", config)
    assert result.exit_code == 0, result.output
    found = counts(result.stdout)
    assert (found["inserted"], found["updated"], found["deleted"], found["unchanged"]) == (1, 1, 1, 1)
    assert (found["source_rows"], found["target_rows"]) == (3, 3)
    assert samples(result.stdout) == {"inserted": "10", "updated": "2", "deleted": "3"}
    assert "3 row(s) would change" in result.stdout
    assert rows_of(target) == before


def test_diff_limit_caps_the_sample_keys(sqlite_pair: tuple[str, str, Path]) -> None:
    """--limit bounds the keys shown per kind and says how many there were in all."""
    source, _, config = sqlite_pair
    assert run("sync", "orders", "--partition", PARTITION, "--config", config).exit_code == 0
    execute(
        source,
        *(ORDERS.insert().values(id=i, amount=i, note="n", updated_at=at(8, i)) for i in range(20, 30)),
    )
    result = run("diff", "orders", "-p", PARTITION, "--limit", "2", "--config", config)
    assert result.exit_code == 0, result.output
    assert "inserted (first 2 of 10): 20, 21" in result.stdout
    none = run("diff", "orders", "-p", PARTITION, "--limit", "0", "--config", config)
    assert "inserted (first 0 of 10): -" in none.stdout


def test_diff_json_parses(pg_pair: tuple[str, str, Path]) -> None:
    """--json prints one JSON document: table, partition, window, every stat and the sample keys."""
    source, target, config = pg_pair
    assert run("sync", "orders", "--partition", PARTITION, "--config", config).exit_code == 0
    execute(source, ORDERS.delete().where(ORDERS.c.id == 1))
    result = run("diff", "orders", "--partition", PARTITION, "--json", "--config", config)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["table"] == "orders"
    assert document["partition"] == PARTITION
    assert document["window"] == {"start": "2026-11-30T08:00:00+00:00", "end": "2026-11-30T09:00:00+00:00"}
    assert document["dry_run"] is True
    assert document["stats"]["deleted"] == 1
    assert document["stats"]["unchanged"] == 2
    assert document["stats"]["dry_run"] is True
    assert document["samples"] == {"deleted": [1]}
    assert len(rows_of(target) or []) == 3  # nothing deleted for real


def test_diff_json_of_composite_text_keys(make_db_url: MakeDbUrl, tmp_path: Path) -> None:
    """Composite keys come out as JSON arrays and as tuples in the text output."""
    source, target = make_db_url("sqlite", "app"), make_db_url("sqlite", "warehouse")
    execute(
        source,
        sa.text(
            "CREATE TABLE orders (tenant text, id integer, updated_at timestamp, PRIMARY KEY (tenant, id))"
        ),
        sa.text(
            "INSERT INTO orders VALUES ('acme', 1, '2026-11-30 08:05:00'), ('acme', 2, '2026-11-30 08:06:00')"
        ),
    )
    config = write_config(tmp_path, source, target)
    config.write_text(config.read_text().replace("primary_key: [id]", "primary_key: [tenant, id]"))
    assert run("sync", "orders", "--partition", PARTITION, "--config", config).exit_code == 0
    execute(source, sa.text("INSERT INTO orders VALUES ('bolt', 7, '2026-11-30 08:07:00')"))
    document = json.loads(run("diff", "orders", "-p", PARTITION, "--json", "--config", config).stdout)
    assert document["samples"] == {"inserted": [["bolt", 7]]}
    text = run("diff", "orders", "-p", PARTITION, "--config", config).stdout
    assert "inserted: ('bolt', 7)" in text


# --------------------------------------------------------------------------------------------------
# sync


def test_sync_then_diff_shows_zero_changes(pg_pair: tuple[str, str, Path]) -> None:
    """A sync copies the hour; a diff right after finds nothing to do, and a second sync writes nothing."""
    _, target, config = pg_pair
    result = run("sync", "orders", "--partition", PARTITION, "--config", config)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"synced orders partition {PARTITION}")
    found = counts(result.stdout)
    assert (found["inserted"], found["target_rows"], found["null_updated_at"]) == (3, 3, 1)
    assert [row[0] for row in rows_of(target) or []] == [1, 2, 3]  # the hour only

    result = run("diff", "orders", "--partition", PARTITION, "--config", config)
    assert result.exit_code == 0, result.output
    assert "no changes" in result.stdout
    found = counts(result.stdout)
    assert (found["inserted"], found["updated"], found["deleted"], found["unchanged"]) == (0, 0, 0, 3)
    assert samples(result.stdout) == {}

    again = json.loads(run("sync", "orders", "-p", PARTITION, "--json", "--config", config).stdout)
    assert again["command"] == "sync"
    assert again["stats"]["dry_run"] is False
    assert (again["stats"]["inserted"], again["stats"]["updated"], again["stats"]["deleted"]) == (0, 0, 0)


@pytest.mark.parametrize("command", ["sync", "diff"])
def test_sync_and_diff_report_rows_whose_updated_at_no_hour_holds(
    sqlite_pair: tuple[str, str, Path], command: str
) -> None:
    """A SQLite ``updated_at`` stored as a number, or as text with a UTC offset other than zero,
    is in no hour: never synced, so both commands print the count, and why, beside the others;
    the JSON output carries it too."""
    source, _, config = sqlite_pair
    engine = sa.create_engine(source)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO orders (id, amount, note, updated_at) VALUES "
                "(50, 1, 'epoch', 1796112300), (51, 1, 'offset', '2026-11-30T08:30:00+02:00')"
            )
    finally:
        engine.dispose()

    result = run(command, "orders", "--partition", PARTITION, "--config", config)
    assert result.exit_code == 0, result.output
    found = counts(result.stdout)
    assert (found["inserted"], found["unplaced_updated_at"]) == (3, 2)
    line = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["unplaced_updated_at"])
    assert "not synced" in line
    document = json.loads(run(command, "orders", "-p", PARTITION, "--json", "--config", config).stdout)
    assert document["stats"]["unplaced_updated_at"] == 2


def test_sync_as_a_real_process_with_config_from_environment(sqlite_pair: tuple[str, str, Path]) -> None:
    """The installed script finds the config through SYNC_PIPELINE_CONFIG and syncs the partition."""
    _, target, config = sqlite_pair
    env = {**os.environ, CONFIG_ENV_VAR: str(config)}
    result = subprocess.run(
        [str(SCRIPT), "sync", "orders", "--partition", PARTITION, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stats"]["inserted"] == 3
    assert len(rows_of(target) or []) == 3


def test_config_before_the_command_and_from_environment(sqlite_pair: tuple[str, str, Path]) -> None:
    """--config may be given to the group; the environment variable is the fallback."""
    _, _, config = sqlite_pair
    assert run("--config", config, "validate").exit_code == 0
    assert run("validate", env={CONFIG_ENV_VAR: str(config)}).exit_code == 0
    wrong = config.with_name("missing.yaml")
    # The command's own --config wins over the environment's.
    assert run("validate", "--config", config, env={CONFIG_ENV_VAR: str(wrong)}).exit_code == 0


def test_sync_schema_error_is_one_line_without_traceback(pg_pair: tuple[str, str, Path]) -> None:
    """A target without a primary key makes sync fail (exit 1) with one line naming the problem."""
    _, target, config = pg_pair
    execute(
        target, sa.text("CREATE TABLE orders (id integer, amount numeric, note text, updated_at timestamptz)")
    )
    result = run("sync", "orders", "--partition", PARTITION, "--config", config)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: orders: target table 'orders'")
    assert "no primary key or unique index on exactly (id)" in result.stderr
    assert "Traceback" not in result.output
    assert rows_of(target) == []


# --------------------------------------------------------------------------------------------------
# Usage errors


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("yesterday", "not of the form YYYY-MM-DD-HH:MM"),
        ("2026-11-30T08:00", "not of the form YYYY-MM-DD-HH:MM"),
        ("2026-11-30-08:30", "not the start of an hour"),
        ("2026-10-31-23:00", "before the first partition of table 'orders'"),
    ],
)
@pytest.mark.parametrize("command", ["diff", "sync"])
def test_bad_partition_key(sqlite_pair: tuple[str, str, Path], command: str, key: str, expected: str) -> None:
    """A partition key that is not one of the table's hourly partitions is a usage error (exit 2)."""
    _, target, config = sqlite_pair
    result = run(command, "orders", "--partition", key, "--config", config)
    assert result.exit_code == 2
    assert "--partition" in result.stderr
    assert expected in result.stderr
    assert rows_of(target) is None


def test_partition_key_in_a_daylight_saving_gap(sqlite_pair: tuple[str, str, Path]) -> None:
    """02:00 on the day clocks jump to 03:00 does not exist in Europe/Paris: refused, not guessed."""
    _, _, config = sqlite_pair
    config.write_text("partition_timezone: Europe/Paris\n" + config.read_text())
    result = run("diff", "orders", "--partition", "2027-03-28-02:00", "--config", config)
    assert result.exit_code == 2
    assert "not the start of an hour in partition_timezone 'Europe/Paris'" in result.stderr


def test_missing_partition_option(sqlite_pair: tuple[str, str, Path]) -> None:
    """--partition is required."""
    _, _, config = sqlite_pair
    result = run("sync", "orders", "--config", config)
    assert result.exit_code == 2
    assert "--partition" in result.stderr


@pytest.mark.parametrize("command", [["validate", "orderz"], ["diff", "orderz", "-p", PARTITION]])
def test_unknown_table_lists_the_known_ones(sqlite_pair: tuple[str, str, Path], command: list[str]) -> None:
    """A mistyped table name is a usage error listing the configured tables."""
    _, _, config = sqlite_pair
    result = run(*command, "--config", config)
    assert result.exit_code == 2
    assert "no table named 'orderz' (known tables: 'orders')" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "command", [["validate"], ["diff", "orders", "-p", PARTITION], ["sync", "orders", "-p", PARTITION]]
)
def test_missing_config(command: list[str]) -> None:
    """Without --config and SYNC_PIPELINE_CONFIG the command says how to name the file (exit 2)."""
    result = run(*command)
    assert result.exit_code == 2
    assert result.stderr == f"Error: no configuration file: pass --config PATH or set {CONFIG_ENV_VAR}\n"


def test_missing_config_as_a_real_process() -> None:
    """The real process exits 2 with the same one-line message and no traceback."""
    result = run_process("validate")
    assert result.returncode == 2
    assert CONFIG_ENV_VAR in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_not_found_or_invalid(tmp_path: Path) -> None:
    """A config path that does not exist, or a file that is not valid, is exit 2 naming the file."""
    missing = run("validate", "--config", tmp_path / "nope.yaml")
    assert missing.exit_code == 2
    assert "nope.yaml: configuration file not found" in missing.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(f'connections:\n  app: {{url: "postgresql://u:{PASSWORD}@h/db"}}\ntables: []\n')
    invalid = run("validate", "--config", bad)
    assert invalid.exit_code == 2
    assert "bad.yaml" in invalid.stderr
    assert PASSWORD not in invalid.output
    assert "Traceback" not in invalid.output


# --------------------------------------------------------------------------------------------------
# Secrets in every URL form, and errors that are not database errors


@pytest.mark.parametrize("command", ["validate", "diff", "sync"])
def test_query_parameter_password_never_printed(make_db_url: MakeDbUrl, tmp_path: Path, command: str) -> None:
    """A password given as ?password= (psycopg and PyMySQL both read it) is shown as *** like any other."""
    source = make_db_url("sqlite", "app")
    seed(source, [1])
    target = f"postgresql+psycopg://postgres@127.0.0.1:1/db?connect_timeout=5&password={PASSWORD}"
    config = write_config(tmp_path, source, target)
    args = ["validate"] if command == "validate" else [command, "orders", "-p", PARTITION]
    result = run(*args, "--config", config)
    assert result.exit_code == 1
    assert "postgresql+psycopg://postgres@127.0.0.1:1/db?connect_timeout=5&password=***" in result.output
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["validate", "diff", "sync"])
def test_password_with_unencoded_at_is_refused_unprinted(
    make_db_url: MakeDbUrl, tmp_path: Path, command: str
) -> None:
    """``user:hunter2@secret@host`` would send half the password as the host name: exit 2, nothing quoted."""
    source = make_db_url("sqlite", "app")
    config = write_config(tmp_path, source, "mysql+pymysql://root:hunter2@s3cret-tail@127.0.0.1:1/app")
    args = ["validate"] if command == "validate" else [command, "orders", "-p", PARTITION]
    result = run(*args, "--config", config)
    assert result.exit_code == 2
    assert "connection 'warehouse': field 'url'" in result.stderr
    assert "%40" in result.stderr
    for fragment in ("hunter2", "s3cret-tail"):
        assert fragment not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


_UNEXPECTED = """
import sys
import sync_pipeline.engine.db.engine as engine_module
import sync_pipeline.engine.sync as sync_module

def boom(*args, **kwargs):
    raise {error}

engine_module.open_engine = boom
sync_module.sync_partition = boom
from sync_pipeline.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("command", ["validate", "diff", "sync"])
@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("TypeError(\"'<' not supported between instances of 'str' and 'UUID'\")", "TypeError: '<' not"),
        ("OverflowError('Python int too large to convert to SQLite INTEGER')", "OverflowError: Python int"),
        ("RuntimeError('postgresql://u:" + PASSWORD + "@h/db?password=" + PASSWORD + "')", "RuntimeError:"),
    ],
)
def test_unexpected_error_is_one_line_without_traceback(
    sqlite_pair: tuple[str, str, Path], command: str, error: str, reason: str
) -> None:
    """An error that is not a database error (a bug, an overflow) is one line on stderr, exit 1, scrubbed.

    The real console process is started (the engine's entry points replaced by one that raises, as
    a bug inside them would), because that is where Python would otherwise print a traceback.
    """
    _, _, config = sqlite_pair
    args = ["validate"] if command == "validate" else [command, "orders", "-p", PARTITION]
    result = subprocess.run(
        [sys.executable, "-c", _UNEXPECTED.format(error=error), *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert reason in lines[0]
    assert "unexpected error" in lines[0]
    assert PASSWORD not in result.stdout + result.stderr
