"""One Settings object, built once per process from the environment and passed in."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


class ConfigError(ValueError):
    """A setting that cannot work. Its message is one line: the variable, what is wrong and
    the value with any password masked, so a process can print it and exit at start."""

    def __init__(self, variable: str, problem: str, value: str | None = None):
        self.variable, self.problem = variable, problem
        shown = f" (got {mask_url(value)})" if value is not None else ""
        super().__init__(f"{variable}: {problem}{shown}")


def mask_url(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``; never raises."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        # Unparseable: keep the scheme and hide everything between "//" and the last "@".
        return re.sub(r"(//[^/@]*:)[^/@]*@", r"\1***@", url)


# PostgreSQL spellings an operator may write, and what SQLAlchemy needs to hear. SQLAlchemy
# 2.1 maps a bare ``postgresql://`` to psycopg 3; ATOM ships psycopg2 (psycopg2-binary).
_PG_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg2"}
PG_DRIVER_SCHEME = "postgresql+psycopg2"
REDIS_SCHEMES = {"redis", "rediss", "unix"}


def postgres_url(url: str) -> str:
    """The SQLAlchemy URL for a PostgreSQL URL in any accepted spelling (idempotent)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _PG_SCHEMES:
        return f"{PG_DRIVER_SCHEME}://{rest}"
    return url


