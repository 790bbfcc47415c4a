"""One Settings object, built once per process from the environment and passed in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


def _with_db(url: str, db: int) -> str:
    """The same Redis server with another logical database number."""
    base, _, tail = url.partition("?")
    scheme, sep, rest = base.partition("://")
    host, slash, _path = rest.partition("/")
    out = f"{scheme}{sep}{host}/{db}"
    return f"{out}?{tail}" if tail else out


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
    monitoring_enabled: bool = True
    auto_recovery_enabled: bool = True
    auto_troubleshoot: bool = True
    """With auto recovery on, every failed execution opens a troubleshooting session."""
    troubleshoot_max_retries: int = 3
    """Automatic retries per execution, at most."""
    troubleshoot_max_wait: float = 300.0
    """The longest wait (s) before an automatic retry (a longer Retry-After needs a person)."""
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
    rate_limit_enabled: bool = True
    rate_limit_reads: str = "1200/minute"
    rate_limit_writes: str = "300/minute"
    rate_limit_execute: str = "120/minute"
    rate_limit_tenant_execute: str = "600/minute"
    rate_limit_webhooks: str = "120/minute"
    auth_failures_per_minute: int = 20
    sse_max_per_key: int = 5
    sse_max_per_process: int = 32
    db_query_allow_own: bool = False
    db_query_allowlist: tuple[str, ...] = ()
    ml_timeout: float = 5.0
    ml_concurrency: int = 2
    ml_retrain_every: int = 50
    ml_retrain_interval: float = 3600.0
    catalogue_base_url: str | None = None
    """Replaces every catalogue service's API base with ``<url>/<slug>`` (tests, sandboxes)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: the process environment)."""
        env = os.environ if environ is None else environ
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            broker_url=env.get("CELERY_BROKER_URL") or None,
            result_backend=env.get("CELERY_RESULT_BACKEND") or None,
            api_port=int(env.get("PYTHON_API_PORT") or 5058),
            secret_key=env.get("ATOM_SECRET_KEY") or None,
            http_allowlist=_split(env.get("ATOM_HTTP_ALLOWLIST")),
            data_dir=Path(env.get("ATOM_DATA_DIR") or ".atom").absolute(),
            dev=_flag(env.get("ATOM_DEV"), False),
            worker_concurrency=int(env.get("ATOM_WORKER_CONCURRENCY") or 8),
            max_request_bytes=int(env.get("ATOM_MAX_REQUEST_BYTES") or 1024 * 1024),
            monitoring_enabled=_flag(env.get("WORKFLOW_MONITORING_ENABLED"), True),
            auto_recovery_enabled=_flag(env.get("WORKFLOW_AUTO_RECOVERY_ENABLED"), True),
            auto_troubleshoot=_flag(env.get("ATOM_AUTO_TROUBLESHOOT"), True),
            troubleshoot_max_retries=int(env.get("ATOM_TROUBLESHOOT_MAX_RETRIES") or 3),
            troubleshoot_max_wait=float(env.get("ATOM_TROUBLESHOOT_MAX_WAIT") or 300),
            max_parallel_executions=int(env.get("MAX_PARALLEL_EXECUTIONS") or 0),
            flower_port=int(env.get("FLOWER_PORT") or 5555),
            flower_basic_auth=env.get("FLOWER_BASIC_AUTH") or None,
            function_modules=_split(env.get("ATOM_FUNCTION_MODULES")),
            visibility_timeout=int(env.get("ATOM_VISIBILITY_TIMEOUT") or 3600),
            log_level=(env.get("ATOM_LOG_LEVEL") or "INFO").upper(),
            heartbeat_interval=float(env.get("ATOM_HEARTBEAT_INTERVAL") or 5),
            heartbeat_timeout=float(env.get("ATOM_HEARTBEAT_TIMEOUT") or 20),
            reconcile_interval=float(env.get("ATOM_RECONCILE_INTERVAL") or 10),
            stall_seconds=float(env.get("ATOM_STALL_SECONDS") or 30),
            schedule_grace=float(env.get("ATOM_SCHEDULE_GRACE") or 10),
            schedule_misfire_grace=float(env.get("ATOM_SCHEDULE_MISFIRE_GRACE") or 60),
            schedule_sweep_interval=float(env.get("ATOM_SCHEDULE_SWEEP_INTERVAL") or 5),
            webhook_max_bytes=int(env.get("ATOM_WEBHOOK_MAX_BYTES") or 256 * 1024),
            log_format=(env.get("ATOM_LOG_FORMAT") or "json").lower(),
            metrics_dir=Path(env["ATOM_METRICS_DIR"]).absolute()
            if env.get("ATOM_METRICS_DIR")
            else None,
            metrics_token=env.get("ATOM_METRICS_TOKEN") or None,
            monitor_interval=float(env.get("ATOM_MONITOR_INTERVAL") or 30),
            smtp_host=env.get("ATOM_SMTP_HOST") or None,
            smtp_port=int(env.get("ATOM_SMTP_PORT") or 25),
            smtp_username=env.get("ATOM_SMTP_USERNAME") or None,
            smtp_password=env.get("ATOM_SMTP_PASSWORD") or None,
            smtp_from=env.get("ATOM_SMTP_FROM") or "atom@localhost",
            smtp_starttls=_flag(env.get("ATOM_SMTP_STARTTLS"), False),
            rate_limit_enabled=_flag(env.get("ATOM_RATE_LIMIT_ENABLED"), True),
            rate_limit_reads=env.get("ATOM_RATE_LIMIT_READS") or "1200/minute",
            rate_limit_writes=env.get("ATOM_RATE_LIMIT_WRITES") or "300/minute",
            rate_limit_execute=env.get("ATOM_RATE_LIMIT_EXECUTE") or "120/minute",
            rate_limit_tenant_execute=env.get("ATOM_RATE_LIMIT_TENANT_EXECUTE") or "600/minute",
            rate_limit_webhooks=env.get("ATOM_RATE_LIMIT_WEBHOOKS") or "120/minute",
            auth_failures_per_minute=int(env.get("ATOM_AUTH_FAILURES_PER_MINUTE") or 20),
            sse_max_per_key=int(env.get("ATOM_SSE_MAX_PER_KEY") or 5),
            sse_max_per_process=int(env.get("ATOM_SSE_MAX_PER_PROCESS") or 32),
            db_query_allow_own=_flag(env.get("ATOM_DB_QUERY_ALLOW_OWN"), False),
            db_query_allowlist=_split(env.get("ATOM_DB_QUERY_ALLOWLIST")),
            ml_timeout=float(env.get("ATOM_ML_TIMEOUT") or 5),
            ml_concurrency=int(env.get("ATOM_ML_CONCURRENCY") or 2),
            ml_retrain_every=int(env.get("ATOM_ML_RETRAIN_EVERY") or 50),
            ml_retrain_interval=float(env.get("ATOM_ML_RETRAIN_INTERVAL") or 3600),
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
        """Result backend URL: CELERY_RESULT_BACKEND, else database 1 of REDIS_URL."""
        if self.result_backend:
            return self.result_backend
        if not self.redis_url:
            raise RuntimeError(
                "No result backend configured: set CELERY_RESULT_BACKEND or REDIS_URL"
            )
        return _with_db(self.redis_url, 1)

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
            "ATOM_FUNCTION_MODULES": ",".join(self.function_modules),
            "FLOWER_PORT": str(self.flower_port),
            "ATOM_LOG_LEVEL": self.log_level,
            "ATOM_LOG_FORMAT": self.log_format,
            "ATOM_METRICS_DIR": str(self.metrics_root),
            "ATOM_MONITOR_INTERVAL": str(self.monitor_interval),
            "WORKFLOW_MONITORING_ENABLED": "1" if self.monitoring_enabled else "0",
            "ATOM_SMTP_PORT": str(self.smtp_port),
            "ATOM_SMTP_FROM": self.smtp_from,
            "ATOM_SMTP_STARTTLS": "1" if self.smtp_starttls else "0",
            "ATOM_RATE_LIMIT_ENABLED": "1" if self.rate_limit_enabled else "0",
            "ATOM_RATE_LIMIT_READS": self.rate_limit_reads,
            "ATOM_RATE_LIMIT_WRITES": self.rate_limit_writes,
            "ATOM_RATE_LIMIT_EXECUTE": self.rate_limit_execute,
            "ATOM_RATE_LIMIT_TENANT_EXECUTE": self.rate_limit_tenant_execute,
            "ATOM_RATE_LIMIT_WEBHOOKS": self.rate_limit_webhooks,
            "ATOM_AUTH_FAILURES_PER_MINUTE": str(self.auth_failures_per_minute),
            "ATOM_SSE_MAX_PER_KEY": str(self.sse_max_per_key),
            "ATOM_SSE_MAX_PER_PROCESS": str(self.sse_max_per_process),
            "ATOM_DB_QUERY_ALLOW_OWN": "1" if self.db_query_allow_own else "0",
            "ATOM_DB_QUERY_ALLOWLIST": ",".join(self.db_query_allowlist),
            "ATOM_ML_TIMEOUT": str(self.ml_timeout),
            "ATOM_ML_CONCURRENCY": str(self.ml_concurrency),
            "ATOM_ML_RETRAIN_EVERY": str(self.ml_retrain_every),
            "ATOM_ML_RETRAIN_INTERVAL": str(self.ml_retrain_interval),
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
