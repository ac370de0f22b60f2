"""Reading the YAML configuration file: size and shape limits, ``${VAR}``, ``defaults:``, messages.

The file is the only input an operator writes by hand, so every mistake in it must be caught here,
before any database is touched, and reported in terms of the file: its path, the table (by name)
and the dotted field. Errors are raised as :class:`~sync_pipeline.errors.ConfigError`, which the
orchestration layer treats as terminal (retrying cannot fix a typo).

Connection URLs carry passwords, often injected through ``${VAR}`` from the environment. Nothing
in this module echoes an input value it does not control: pydantic is told to hide inputs, YAML
syntax errors are re-worded without their source snippet, exceptions from URL parsing are never
chained, and as a last line of defence messages built from validation errors are scrubbed of the
secrets of the configured URLs (in every form :mod:`sync_pipeline.redaction` knows) before they
are raised.

The file is also untrusted in size and shape: it is read only up to 1 MiB, and the parsed
structure is walked with a node budget and a depth limit so that a YAML alias bomb ("billion
laughs") or a self-referencing alias is refused instead of exhausting memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from sync_pipeline.config.models import SyncConfig
from sync_pipeline.engine.settings import quoted
from sync_pipeline.errors import ConfigError
from sync_pipeline.redaction import scrub, url_secrets

__all__ = [
    "CONFIG_ENV_VAR",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "load_config",
    "parse_config",
]

CONFIG_ENV_VAR: Final = "SYNC_PIPELINE_CONFIG"
"""Environment variable holding the path of the configuration file."""

MAX_CONFIG_BYTES: Final = 1024 * 1024
"""A real configuration is a few kilobytes; anything near a megabyte is a mistake or an attack."""

MAX_CONFIG_NODES: Final = 100_000
"""Budget of values visited while walking the parsed YAML; aliases count once per use."""

MAX_CONFIG_DEPTH: Final = 50
"""The format nests four levels deep; fifty leaves room and stops self-referencing aliases."""


_MAX_REPORTED_ERRORS = 50


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> SyncConfig:
    """Read, interpolate and validate the configuration file at ``path``.

    ``environ`` defaults to :data:`os.environ`; tests pass a dict to stay independent of the host.
    """
    file = Path(path)
    label = str(file)
    try:
        with file.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(_too_big(label, size))
            # Read one byte more than allowed: the size of a pipe or special file is not known upfront.
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{label}: configuration file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory, expected a YAML configuration file") from None
    except OSError as error:
        raise ConfigError(f"{label}: cannot read configuration file: {error.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(_too_big(label, len(data)))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{label}: not UTF-8 text (invalid byte at offset {error.start})") from None
    config = parse_config(text, source=label, environ=environ)
    config._source_path = file
    return config


def parse_config(text: str, source: str = "<string>", environ: Mapping[str, str] | None = None) -> SyncConfig:
    """Validate a configuration given as YAML text; ``source`` names it in error messages."""
    if environ is None:
        environ = os.environ
    # Characters never outnumber UTF-8 bytes, so the cheap length check settles most oversize texts.
    size = len(text) if len(text) > MAX_CONFIG_BYTES else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(_too_big(source, size))
    document = _parse_yaml(text, source)
    if document is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping with 'connections' and 'tables'")
    if not isinstance(document, dict):
        raise ConfigError(
            f"{source}: the top level is {_yaml_kind(document)}; "
            "expected a mapping with 'connections' and 'tables'"
        )
    raw_tables = document.get("tables")
    walker = _Walker(source, environ, raw_tables if isinstance(raw_tables, list) else [])
    tree = walker.walk(document)
    tables_before_defaults = tree.get("tables")
    defaults = tree.pop("defaults", None)
    if defaults is not None:
        if not isinstance(defaults, dict):
            raise ConfigError(f"{source}: field 'defaults': must be a mapping of table keys")
        if isinstance(tables_before_defaults, list):
            if _count_nodes(defaults) * len(tables_before_defaults) > MAX_CONFIG_NODES:
                raise ConfigError(f"{source}: too large once 'defaults' is copied into every table")
            tree["tables"] = [
                _deep_merge(defaults, table) if isinstance(table, dict) else table
                for table in tables_before_defaults
            ]
    try:
        return SyncConfig.model_validate(tree)
    except ValidationError as error:
        message = _describe_validation_error(
            error,
            source,
            raw_tables if isinstance(raw_tables, list) else [],
            tables_before_defaults if isinstance(tables_before_defaults, list) else [],
            defaults if isinstance(defaults, dict) else {},
        )
        # Chaining is cut: the ValidationError keeps the inputs, passwords included, in .errors().
        raise ConfigError(scrub(message, _url_secrets(tree))) from None


def _too_big(source: str, size: int) -> str:
    return (
        f"{source}: configuration is {size} bytes, more than the limit of {MAX_CONFIG_BYTES} bytes (1 MiB); "
        "is this the right file?"
    )


def _parse_yaml(text: str, source: str) -> object:
    """Parse with safe_load, re-wording errors: PyYAML's own text quotes the offending line."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        where = _mark(error.problem_mark)
        message = f"{source}: invalid YAML{where}: {error.problem or 'syntax error'}"
        if error.context:
            message += f" ({error.context}{_mark(error.context_mark)})"
        raise ConfigError(message) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        column = error.position - (text.rfind("\n", 0, error.position) + 1) + 1
        raise ConfigError(
            f"{source}: invalid YAML at line {line}, column {column}: character #x{error.character:04x} "
            "is not allowed"
            if isinstance(error.character, int)
            else f"{source}: invalid YAML at line {line}, column {column}: {error.reason}"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML ({type(error).__name__})") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply (more than {MAX_CONFIG_DEPTH} levels)") from None


