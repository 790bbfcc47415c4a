"""Settings from the environment: every URL spelling an operator may write, and one clear
line for a wrong one (the variable, what is wrong, the password masked)."""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy.engine import make_url

from atom.celery_app import make_celery
from atom.config import ConfigError, Settings, mask_url, postgres_url, redis_db, with_redis_db

SECRET = "s3cr%2Fet"  # percent-encoded "s3cr/et"


@pytest.mark.parametrize(
    "given",
    [
        "postgresql://atom:pw@db.example.com:5432/atom",
        "postgres://atom:pw@db.example.com:5432/atom",
        "postgresql+psycopg2://atom:pw@db.example.com:5432/atom",
        "POSTGRESQL://atom:pw@db.example.com:5432/atom",
    ],
)
def test_every_postgres_spelling_means_psycopg2(given: str):
    settings = Settings.from_env({"DATABASE_URL": given})
    url = make_url(settings.database_url)
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "atom",
        "pw",
        "db.example.com",
        5432,
        "atom",
    )
    # the dialect SQLAlchemy picks loads: psycopg2 is the installed driver
    assert url.get_dialect().driver == "psycopg2"


def test_postgres_url_keeps_everything_but_the_scheme():
    given = f"postgres://u:{SECRET}@/atom?host=/run/postgresql&sslmode=require"
    assert (
        postgres_url(given)
        == f"postgresql+psycopg2://u:{SECRET}@/atom?host=/run/postgresql&sslmode=require"
    )
    assert postgres_url(postgres_url(given)) == postgres_url(given)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("DATABASE_URL", "mysql://root:hunter2@db/atom", "unsupported scheme 'mysql'"),
        ("DATABASE_URL", "postgresql+psycopg://u:hunter2@db/atom", "only the psycopg2 driver"),
        ("DATABASE_URL", "sqlite:///atom.db", "ATOM needs PostgreSQL"),
        ("DATABASE_URL", "db.example.com:5432/atom", "not a URL"),
        ("DATABASE_URL", "postgresql://u:hunter2@db.example.com:54x2/atom", "cannot be parsed"),
        ("DATABASE_URL", "postgresql://u:hunter2@db.example.com:5432", "names no database"),
        ("REDIS_URL", "http://:hunter2@cache:6379/0", "expected redis://"),
        ("REDIS_URL", "redis://:hunter2@cache:63x9/0", "cannot be parsed"),
        ("REDIS_URL", "redis://:hunter2@cache:6379/nine", "database number"),
        ("REDIS_URL", "redis://:hunter2@/0", "names no host"),
        ("CELERY_BROKER_URL", "redis://:hunter2@cache:6379/x", "database number"),
        ("CELERY_RESULT_BACKEND", "rediss://:hunter2@c/1?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("PYTHON_API_PORT", "80a", "must be a whole number"),
        ("ATOM_STALL_SECONDS", "soon", "must be a number"),
        ("MAX_PARALLEL_EXECUTIONS", "-1", "must not be negative"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_the_variable_with_the_password_masked(
    variable: str, value: str, says: str
):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert says in message
    assert "\n" not in message
    assert "hunter2" not in message
    if "hunter2" in value:
        assert "***" in message


def test_mask_url():
    assert mask_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    assert mask_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert "pw" not in mask_url("redis://:pw@h:port/2")


def test_redis_databases_are_derived_from_the_url_given():
    settings = Settings.from_env({"REDIS_URL": f"redis://:{SECRET}@cache.internal:6380/9"})
    assert settings.celery_broker == f"redis://:{SECRET}@cache.internal:6380/9"
    assert settings.events_redis == settings.celery_broker
    assert settings.celery_backend == f"redis://:{SECRET}@cache.internal:6380/10"
    assert redis_db(settings.celery_backend) == 10
    # no database named: 0 for messages, 1 for results (the defaults before this change)
    plain = Settings.from_env({"REDIS_URL": "redis://cache"})
    assert redis_db(plain.celery_broker) == 0 and redis_db(plain.celery_backend) == 1
    # a socket names its database in the query
    sock = with_redis_db("unix:///run/redis.sock?db=3&timeout=5", 4)
    assert redis_db(sock) == 4 and "timeout=5" in sock
    # an explicit result backend wins
    given = Settings.from_env(
        {"REDIS_URL": "redis://cache/2", "CELERY_RESULT_BACKEND": "redis://other/7"}
    )
    assert given.celery_backend == "redis://other/7"


def test_redis_user_and_password_reach_celery_and_redis_py():
    import redis

    url = f"redis://atom:{SECRET}@cache.internal:6380/5"
    app = make_celery(Settings.from_env({"REDIS_URL": url}))
    try:
        with app.connection_for_write() as conn:
            assert (conn.userid, conn.password, conn.hostname, conn.port) == (
                "atom",
                "s3cr/et",
                "cache.internal",
                6380,
            )
            assert conn.virtual_host in ("5", "/5")
        params = app.backend.connparams
        assert (params["username"], params["password"], params["db"]) == ("atom", "s3cr/et", 6)
    finally:
        app.close()
    kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("atom", "s3cr/et", 5)


def test_rediss_verifies_certificates_unless_the_url_says_otherwise():
    app = make_celery(Settings.from_env({"REDIS_URL": "rediss://:pw@cache.internal:6380/0"}))
    try:
        assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        # Celery's backend accepts the URL (it refuses rediss:// without ssl_cert_reqs) over TLS
        import redis

        assert issubclass(app.backend.connparams["connection_class"], redis.SSLConnection)
        assert app.backend.connparams["ssl_cert_reqs"] == ssl.CERT_REQUIRED
        assert app.backend.connparams["db"] == 1
    finally:
        app.close()
    relaxed = make_celery(
        Settings.from_env(
            {"REDIS_URL": "rediss://cache:6380/0?ssl_cert_reqs=none&ssl_ca_certs=/etc/ca.pem"}
        )
    )
    try:
        assert relaxed.conf.broker_use_ssl == {
            "ssl_cert_reqs": ssl.CERT_NONE,
            "ssl_ca_certs": "/etc/ca.pem",
        }
    finally:
        relaxed.close()
