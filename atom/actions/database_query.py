"""``database_query``: one SQL statement against a PostgreSQL connection from the vault.

Safe by construction:
- the connection is a credential (a DSN string or ``{host, port, dbname, user, password}``),
  never ATOM's own database unless ``ATOM_DB_QUERY_ALLOW_OWN`` says so; its host passes the
  outbound guard and the connection is pinned to the checked address (``hostaddr``); a Unix
  socket directory must be listed in ``ATOM_DB_QUERY_ALLOWLIST``;
- named parameters ``:name`` are bound by the driver, never interpolated into the SQL;
- exactly one statement (a ``;`` outside quotes and comments is refused);
- a read-only transaction unless the step says ``write: true`` and the credential allows
  writes (``allow_write: true`` in its value);
- ``statement_timeout`` (seconds, default 30), ``max_rows`` (default 1000) and a 1 MiB cap on
  the result; database errors become clear step errors.
"""

from __future__ import annotations

import json
import re
from typing import Any

from atom.actions.base import Action, ActionContext, ActionSpec, is_type
from atom.errors import PermanentError, RetryableError

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_ROWS = 1000
MAX_RESULT_BYTES = 1024 * 1024
CONNECT_TIMEOUT = 10
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _quoted_end(sql: str, i: int) -> int | None:
    """Where the string, quoted name, dollar quote or comment starting at ``i`` ends."""
    c, n = sql[i], len(sql)
    if c in ("'", '"'):
        end = i + 1
        while end < n:
            if sql[end] == c and sql[end + 1 : end + 2] == c:
                end += 2
            elif sql[end] == c:
                return end + 1
            else:
                end += 1
        return n
    if sql.startswith("--", i):
        end = sql.find("\n", i)
        return n if end == -1 else end
    if sql.startswith("/*", i):
        end = sql.find("*/", i + 2)
        return n if end == -1 else end + 2
    if c == "$" and (tag := _DOLLAR_TAG.match(sql, i)):
        close = sql.find(tag.group(0), tag.end())
        return n if close == -1 else close + len(tag.group(0))
    return None


def bind_named(sql: str) -> tuple[str, list[str]]:
    """``sql`` with ``:name`` turned into the driver's ``%(name)s`` (and ``%`` escaped), and
    the names used; PermanentError for a second statement. Quotes, dollar quotes, comments
    and ``::`` casts are left alone."""
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if (end := _quoted_end(sql, i)) is not None:
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif sql.startswith("::", i):
            out.append("::")
            i += 2
        elif c == ":" and (name := _NAME.match(sql, i + 1)):
            out.append(f"%({name.group(0)})s")
            names.append(name.group(0))
            i = name.end()
        elif c == ";":
            if sql[i + 1 :].strip():
                raise PermanentError(
                    "database_query: the query holds more than one statement; send one"
                )
            i = n
        else:
            out.append("%%" if c == "%" else c)
            i += 1
    return "".join(out), names


def _connection_params(value: Any, name: str) -> dict[str, Any]:
    import psycopg2  # type: ignore[import-untyped]
    from psycopg2.extensions import parse_dsn  # type: ignore[import-untyped]

    if isinstance(value, str):
        try:
            params = dict(parse_dsn(value))
        except psycopg2.ProgrammingError as e:
            raise PermanentError(f"database_query: credential {name!r} is not a DSN") from e
    elif isinstance(value, dict):
        params = {
            "host": value.get("host"),
            "port": value.get("port"),
            "dbname": value.get("dbname") or value.get("database"),
            "user": value.get("user") or value.get("username"),
            "password": value.get("password"),
            "sslmode": value.get("sslmode"),
        }
    else:
        raise PermanentError(f"database_query: credential {name!r} is not a connection")
    return {k: v for k, v in params.items() if v not in (None, "")}


def _own_database(params: dict[str, Any], database_url: str | None) -> bool:
    from sqlalchemy.engine import make_url

    if not database_url:
        return False
    own = make_url(database_url)
    own_host = own.host or own.query.get("host") or "localhost"
    if isinstance(own_host, tuple):
        own_host = own_host[0]
    same_host = str(params.get("host") or "localhost").rstrip("/") == str(own_host).rstrip("/")
    same_port = int(params.get("port") or 5432) == int(own.port or 5432)
    return same_host and same_port and params.get("dbname") == own.database


