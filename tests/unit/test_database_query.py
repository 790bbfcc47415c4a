"""database_query binds named parameters and refuses a second statement."""

from __future__ import annotations

import pytest

from atom.actions.database_query import bind_named
from atom.errors import PermanentError


@pytest.mark.parametrize(
    "sql, bound, names",
    [
        ("select * from t where id = :id", "select * from t where id = %(id)s", ["id"]),
        ("select :a::int, :b", "select %(a)s::int, %(b)s", ["a", "b"]),
        ("select '10:30', ':x' -- :y\n, :z", "select '10:30', ':x' -- :y\n, %(z)s", ["z"]),
        ("select 'it''s :q'", "select 'it''s :q'", []),
        ("select $$ :x ; $$, :y;", "select $$ :x ; $$, %(y)s", ["y"]),
        ("select 100 % 7 where a like '%x'", "select 100 %% 7 where a like '%%x'", []),
        ('select "col:x" from t /* ; :z */', 'select "col:x" from t /* ; :z */', []),
    ],
)
def test_named_parameters_are_bound_by_the_driver(sql, bound, names):
    assert bind_named(sql) == (bound, names)


@pytest.mark.parametrize(
    "sql",
    [
        "select 1; drop table users",
        "select :id; delete from t",
        "select ';'; select 2",
        "select 1 /* x */; select 2",
    ],
)
def test_a_second_statement_is_refused(sql):
    with pytest.raises(PermanentError, match="more than one statement"):
        bind_named(sql)
