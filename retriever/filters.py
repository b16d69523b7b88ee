"""Metadata filters: which documents a search may return, as SQL over the store's documents.

    where = {"team": "ops", "year": {">=": 2020}, "lang": {"in": ["en", "fr"]}, "source": "docs/ops/"}

A field maps to a value (equality) or to {operator: value}: `=`, `!=`, `>`, `>=`, `<`, `<=`,
`in` and `not in` (a list), on the document's metadata (as indexed: numbers compare as numbers,
strings as strings); every condition must hold. `source` is the file a document came from: a
string there means "under this path" (a prefix, resolved against the current folder), and
`{"prefix": ...}` says the same. On the command line, `--where` takes FIELD=VALUE,
FIELD!=VALUE, FIELD>=VALUE (and >, <, <=), or FIELD=[A,B] for `in`; values that read as JSON
(numbers, true, false) are those, anything else a string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPARISONS = ("=", "!=", ">", ">=", "<", "<=")
OPERATORS = (*COMPARISONS, "in", "not in", "prefix")
SOURCE = "source"
_CLI = re.compile(r"^\s*([^=!<>\s]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    value: Any


def conditions(where: dict[str, Any]) -> list[Condition]:
    """The conditions of a `where` mapping, checked: an unknown operator or a value of the wrong
    kind is a ValueError naming the field."""
    if not isinstance(where, dict):
        raise ValueError(f"where: expected a mapping of field to value or {{operator: value}}, got {where!r}")
    out = []
    for field, spec in where.items():
        if not isinstance(field, str) or not field:
            raise ValueError(f"where: field names are non-empty strings, got {field!r}")
        pairs = spec.items() if isinstance(spec, dict) else [("prefix" if field == SOURCE else "=", spec)]
        for operator, value in pairs:
            if operator not in OPERATORS:
                raise ValueError(f"where {field!r}: unknown operator {operator!r} (expected one of "
                                 f"{', '.join(OPERATORS)})")
            if operator == "prefix" and field != SOURCE:
                raise ValueError(f"where {field!r}: 'prefix' applies to {SOURCE!r} only")
            if operator in ("in", "not in"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise ValueError(f"where {field!r}: {operator!r} takes a non-empty list, got {value!r}")
                if not all(_is_scalar(v) for v in value):
                    raise ValueError(f"where {field!r}: {operator!r} takes strings, numbers or booleans")
            elif not _is_scalar(value):
                raise ValueError(f"where {field!r}: {operator!r} takes a string, a number or a boolean, got {value!r}")
            if field == SOURCE:
                value = _source_value(field, operator, value)
            out.append(Condition(field, operator, value))
    return out


def parse_cli(items: list[str]) -> dict[str, Any]:
    """`--where` arguments as a `where` mapping (conditions on one field are joined)."""
    where: dict[str, dict[str, Any]] = {}
    for item in items:
        match = _CLI.match(item)
        if not match:
            raise ValueError(f"--where {item!r}: expected FIELD=VALUE, FIELD!=VALUE, FIELD>=VALUE (or >, <, <=) "
                             "or FIELD=[A,B]")
        field, operator, text = match.groups()
        if text[:1] in ("=", "!", "<", ">"):  # year=>2020, year==2020: a misspelt operator, not a value
            raise ValueError(f"--where {item!r}: unknown operator {operator + text[0]!r}; operators are "
                             "=, !=, >=, <=, >, < (and FIELD=[A,B] for in)")
        if text.startswith("[") and text.endswith("]") and operator in ("=", "!="):
            operator, value = ("in" if operator == "=" else "not in"), [_scalar(v) for v in text[1:-1].split(",")]
        else:
            value = text if field == SOURCE else _scalar(text)
            if field == SOURCE and operator == "=":
                operator = "prefix"
        where.setdefault(field, {})[operator] = value
    return where


def to_sql(conditions_: list[Condition]) -> tuple[str, list[Any]]:
    """A WHERE clause over the `documents` table and its parameters."""
    clauses, params = [], []
    for c in conditions_:
        if c.field == SOURCE:
            column = "source"
        else:
            column = "json_extract(metadata, ?)"
            params.append(json_path(c.field))
        if c.operator == "prefix":
            clauses.append(f"({column} = ? OR {column} LIKE ? ESCAPE '\\')")
            params += [c.value, _like_prefix(c.value.rstrip("/") + "/")]
        elif c.operator in ("in", "not in"):
            clauses.append(f"{column} {c.operator.upper()} ({', '.join('?' * len(c.value))})")
            params += list(c.value)
        else:
            clauses.append(f"{column} {c.operator} ?")
            params.append(c.value)
        if c.field != SOURCE and c.operator in ("!=", "not in"):  # a document without the field matches too
            clauses[-1] = f"({clauses[-1]} OR json_type(metadata, ?) IS NULL)"
            params.append(json_path(c.field))
    return " AND ".join(clauses) or "1", params


def json_path(field: str) -> str:
    return "$." + json.dumps(field)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _scalar(text: str) -> Any:
    text = text.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if _is_scalar(value) else text


def _source_value(field: str, operator: str, value: Any) -> Any:
    """Paths as the store holds sources: absolute."""
    if operator not in ("prefix", "=", "!=", "in", "not in"):
        raise ValueError(f"where {field!r}: paths take prefix, =, !=, in or not in, not {operator!r}")
    if isinstance(value, (list, tuple)):
        return [str(Path(str(v)).expanduser().resolve()) for v in value]
    return str(Path(str(value)).expanduser().resolve())


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