def check_database_url(url: str, variable: str = "DATABASE_URL") -> str:
    """Validate a PostgreSQL URL and return it in the driver's spelling (``ConfigError``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigError(
            variable, "not a URL; expected postgresql://user:password@host:5432/db", url
        )
    if scheme.lower() not in _PG_SCHEMES:
        hint = (
            "only the psycopg2 driver is installed: write postgresql:// or postgresql+psycopg2://"
            if scheme.lower().startswith("postgresql+")
            else "ATOM needs PostgreSQL: postgresql://, postgres:// or postgresql+psycopg2://"
        )
        raise ConfigError(variable, f"unsupported scheme {scheme!r}; {hint}", url)
    normalized = postgres_url(url)
    try:
        parsed = make_url(normalized)
    except (ArgumentError, ValueError) as e:
        raise ConfigError(variable, f"cannot be parsed ({_first_line(e)})", url) from None
    if not parsed.database:
        raise ConfigError(variable, "names no database (…/DBNAME at the end)", url)
    return normalized


def check_redis_url(url: str, variable: str) -> str:
    """Validate a Redis URL (redis://, rediss:// for TLS, unix://) and return it."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in REDIS_SCHEMES:
        raise ConfigError(
            variable,
            "expected redis://[:password@]host[:port][/db], rediss:// (TLS) or "
            "unix:///path/to/socket[?db=N]",
            url,
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as e:
        raise ConfigError(variable, f"cannot be parsed ({_first_line(e)})", url) from None
    if scheme.lower() != "unix" and not parts.hostname:
        raise ConfigError(variable, "names no host", url)
    reqs = dict(parse_qsl(parts.query)).get("ssl_cert_reqs")
    if reqs is not None and reqs.lower() not in _CERT_REQS and reqs not in _CERT_REQS.values():
        raise ConfigError(variable, "ssl_cert_reqs must be required, optional or none", url)
    db = redis_db(url)
    if db is None:
        raise ConfigError(variable, "the database number must be a whole number 0-15 or more", url)
    return url


def redis_db(url: str) -> int | None:
    """The logical database a Redis URL selects (0 when it names none; None when invalid)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    raw = query.get("db")
    if raw is None and parts.scheme != "unix":
        raw = parts.path.strip("/") or None
    if raw is None:
        return 0
    return int(raw) if raw.isdigit() else None


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server with another logical database (path or ``?db=`` form)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "db"]
    if parts.scheme == "unix":
        return urlunsplit(parts._replace(query=urlencode([*query, ("db", str(db))])))
    return urlunsplit(parts._replace(path=f"/{db}", query=urlencode(query)))


_CERT_REQS = {"required": "CERT_REQUIRED", "optional": "CERT_OPTIONAL", "none": "CERT_NONE"}


def redis_tls(url: str) -> dict | None:
    """TLS options for a ``rediss://`` URL (None for any other): its ``ssl_*`` query
    parameters, with certificates verified unless ``ssl_cert_reqs`` says otherwise.

    Celery's broker would otherwise connect *without* verifying certificates, and its result
    backend refuses a ``rediss://`` URL that lacks ``ssl_cert_reqs``.
    """
    import ssl

    if urlsplit(url).scheme.lower() != "rediss":
        return None
    query = dict(parse_qsl(urlsplit(url).query))
    reqs = query.get("ssl_cert_reqs", "required")
    name = _CERT_REQS.get(reqs.lower(), reqs.upper())
    options: dict = {"ssl_cert_reqs": getattr(ssl, name, ssl.CERT_REQUIRED)}
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if query.get(key):
            options[key] = query[key]
    return options


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


NOTICE_CHANNELS = ("webhook", "slack", "email")


def _channels(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A list of alert channel types; ``none`` for none, unset for all of them."""
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return NOTICE_CHANNELS
    if raw in {"none", "off", "0", "false", "no"}:
        return ()
    chosen = _split(raw)
    unknown = [c for c in chosen if c not in NOTICE_CHANNELS]
    if unknown:
        raise ConfigError(
            name,
            f"{', '.join(unknown)}: channel types are {', '.join(NOTICE_CHANNELS)} or none",
            raw,
        )
    return tuple(dict.fromkeys(chosen))


def _number(env: Mapping[str, str], name: str, default: float, kind: type = int):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise ConfigError(name, f"must be {noun}", raw) from None
    if value < 0:
        raise ConfigError(name, "must not be negative", raw)
    return value


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to know about its environment; see README 'Configuration'."""

    database_url: str | None = None
    redis_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    api_port: int = 5058
    secret_key: str | None = field(default=None, repr=False)
    http_allowlist: tuple[str, ...] = ()
    data_dir: Path = field(default_factory=lambda: Path(".atom"))
    dev: bool = False
    worker_concurrency: int = 8
    max_request_bytes: int = 1024 * 1024
    ml_max_body: int = 4 * 1024 * 1024
    """The largest body of a model-work request (anomaly detect, decisions, model declare and
    train): ``ATOM_ML_MAX_BODY``; every other route keeps ``ATOM_MAX_REQUEST_BYTES``."""
    monitoring_enabled: bool = True
    auto_recovery_enabled: bool = True
    auto_troubleshoot: bool = True
    """With auto recovery on, every failed execution opens a troubleshooting session."""
    troubleshoot_max_retries: int = 3
    """Automatic retries per execution, at most."""
    troubleshoot_max_wait: float = 300.0
    """The longest wait (s) before an automatic retry (a longer Retry-After needs a person)."""
    troubleshoot_notify: tuple[str, ...] = NOTICE_CHANNELS
    """Which of the tenant's alert channels carry troubleshooting notices (needs attention,
    resolved automatically, automatic resolution failed); empty for none."""
    max_parallel_executions: int = 0
    flower_port: int = 5555
    flower_basic_auth: str | None = field(default=None, repr=False)
    function_modules: tuple[str, ...] = ()
    visibility_timeout: int = 3600
    log_level: str = "INFO"
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 20.0
    reconcile_interval: float = 10.0
    stall_seconds: float = 30.0
    schedule_grace: float = 10.0
    schedule_misfire_grace: float = 60.0
    schedule_sweep_interval: float = 5.0
    webhook_max_bytes: int = 256 * 1024
    log_format: str = "json"
    metrics_dir: Path | None = None
    metrics_token: str | None = field(default=None, repr=False)
    monitor_interval: float = 30.0
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "atom@localhost"
    smtp_starttls: bool = False
    step_timeout: float = 300.0
    """Seconds a step may run when it sets no ``timeout`` (a Celery soft time limit)."""
    max_deliveries: int = 3
    """Deliveries of a step whose worker died before it is failed as ``worker_lost``."""
    max_step_output_bytes: int = 1024 * 1024
    """Largest rendered input, and largest output, of one step (as JSON)."""
    max_execution_bytes: int = 16 * 1024 * 1024
    """Largest total of every step's stored input and output in one execution (as JSON)."""
    infra_retries: int = 10
    """Deliveries of a step or finalize retried after a database error, with backoff,
    before the delivery gives up (the step is then failed as ``infrastructure_error`` when
    the database lets it be recorded; the reconciler otherwise)."""
    max_queue_depth: int = 10_000
    """Step messages waiting in the broker past which ``execute`` answers 429 (0: no limit)."""
    rate_limit_enabled: bool = True
    rate_limit_reads: str = "1200/minute"
    rate_limit_writes: str = "300/minute"
    rate_limit_execute: str = "120/minute"
    rate_limit_tenant_execute: str = "600/minute"
    rate_limit_webhooks: str = "120/minute"
    auth_failures_per_minute: int = 20
    key_cache_seconds: float = 10.0
    """How long an API process trusts a key it looked up without asking PostgreSQL again (a
    revocation reaches every process at once through Redis; this bounds it if that is lost)."""
    sse_max_per_key: int = 5
    sse_max_per_process: int = 32
    db_query_allow_own: bool = False
    db_query_allowlist: tuple[str, ...] = ()
    ml_timeout: float = 5.0
    ml_concurrency: int = 2
    ml_retrain_every: int = 50
    ml_retrain_interval: float = 3600.0
    metric_retention_days: float = 30.0
    """Days a metric point (custom or derived) is kept; older ones are pruned."""
    anomaly_interval: float = 30.0
    """Seconds between anomaly-scoring passes (0: no scoring)."""
    anomaly_bucket: float = 300.0
    """Seconds per point of the derived error-rate series (failed / finished in the bucket)."""
    anomaly_settle: float = 2.0
    """Seconds a finished run is left to commit before it becomes a metric point."""
    anomaly_context: int = 8192
    """Scored points sent before the new ones, as the detector's history: at least the
    detector's memory (``atom.ml.anomaly.MEMORY``) gives the scores of the whole series;
    fewer is cheaper and approximate."""
    anomaly_max_series: int = 200
    """Series scored per pass, at most (the rest wait for the next pass)."""
    anomaly_max_points: int = 2000
    """New points of one series scored per call, at most."""
    anomaly_sensitivity: float = 0.5
    """The detector's sensitivity for stored scores (moves its threshold, not the scores)."""
    catalogue_base_url: str | None = None
    optimization_enabled: bool = False
    """WORKFLOW_INTELLIGENT_OPTIMIZATION_ENABLED: beat analyses active workflows (hybrid) and
    stores recommendations; it never applies them."""
    optimization_interval: float = 3600.0
    """WORKFLOW_OPTIMIZATION_INTERVAL: seconds between those periodic analyses."""
    """Replaces every catalogue service's API base with ``<url>/<slug>`` (tests, sandboxes)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        database_url = (env.get("DATABASE_URL") or "").strip() or None
        redis_urls = {
            name: (env.get(name) or "").strip() or None
            for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
        }
        if database_url:
            database_url = check_database_url(database_url)
        for name, url in redis_urls.items():
            # The Celery URLs may name another transport; a Redis one is checked like REDIS_URL.
            if url and (name == "REDIS_URL" or url.partition("://")[0].lower() in REDIS_SCHEMES):
                check_redis_url(url, name)
        return cls(
            database_url=database_url,
            redis_url=redis_urls["REDIS_URL"],
            broker_url=redis_urls["CELERY_BROKER_URL"],
            result_backend=redis_urls["CELERY_RESULT_BACKEND"],
            api_port=_number(env, "PYTHON_API_PORT", 5058),
            secret_key=env.get("ATOM_SECRET_KEY") or None,
            http_allowlist=_split(env.get("ATOM_HTTP_ALLOWLIST")),
            data_dir=Path(env.get("ATOM_DATA_DIR") or ".atom").absolute(),
            dev=_flag(env.get("ATOM_DEV"), False),
            worker_concurrency=_number(env, "ATOM_WORKER_CONCURRENCY", 8),
            max_request_bytes=_number(env, "ATOM_MAX_REQUEST_BYTES", 1024 * 1024),
            ml_max_body=_number(env, "ATOM_ML_MAX_BODY", 4 * 1024 * 1024),
            monitoring_enabled=_flag(env.get("WORKFLOW_MONITORING_ENABLED"), True),
            optimization_enabled=_flag(env.get("WORKFLOW_INTELLIGENT_OPTIMIZATION_ENABLED"), False),
            optimization_interval=_number(env, "WORKFLOW_OPTIMIZATION_INTERVAL", 3600, float),
            auto_recovery_enabled=_flag(env.get("WORKFLOW_AUTO_RECOVERY_ENABLED"), True),
            auto_troubleshoot=_flag(env.get("ATOM_AUTO_TROUBLESHOOT"), True),
            troubleshoot_max_retries=_number(env, "ATOM_TROUBLESHOOT_MAX_RETRIES", 3),
            troubleshoot_max_wait=_number(env, "ATOM_TROUBLESHOOT_MAX_WAIT", 300, float),
            troubleshoot_notify=_channels(env, "ATOM_TROUBLESHOOT_NOTIFY"),
            max_parallel_executions=_number(env, "MAX_PARALLEL_EXECUTIONS", 0),
            flower_port=_number(env, "FLOWER_PORT", 5555),
            flower_basic_auth=env.get("FLOWER_BASIC_AUTH") or None,
            function_modules=_split(env.get("ATOM_FUNCTION_MODULES")),
            visibility_timeout=_number(env, "ATOM_VISIBILITY_TIMEOUT", 3600),
            log_level=(env.get("ATOM_LOG_LEVEL") or "INFO").upper(),
            heartbeat_interval=_number(env, "ATOM_HEARTBEAT_INTERVAL", 5, float),
            heartbeat_timeout=_number(env, "ATOM_HEARTBEAT_TIMEOUT", 20, float),
            reconcile_interval=_number(env, "ATOM_RECONCILE_INTERVAL", 10, float),
            stall_seconds=_number(env, "ATOM_STALL_SECONDS", 30, float),
            schedule_grace=_number(env, "ATOM_SCHEDULE_GRACE", 10, float),
            schedule_misfire_grace=_number(env, "ATOM_SCHEDULE_MISFIRE_GRACE", 60, float),
            schedule_sweep_interval=_number(env, "ATOM_SCHEDULE_SWEEP_INTERVAL", 5, float),
            webhook_max_bytes=_number(env, "ATOM_WEBHOOK_MAX_BYTES", 256 * 1024),
            log_format=(env.get("ATOM_LOG_FORMAT") or "json").lower(),
            metrics_dir=Path(env["ATOM_METRICS_DIR"]).absolute()
            if env.get("ATOM_METRICS_DIR")
            else None,
            metrics_token=env.get("ATOM_METRICS_TOKEN") or None,
            monitor_interval=_number(env, "ATOM_MONITOR_INTERVAL", 30, float),
            smtp_host=env.get("ATOM_SMTP_HOST") or None,
            smtp_port=_number(env, "ATOM_SMTP_PORT", 25),
            smtp_username=env.get("ATOM_SMTP_USERNAME") or None,
            smtp_password=env.get("ATOM_SMTP_PASSWORD") or None,
            smtp_from=env.get("ATOM_SMTP_FROM") or "atom@localhost",
            smtp_starttls=_flag(env.get("ATOM_SMTP_STARTTLS"), False),
            step_timeout=float(env.get("ATOM_STEP_TIMEOUT") or 300),
            max_deliveries=int(env.get("ATOM_MAX_DELIVERIES") or 3),
            max_step_output_bytes=int(env.get("ATOM_MAX_STEP_OUTPUT_BYTES") or 1024 * 1024),
            max_execution_bytes=int(env.get("ATOM_MAX_EXECUTION_BYTES") or 16 * 1024 * 1024),
            infra_retries=int(env.get("ATOM_INFRA_RETRIES") or 10),
            max_queue_depth=int(env.get("ATOM_MAX_QUEUE_DEPTH") or 10_000),
            rate_limit_enabled=_flag(env.get("ATOM_RATE_LIMIT_ENABLED"), True),
            rate_limit_reads=env.get("ATOM_RATE_LIMIT_READS") or "1200/minute",
            rate_limit_writes=env.get("ATOM_RATE_LIMIT_WRITES") or "300/minute",
            rate_limit_execute=env.get("ATOM_RATE_LIMIT_EXECUTE") or "120/minute",
            rate_limit_tenant_execute=env.get("ATOM_RATE_LIMIT_TENANT_EXECUTE") or "600/minute",
            rate_limit_webhooks=env.get("ATOM_RATE_LIMIT_WEBHOOKS") or "120/minute",
            auth_failures_per_minute=int(env.get("ATOM_AUTH_FAILURES_PER_MINUTE") or 20),
            key_cache_seconds=_number(env, "ATOM_KEY_CACHE_SECONDS", 10, float),
            sse_max_per_key=int(env.get("ATOM_SSE_MAX_PER_KEY") or 5),
            sse_max_per_process=int(env.get("ATOM_SSE_MAX_PER_PROCESS") or 32),
            db_query_allow_own=_flag(env.get("ATOM_DB_QUERY_ALLOW_OWN"), False),
            db_query_allowlist=_split(env.get("ATOM_DB_QUERY_ALLOWLIST")),
            ml_timeout=float(env.get("ATOM_ML_TIMEOUT") or 5),
            ml_concurrency=int(env.get("ATOM_ML_CONCURRENCY") or 2),
            ml_retrain_every=int(env.get("ATOM_ML_RETRAIN_EVERY") or 50),
            ml_retrain_interval=float(env.get("ATOM_ML_RETRAIN_INTERVAL") or 3600),
            metric_retention_days=_number(env, "ATOM_METRIC_RETENTION_DAYS", 30, float),
            anomaly_interval=_number(env, "ATOM_ANOMALY_INTERVAL", 30, float),
            anomaly_bucket=_number(env, "ATOM_ANOMALY_BUCKET", 300, float),
            anomaly_settle=_number(env, "ATOM_ANOMALY_SETTLE", 2, float),
            anomaly_context=_number(env, "ATOM_ANOMALY_CONTEXT", 8192),
            anomaly_max_series=_number(env, "ATOM_ANOMALY_MAX_SERIES", 200),
            anomaly_max_points=_number(env, "ATOM_ANOMALY_MAX_POINTS", 2000),
            anomaly_sensitivity=_number(env, "ATOM_ANOMALY_SENSITIVITY", 0.5, float),
            catalogue_base_url=env.get("ATOM_CATALOGUE_BASE_URL") or None,
        )

    def with_services(self, database_url: str, redis_url: str) -> Settings:
        """A copy with the service URLs filled in (used after starting embedded servers)."""
        return replace(
            self,
            database_url=self.database_url or database_url,
            redis_url=self.redis_url or redis_url,
        )

    @property
    def celery_broker(self) -> str:
        """Broker URL: CELERY_BROKER_URL, else REDIS_URL."""
        url = self.broker_url or self.redis_url
        if not url:
            raise RuntimeError("No broker configured: set CELERY_BROKER_URL or REDIS_URL")
        return url

    @property
    def celery_backend(self) -> str:
        """Result backend URL: CELERY_RESULT_BACKEND, else the database after REDIS_URL's.

        Results (chord counters among them) live apart from the broker's queues, which the
        reconciler scans: ``redis://host/9`` puts messages in 9 and results in 10.
        """
        if self.result_backend:
            return self.result_backend
        if not self.redis_url:
            raise RuntimeError(
                "No result backend configured: set CELERY_RESULT_BACKEND or REDIS_URL"
            )
        return with_redis_db(self.redis_url, (redis_db(self.redis_url) or 0) + 1)

    @property
    def metrics_root(self) -> Path:
        """Where this machine's processes keep their Prometheus files (one folder each)."""
        return self.metrics_dir or self.data_dir / "metrics"

    @property
    def events_redis(self) -> str:
        """Redis used for pub/sub events and locks: REDIS_URL, else the broker."""
        return self.redis_url or self.celery_broker

    def as_env(self) -> dict[str, str]:
        """The environment variables that rebuild these settings in a child process."""
        env = {
            "PYTHON_API_PORT": str(self.api_port),
            "ATOM_DATA_DIR": str(self.data_dir),
            "ATOM_DEV": "1" if self.dev else "0",
            "ATOM_HTTP_ALLOWLIST": ",".join(self.http_allowlist),
            "ATOM_VISIBILITY_TIMEOUT": str(self.visibility_timeout),
            "ATOM_HEARTBEAT_INTERVAL": str(self.heartbeat_interval),
            "ATOM_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
            "ATOM_RECONCILE_INTERVAL": str(self.reconcile_interval),
            "ATOM_STALL_SECONDS": str(self.stall_seconds),
            "ATOM_SCHEDULE_GRACE": str(self.schedule_grace),
            "ATOM_SCHEDULE_MISFIRE_GRACE": str(self.schedule_misfire_grace),
            "ATOM_SCHEDULE_SWEEP_INTERVAL": str(self.schedule_sweep_interval),
            "ATOM_WEBHOOK_MAX_BYTES": str(self.webhook_max_bytes),
            "WORKFLOW_AUTO_RECOVERY_ENABLED": "1" if self.auto_recovery_enabled else "0",
            "ATOM_AUTO_TROUBLESHOOT": "1" if self.auto_troubleshoot else "0",
            "ATOM_TROUBLESHOOT_MAX_RETRIES": str(self.troubleshoot_max_retries),
            "ATOM_TROUBLESHOOT_MAX_WAIT": str(self.troubleshoot_max_wait),
            "ATOM_TROUBLESHOOT_NOTIFY": ",".join(self.troubleshoot_notify) or "none",
            "ATOM_FUNCTION_MODULES": ",".join(self.function_modules),
            "FLOWER_PORT": str(self.flower_port),
            "ATOM_LOG_LEVEL": self.log_level,
            "ATOM_LOG_FORMAT": self.log_format,
            "ATOM_METRICS_DIR": str(self.metrics_root),
            "ATOM_MONITOR_INTERVAL": str(self.monitor_interval),
            "WORKFLOW_MONITORING_ENABLED": "1" if self.monitoring_enabled else "0",
            "WORKFLOW_INTELLIGENT_OPTIMIZATION_ENABLED": "1" if self.optimization_enabled else "0",
            "WORKFLOW_OPTIMIZATION_INTERVAL": str(self.optimization_interval),
            "ATOM_SMTP_PORT": str(self.smtp_port),
            "ATOM_SMTP_FROM": self.smtp_from,
            "ATOM_SMTP_STARTTLS": "1" if self.smtp_starttls else "0",
            "ATOM_STEP_TIMEOUT": str(self.step_timeout),
            "ATOM_MAX_DELIVERIES": str(self.max_deliveries),
            "ATOM_MAX_STEP_OUTPUT_BYTES": str(self.max_step_output_bytes),
            "ATOM_MAX_EXECUTION_BYTES": str(self.max_execution_bytes),
            "ATOM_INFRA_RETRIES": str(self.infra_retries),
            "ATOM_MAX_QUEUE_DEPTH": str(self.max_queue_depth),
            "ATOM_RATE_LIMIT_ENABLED": "1" if self.rate_limit_enabled else "0",
            "ATOM_RATE_LIMIT_READS": self.rate_limit_reads,
            "ATOM_RATE_LIMIT_WRITES": self.rate_limit_writes,
            "ATOM_RATE_LIMIT_EXECUTE": self.rate_limit_execute,
            "ATOM_RATE_LIMIT_TENANT_EXECUTE": self.rate_limit_tenant_execute,
            "ATOM_RATE_LIMIT_WEBHOOKS": self.rate_limit_webhooks,
            "ATOM_AUTH_FAILURES_PER_MINUTE": str(self.auth_failures_per_minute),
            "ATOM_KEY_CACHE_SECONDS": str(self.key_cache_seconds),
            "ATOM_SSE_MAX_PER_KEY": str(self.sse_max_per_key),
            "ATOM_SSE_MAX_PER_PROCESS": str(self.sse_max_per_process),
            "ATOM_DB_QUERY_ALLOW_OWN": "1" if self.db_query_allow_own else "0",
            "ATOM_DB_QUERY_ALLOWLIST": ",".join(self.db_query_allowlist),
            "ATOM_ML_TIMEOUT": str(self.ml_timeout),
            "ATOM_ML_MAX_BODY": str(self.ml_max_body),
            "ATOM_ML_CONCURRENCY": str(self.ml_concurrency),
            "ATOM_ML_RETRAIN_EVERY": str(self.ml_retrain_every),
            "ATOM_ML_RETRAIN_INTERVAL": str(self.ml_retrain_interval),
            "ATOM_METRIC_RETENTION_DAYS": str(self.metric_retention_days),
            "ATOM_ANOMALY_INTERVAL": str(self.anomaly_interval),
            "ATOM_ANOMALY_BUCKET": str(self.anomaly_bucket),
            "ATOM_ANOMALY_SETTLE": str(self.anomaly_settle),
            "ATOM_ANOMALY_CONTEXT": str(self.anomaly_context),
            "ATOM_ANOMALY_MAX_SERIES": str(self.anomaly_max_series),
            "ATOM_ANOMALY_MAX_POINTS": str(self.anomaly_max_points),
            "ATOM_ANOMALY_SENSITIVITY": str(self.anomaly_sensitivity),
        }
        optional = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": self.result_backend,
            "ATOM_SECRET_KEY": self.secret_key,
            "FLOWER_BASIC_AUTH": self.flower_basic_auth,
            "ATOM_METRICS_TOKEN": self.metrics_token,
            "ATOM_SMTP_HOST": self.smtp_host,
            "ATOM_SMTP_USERNAME": self.smtp_username,
            "ATOM_SMTP_PASSWORD": self.smtp_password,
            "ATOM_CATALOGUE_BASE_URL": self.catalogue_base_url,
        }
        env.update({k: v for k, v in optional.items() if v})
        return env