def _pin(params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    from atom.security.netguard import check_host

    host = str(params.get("host") or "localhost")
    allowlist = ctx.settings.http_allowlist + ctx.settings.db_query_allowlist
    if host.startswith("/"):
        if host.rstrip("/") not in {a.rstrip("/") for a in ctx.settings.db_query_allowlist}:
            raise PermanentError(
                f"database_query: the socket directory {host} is not in ATOM_DB_QUERY_ALLOWLIST"
            )
        return params
    if "," in host:
        raise PermanentError("database_query: one host per connection")
    target = check_host(
        "postgres", host, int(params.get("port") or 5432), allowlist, "database_query"
    )
    return {**params, "hostaddr": target.address}


def _settings(config: dict[str, Any]) -> tuple[float, int, bool]:
    timeout = float(config.get("statement_timeout") or DEFAULT_TIMEOUT)
    max_rows = int(config.get("max_rows") or DEFAULT_MAX_ROWS)
    return timeout, max_rows, bool(config.get("write", False))


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Run the statement; the output is ``{columns, rows, row_count, truncated}``."""
    import psycopg2
    import psycopg2.errors  # type: ignore[import-untyped]

    name = str(config["credential"])
    value = ctx.credentials.get(name)
    if value is None:
        raise PermanentError(f"database_query: credential {name!r} does not exist")
    params = _connection_params(value, name)
    if _own_database(params, ctx.settings.database_url) and not ctx.settings.db_query_allow_own:
        raise PermanentError(
            "database_query: the connection is ATOM's own database; "
            "ATOM_DB_QUERY_ALLOW_OWN=1 would allow it"
        )
    timeout, max_rows, write = _settings(config)
    if write and not (isinstance(value, dict) and value.get("allow_write") is True):
        raise PermanentError(
            f"database_query: write: true needs credential {name!r} to allow writes "
            "(allow_write: true in its value)"
        )
    sql, names = bind_named(str(config["query"]))
    bound = config.get("params") or {}
    if not isinstance(bound, dict):
        raise PermanentError("database_query: params must be an object of named parameters")
    missing = sorted(set(names) - set(bound))
    if missing:
        raise PermanentError(f"database_query: no value for parameter(s) {', '.join(missing)}")
    params = _pin(params, ctx)
    try:
        conn = psycopg2.connect(
            **params,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="atom-database-query",
            options=f"-c statement_timeout={int(timeout * 1000)}",
        )
    except psycopg2.OperationalError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RetryableError(f"database_query: cannot connect: {first}") from None
    try:
        conn.set_session(readonly=not write, autocommit=False)
        with conn.cursor() as cur:
            cur.execute(sql, {k: bound[k] for k in set(names)})
            result = _result(cur, max_rows) | {"row_count": cur.rowcount}
        if write:
            conn.commit()
        return result
    except psycopg2.errors.QueryCanceled as e:
        raise PermanentError(
            f"database_query: the statement ran past its statement_timeout ({timeout:g} s)"
        ) from e
    except psycopg2.errors.ReadOnlySqlTransaction as e:
        raise PermanentError(
            "database_query: the statement writes, and the step is read-only (write: true)"
        ) from e
    except psycopg2.OperationalError as e:
        raise RetryableError(f"database_query: {_first_line(e)}") from e
    except psycopg2.Error as e:
        raise PermanentError(f"database_query: {e.pgcode or ''} {_first_line(e)}".strip()) from e
    finally:
        conn.close()  # anything not committed above is rolled back


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "pgerror", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _result(cur: Any, max_rows: int) -> dict[str, Any]:
    if cur.description is None:
        return {"columns": [], "rows": [], "truncated": False}
    columns = [d.name for d in cur.description]
    fetched = cur.fetchmany(max_rows + 1)
    rows = [dict(zip(columns, row, strict=True)) for row in fetched[:max_rows]]
    text = json.dumps(rows, default=str)
    if len(text) > MAX_RESULT_BYTES:
        raise PermanentError(
            f"database_query: the result is over {MAX_RESULT_BYTES} bytes; select less"
        )
    return {"columns": columns, "rows": json.loads(text), "truncated": len(fetched) > max_rows}


def check(config: dict, where: str) -> list[str]:
    """A statement timeout within five minutes, a row cap and parameter names."""
    errors = []
    timeout = config.get("statement_timeout")
    if isinstance(timeout, int | float) and is_type(timeout, float) and not 0 < timeout <= 300:
        errors.append("statement_timeout must be between 0 and 300 seconds")
    rows = config.get("max_rows")
    if (
        isinstance(rows, int | float)
        and is_type(rows, float)
        and not (float(rows).is_integer() and 1 <= rows <= 10000)
    ):
        errors.append("max_rows must be a whole number from 1 to 10000")
    if isinstance(config.get("params"), dict):
        bad = [k for k in config["params"] if not str(k).isidentifier()]
        if bad:
            errors.append(f"params names must be identifiers, not {', '.join(map(repr, bad))}")
    return errors


ACTION = Action(
    name="database_query",
    spec=ActionSpec(
        required={"credential": str, "query": str},
        optional={"params": dict, "write": bool, "statement_timeout": float, "max_rows": float},
        check=check,
    ),
    run=run,
    examples=(
        {
            "credential": "crm_db",
            "query": "select * from users where id = :id",
            "params": {"id": 1},
        },
        {"credential": "crm_db", "query": "delete from t", "write": True, "statement_timeout": 5},
    ),
    bad=(
        ({"query": "select 1"}, "is required"),
        ({"credential": "db", "query": "select 1", "statement_timeout": 0}, "between 0 and 300"),
        ({"credential": "db", "query": "select 1", "max_rows": 0.5}, "max_rows must be"),
        ({"credential": "db", "query": "select 1", "params": {"a b": 1}}, "identifiers"),
    ),
)