def _mark(mark: yaml.Mark | None) -> str:
    return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"


def _yaml_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


_REFERENCE = re.compile(r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")
_LITERAL_ESCAPE = "$${"
_SCALARS = (str, int, float, bool, date, type(None))  # datetime is a date


class _Walker:
    """Copy the parsed YAML into a plain tree, interpolating ``${VAR}`` and enforcing size limits.

    One pass does both because the copy is where an alias bomb would explode: PyYAML shares an
    aliased node, so the parsed value is small, but any walk over it is exponential. Counting
    every visit bounds the walk, and the copy, whatever the aliasing.
    """

    def __init__(self, source: str, environ: Mapping[str, str], raw_tables: list[Any]) -> None:
        self.source = source
        self.environ = environ
        self.raw_tables = raw_tables
        self.nodes = 0
        self.problems: list[str] = []
        # The same aliased string would otherwise be interpolated, and copied, once per use.
        self.cache: dict[str, str] = {}

    def walk(self, document: dict[Any, Any]) -> dict[str, Any]:
        tree = self._visit(document, (), 1)
        if self.problems:
            lines = self.problems[:_MAX_REPORTED_ERRORS]
            if len(self.problems) > len(lines):
                lines.append(f"{self.source}: ... and {len(self.problems) - len(lines)} more")
            raise ConfigError("\n".join(lines))
        assert isinstance(tree, dict)
        return tree

    def _visit(self, value: object, path: tuple[str | int, ...], depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_CONFIG_NODES:
            raise ConfigError(
                f"{self.source}: too large or too deeply aliased (more than {MAX_CONFIG_NODES} values)"
            )
        if isinstance(value, dict):
            self._check_depth(path, depth)
            copy: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ConfigError(
                        f"{self.source}: {self._place(path)}: key {quoted(key)} is a {type(key).__name__}, "
                        "not a string (YAML reads yes/no/on/off as booleans and digits as numbers: quote it)"
                    )
                copy[key] = self._visit(item, (*path, key), depth + 1)
            return copy
        if isinstance(value, list):
            self._check_depth(path, depth)
            return [self._visit(item, (*path, index), depth + 1) for index, item in enumerate(value)]
        if isinstance(value, str):
            return self._interpolate(value, path)
        if isinstance(value, _SCALARS):
            return value
        raise ConfigError(
            f"{self.source}: {self._place(path)}: unsupported YAML value of type {type(value).__name__}"
        )

    def _check_depth(self, path: tuple[str | int, ...], depth: int) -> None:
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"{self.source}: {self._place(path[:3])}: nested deeper than {MAX_CONFIG_DEPTH} levels "
                "(a self-referencing alias?)"
            )

    def _interpolate(self, text: str, path: tuple[str | int, ...]) -> str:
        if "${" not in text:
            return text
        cached = self.cache.get(text)
        if cached is not None:
            return cached
        failed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal failed
            token = match.group(0)
            if token == _LITERAL_ESCAPE:
                return "${"
            name = match.group("name")
            if name is None:
                failed = True
                self.problems.append(
                    f"{self.source}: {self._place(path)}: malformed '${{' at character {match.start() + 1}: "
                    "expected ${NAME} or ${NAME:-default} (write $${ for a literal ${)"
                )
                return token
            default = match.group("default")
            value = self.environ.get(name)
            if default is not None and not value:
                return default
            if value is None:
                failed = True
                self.problems.append(
                    f"{self.source}: {self._place(path)}: environment variable {name} is not set "
                    f"(set it, or write ${{{name}:-default}})"
                )
                return token
            return value

        result = _REFERENCE.sub(replace, text)
        if not failed:
            self.cache[text] = result
        return result

    def _place(self, path: tuple[str | int, ...]) -> str:
        """Where a value sits, naming a table by the name written in the file (never a substituted one)."""
        if len(path) >= 2 and path[0] == "tables" and isinstance(path[1], int):
            label = _table_label(self.raw_tables, path[1])
            rest = path[2:]
            return f"{label}, field {quoted(_dotted(rest))}" if rest else label
        return _dotted(path) if path else "top level"


def _dotted(path: Sequence[str | int]) -> str:
    """``('source', 'schema')`` → ``source.schema``; list positions as ``primary_key[1]``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _table_label(raw_tables: Sequence[Any], index: int) -> str:
    raw = raw_tables[index] if 0 <= index < len(raw_tables) else None
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]:
        return f"table {quoted(raw['name'])}"
    return f"tables[{index}]"


def _count_nodes(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_count_nodes(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(_count_nodes(item) for item in value)
    return 1


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Defaults under a table's own keys: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = _deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def _has_path(value: object, path: Sequence[str | int]) -> bool:
    for part in path:
        if isinstance(value, dict) and isinstance(part, str):
            if part not in value:
                return False
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int):
            if not 0 <= part < len(value):
                return False
            value = value[part]
        else:
            return False
    return True


def _describe_validation_error(
    error: ValidationError,
    source: str,
    raw_tables: Sequence[Any],
    own_tables: Sequence[Any],
    defaults: Mapping[str, Any],
) -> str:
    """One line per problem, in the file's terms: file, table by name, dotted field, reason."""
    lines: list[str] = []
    for detail in error.errors(include_url=False, include_input=False):
        loc = detail["loc"]
        where = ""
        suffix = ""
        if len(loc) >= 2 and loc[0] == "tables" and isinstance(loc[1], int):
            index, rest = loc[1], loc[2:]
            where = _table_label(raw_tables, index)
            if rest:
                where += f": field {quoted(_dotted(rest))}"
                own = own_tables[index] if index < len(own_tables) else None
                if not _has_path(own, rest) and _has_path(defaults, rest):
                    suffix = " (set in defaults)"
        elif len(loc) >= 2 and loc[0] == "connections":
            where = f"connection {quoted(loc[1])}"
            if loc[2:]:
                where += f": field {quoted(_dotted(loc[2:]))}"
        elif loc:
            where = f"field {quoted(_dotted(loc))}"
        reason = _reason(detail["type"], detail["msg"])
        line = f"{source}: {where}: {reason}{suffix}" if where else f"{source}: {reason}{suffix}"
        if line not in lines:
            lines.append(line)
    if len(lines) > _MAX_REPORTED_ERRORS:
        hidden = len(lines) - _MAX_REPORTED_ERRORS
        lines = [*lines[:_MAX_REPORTED_ERRORS], f"{source}: ... and {hidden} more"]
    return "\n".join(lines)


def _reason(kind: str, message: str) -> str:
    if kind == "extra_forbidden":
        return "unknown key (extra inputs are not permitted)"
    if kind == "missing":
        return "required key is missing"
    return message.removeprefix("Value error, ")


def _url_secrets(tree: Mapping[str, Any]) -> list[str]:
    """Secrets of every configured URL, parsed or not, to scrub from messages as a last resort."""
    connections = tree.get("connections")
    if not isinstance(connections, dict):
        return []
    secrets: set[str] = set()
    for connection in connections.values():
        url = connection.get("url") if isinstance(connection, dict) else None
        if isinstance(url, str):
            secrets.update(url_secrets(url))
    return sorted(secrets)
