"""Metadata filters: the `where` mapping, the --where syntax, and the SQL they make (on a real SQLite)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from retriever.filters import conditions, parse_cli, to_sql

DOCS = {
    "a": {"team": "ops", "year": 2019, "lang": "en"},
    "b": {"team": "ops", "year": 2021, "lang": "fr"},
    "c": {"team": "dev", "year": 2023, "lang": "de", "draft": True},
    "d": {"team": "dev"},
}


def matching(where: dict) -> list[str]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE documents (id TEXT, source TEXT, metadata TEXT)")
    db.executemany("INSERT INTO documents VALUES (?, ?, ?)",
                   [(i, f"/data/{'x/' if i in 'ab' else 'y/'}{i}.txt", json.dumps(m)) for i, m in DOCS.items()])
    sql, params = to_sql(conditions(where))
    return sorted(r[0] for r in db.execute(f"SELECT id FROM documents WHERE {sql}", params))


def test_each_operator():
    assert matching({"team": "ops"}) == ["a", "b"]
    assert matching({"team": {"!=": "ops"}}) == ["c", "d"]
    assert matching({"year": {">=": 2021}}) == ["b", "c"]
    assert matching({"year": {">": 2021}}) == ["c"]
    assert matching({"year": {"<": 2021}}) == ["a"]
    assert matching({"year": {"<=": 2021, ">=": 2020}}) == ["b"]
    assert matching({"lang": {"in": ["en", "fr"]}}) == ["a", "b"]
    assert matching({"lang": {"not in": ["en", "fr"]}}) == ["c", "d"]  # d has no lang: not one of them
    assert matching({"draft": True}) == ["c"]
    assert matching({"team": "dev", "year": {">=": 2000}}) == ["c"]
    assert matching({"source": "/data/x"}) == ["a", "b"]
    assert matching({"source": {"prefix": "/data/y/"}}) == ["c", "d"]
    assert matching({"source": "/data/x/a.txt"}) == ["a"]
    assert matching({"source": "/data/x_"}) == []  # LIKE wildcards are literal
    assert matching({}) == ["a", "b", "c", "d"]


def test_bad_conditions_name_the_field():
    for where, message in (({"year": {"~": 3}}, "'year': unknown operator '~'"),
                           ({"lang": {"in": "en"}}, "'lang': 'in' takes a non-empty list"),
                           ({"team": ["ops"]}, "'team': '=' takes a string, a number or a boolean"),
                           ({"team": {"prefix": "o"}}, "'prefix' applies to 'source' only"),
                           ({"source": {">": "/x"}}, "paths take prefix"),
                           ("team=ops", "expected a mapping")):
        with pytest.raises(ValueError, match=message):
            conditions(where)


def test_command_line_syntax():
    assert parse_cli(["team=ops", "year>=2020", "year<2024", "lang=[en, fr]", "draft=true", "tag!=[x]"]) == {
        "team": {"=": "ops"}, "year": {">=": 2020, "<": 2024}, "lang": {"in": ["en", "fr"]},
        "draft": {"=": True}, "tag": {"not in": ["x"]}}
    assert parse_cli(["source=docs/ops"]) == {"source": {"prefix": "docs/ops"}}
    assert conditions(parse_cli(["source=docs/ops"]))[0].value == str(Path("docs/ops").resolve())
    assert parse_cli(["code=007"]) == {"code": {"=": "007"}}  # not JSON: a string
    with pytest.raises(ValueError, match="--where 'team': expected FIELD=VALUE"):
        parse_cli(["team"])
    for item, operator in (("year=>2020", "'=>'"), ("year==2020", "'=='"), ("year<>2020", "'<>'"), ("a!=!b", "'!=!'")):
        with pytest.raises(ValueError, match=f"--where '{item}': unknown operator {operator}"):
            parse_cli([item])
