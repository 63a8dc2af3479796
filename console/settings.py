"""Settings for Fleet Console. Every value comes from the environment, with defaults that work
for the local fleet that `make up` starts."""

import os
import warnings
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: str = "false") -> bool:
    return env(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    return int(env(name, str(default)))


def envfloat(name: str, default: float) -> float:
    return float(env(name, str(default)))


DEBUG = envbool("CONSOLE_DEBUG")
SECRET_KEY = env("CONSOLE_SECRET_KEY", "insecure-development-key-set-CONSOLE_SECRET_KEY")
# Encrypts target passwords stored in the console DB; falls back to SECRET_KEY.
FIELD_ENCRYPTION_KEY = env("CONSOLE_FIELD_ENCRYPTION_KEY", SECRET_KEY)
ALLOWED_HOSTS = [h for h in env("CONSOLE_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env("CONSOLE_CSRF_TRUSTED_ORIGINS").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "axes",
    "csp",
    "console",
    "tenants",
    "migrations_ui",
    "monitors",
]

MIDDLEWARE = [
    "console.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "console.middleware.RefuseControlCharactersMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "console.urls"
CSRF_FAILURE_VIEW = "console.views.errors.csrf_failure"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.console",
                "monitors.context_processors.alerts",
            ],
            "builtins": ["template_partials.templatetags.partials", "console.templatetags.console_tags"],
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": env("CONSOLE_DB_HOST", "127.0.0.1"),
        "PORT": env("CONSOLE_DB_PORT", "54320"),
        "NAME": env("CONSOLE_DB_NAME", "console"),
        "USER": env("CONSOLE_DB_USER", "console"),
        "PASSWORD": env("CONSOLE_DB_PASSWORD"),
        "CONN_MAX_AGE": envint("CONSOLE_DB_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"connect_timeout": 5, "application_name": "fleet-console"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
SESSION_COOKIE_AGE = int(envfloat("CONSOLE_SESSION_AGE_H", 8.0) * 3600)

# Failed logins lock out one user from one address (django-axes); the lockout is audited.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = envint("CONSOLE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envfloat("CONSOLE_LOGIN_LOCKOUT_MIN", 15.0))
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "console.lockout.locked_out"
AXES_USERNAME_CALLABLE = "console.lockout.username"
AXES_VERBOSE = False  # no banner on every command; failures and lockouts are still logged (warnings)

# Only the console's own static files: htmx is configured (base.html) to need no inline code.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "object-src": [NONE],
    }
}

# Production: served over HTTPS by a TLS-terminating proxy that sets X-Forwarded-Proto. Cookies
# are Secure, HSTS is sent, plain HTTP is redirected (except the probes and the scrape).
PRODUCTION = envbool("CONSOLE_PRODUCTION")
if PRODUCTION:
    if len(SECRET_KEY) < 50 or "insecure" in SECRET_KEY:  # the defaults, which sign sessions for anyone
        raise ImproperlyConfigured("CONSOLE_PRODUCTION needs a CONSOLE_SECRET_KEY of 50 or more random characters")
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = envint("CONSOLE_HSTS_MAX_AGE_S", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env("CONSOLE_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
WHITENOISE_USE_FINDERS = True
# Without collectstatic (make up, tests) files come from the finders; no need to warn about it.
warnings.filterwarnings("ignore", message="No directory at")

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:54325/0")

# Celery: one app configured from here (namespace CELERY), JSON only.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# With Redis away, sending a job gives up after a few seconds (the job stays queued, see jobs.enqueue).
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A message unacknowledged this long is handed out again; the job claim makes that harmless.
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT_S", 3600),
}
# Two queues, each with its own worker processes, so hours-long jobs never starve the samplers:
# "jobs" runs Job rows (console.run_job); "monitor" runs the samplers, alerts, probes, the job
# reaper and the beat tasks that only enqueue jobs. A task not listed goes to "jobs".
JOBS_QUEUE = env("CELERY_JOBS_QUEUE", "jobs")
MONITOR_QUEUE = env("CELERY_MONITOR_QUEUE", "monitor")
CELERY_TASK_DEFAULT_QUEUE = JOBS_QUEUE
CELERY_TASK_ROUTES = {
    "console.run_job": {"queue": JOBS_QUEUE},
    "monitors.*": {"queue": MONITOR_QUEUE},
    "console.probe_targets": {"queue": MONITOR_QUEUE},
    "console.reap_stale_jobs": {"queue": MONITOR_QUEUE},
    "tenants.refresh_health": {"queue": MONITOR_QUEUE},
}
CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {
        "task": "console.reap_stale_jobs",
        "schedule": envfloat("JOB_REAPER_INTERVAL_S", 15.0),
    },
    "probe-targets": {
        "task": "console.probe_targets",
        "schedule": envfloat("TARGET_PROBE_INTERVAL_S", 30.0),
    },
}

# Jobs: a running job whose heartbeat is older than this is taken to have lost its worker.
JOB_HEARTBEAT_INTERVAL_S = envfloat("JOB_HEARTBEAT_INTERVAL_S", 5.0)
JOB_STALE_AFTER_S = envfloat("JOB_STALE_AFTER_S", 60.0)
JOB_LOG_MAX_LINES = envint("JOB_LOG_MAX_LINES", 500)
# A queued job whose message never reached the broker (Redis away) is sent again after this.
JOB_RESEND_AFTER_S = envfloat("JOB_RESEND_AFTER_S", 5.0)
# A running job rides out a console DB outage (restart, failover) this long before it fails.
JOB_DB_RETRY_FOR_S = envfloat("JOB_DB_RETRY_FOR_S", 60.0)
# Hours an approval request stays valid: to be decided, and once approved to be carried out.
APPROVAL_EXPIRY_H = envfloat("APPROVAL_EXPIRY_H", 24.0)

# Target engines: defaults for every target, overridable per target.
TARGET_CONNECT_TIMEOUT_S = envint("TARGET_CONNECT_TIMEOUT_S", 3)
TARGET_STATEMENT_TIMEOUT_MS = envint("TARGET_STATEMENT_TIMEOUT_MS", 5000)
TARGET_LOCK_TIMEOUT_MS = envint("TARGET_LOCK_TIMEOUT_MS", 2000)
TARGET_PROBE_CONCURRENCY = envint("TARGET_PROBE_CONCURRENCY", 8)
ENGINE_APPLICATION_NAME = env("ENGINE_APPLICATION_NAME", "fleet-console")
# A pooled connection idle for longer than this is pinged before use (one that has bytes waiting,
# such as a terminated backend's goodbye, always is).
ENGINE_PING_AFTER_IDLE_S = envfloat("ENGINE_PING_AFTER_IDLE_S", 10.0)
# Targets per page of the fleet overview (sorted over the whole fleet first).
FLEET_OVERVIEW_PAGE_SIZE = envint("FLEET_OVERVIEW_PAGE_SIZE", 100)
# Target passwords are read only from environment variables with this prefix.
TARGET_PASSWORD_ENV_PREFIX = env("TARGET_PASSWORD_ENV_PREFIX", "FLEET_")
# libpq's require_auth: which authentication the console accepts from a target (never cleartext
# 'password', which hands the password to whoever answers on that address).
TARGET_REQUIRE_AUTH = env("TARGET_REQUIRE_AUTH", "scram-sha-256,md5")

# Demo fleet, registered by `manage.py bootstrap_demo`.
DEMO_PASSWORD_DEFAULT = "fleet-demo-2026"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # request_id: the id the error page shows, "-" outside a request (see console/middleware.py).
    "filters": {"request_id": {"()": "console.middleware.RequestIdFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env("CONSOLE_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

# Monitors --------------------------------------------------------------------------------------
MONITOR_FAST_INTERVAL_S = envfloat("MONITOR_FAST_INTERVAL_S", 10.0)  # activity, pools, replication
MONITOR_STATEMENTS_INTERVAL_S = envfloat("MONITOR_STATEMENTS_INTERVAL_S", 60.0)  # pg_stat_statements
MONITOR_CHECKS_INTERVAL_S = envfloat("MONITOR_CHECKS_INTERVAL_S", 300.0)  # health checks (monitors/checks.py)
MONITOR_CHECKS_STATEMENT_TIMEOUT_MS = envint("MONITOR_CHECKS_STATEMENT_TIMEOUT_MS", 10000)
MONITOR_SAMPLER_CONCURRENCY = envint("MONITOR_SAMPLER_CONCURRENCY", 8)
# A round is sent to the monitor queue in chunks of this many targets, shared by the monitor workers.
MONITOR_CHUNK_SIZE = envint("MONITOR_CHUNK_SIZE", 50)
# Above this many targets, a monitor process closes each target's connection once it is sampled
# (one connection per target at most, none between rounds) instead of keeping a pool per target.
MONITOR_RETURN_CONNECTIONS_ABOVE = envint("MONITOR_RETURN_CONNECTIONS_ABOVE", 100)
MONITOR_STATEMENT_TIMEOUT_MS = envint("MONITOR_STATEMENT_TIMEOUT_MS", 3000)
MONITOR_RAW_RETENTION_H = envfloat("MONITOR_RAW_RETENTION_H", 24.0)
MONITOR_MINUTE_RETENTION_D = envfloat("MONITOR_MINUTE_RETENTION_D", 7.0)
MONITOR_LONG_RUNNING_S = envfloat("MONITOR_LONG_RUNNING_S", 60.0)
MONITOR_SLOW_QUERY_MS = envfloat("MONITOR_SLOW_QUERY_MS", 100.0)  # mean time that makes a query slow
MONITOR_ALLOW_CANCEL = envbool("MONITOR_ALLOW_CANCEL", "true")
MONITOR_ALLOW_TERMINATE = envbool("MONITOR_ALLOW_TERMINATE", "true")
# A sampler failing this many rounds in a row on a target that is up opens a critical alert.
MONITOR_SAMPLER_FAILURE_ALERT_ROUNDS = envint("MONITOR_SAMPLER_FAILURE_ALERT_ROUNDS", 3)
CONSOLE_SLOW_STATEMENT_MS = envfloat("CONSOLE_SLOW_STATEMENT_MS", 500.0)
POOL_PUBLISH_INTERVAL_S = envfloat("POOL_PUBLISH_INTERVAL_S", 10.0)
# (warning, critical) per alert, from the seeds; editable per target on its alerts page.
ALERT_DEFAULTS = {
    "pool_utilisation_pct": (70.0, 90.0),
    "checkout_wait_ms": (100.0, 1000.0),
    "overflow_pct": (50.0, 80.0),
    "failed_checkouts_per_min": (1.0, 10.0),
    "connections_pct": (80.0, 95.0),
    "replica_lag_s": (10.0, 60.0),
    "replica_lag_bytes": (100e6, 1e9),
    "long_running_query_s": (60.0, 300.0),
    "xid_wraparound_pct": (50.0, 75.0),  # age(datfrozenxid) of the oldest database, % of 2^31
    "sequence_used_pct": (80.0, 95.0),  # the fullest sequence, % of its (or its column's) limit
}
CELERY_BEAT_SCHEDULE["monitors-sample-fast"] = {
    "task": "monitors.sample_fast",
    "schedule": MONITOR_FAST_INTERVAL_S,
    "options": {"expires": MONITOR_FAST_INTERVAL_S},
}
CELERY_BEAT_SCHEDULE["monitors-sample-statements"] = {
    "task": "monitors.sample_statements",
    "schedule": MONITOR_STATEMENTS_INTERVAL_S,
    "options": {"expires": MONITOR_STATEMENTS_INTERVAL_S},
}
CELERY_BEAT_SCHEDULE["monitors-sample-checks"] = {
    "task": "monitors.sample_checks",
    "schedule": MONITOR_CHECKS_INTERVAL_S,
    "options": {"expires": MONITOR_CHECKS_INTERVAL_S},
}
CELERY_BEAT_SCHEDULE["monitors-cleanup"] = {"task": "monitors.cleanup", "schedule": 600.0}
POOL_PUBLISHER_ENABLED = envbool("POOL_PUBLISHER_ENABLED", "true")

# Tenants (tenants/) ---------------------------------------------------------------------------
# The managed application: an Alembic project (its revisions migrate every tenant) and the
# SQLAlchemy MetaData ("module:attribute") its tenants' schemas are compared with for drift.
TENANT_ALEMBIC_SCRIPT_LOCATION = env("TENANT_ALEMBIC_SCRIPT_LOCATION", str(BASE_DIR / "tenants" / "app_schema"))
TENANT_ALEMBIC_METADATA = env("TENANT_ALEMBIC_METADATA", "tenants.app_schema.metadata:metadata")
# Schema and database names are this prefix + the tenant's slug (never a bare slug, so a tenant
# called "demo" cannot collide with an existing database); shared (RLS) tenants live in one schema
# and the application reaches them through a role that owns nothing, so RLS always applies.
TENANT_NAME_PREFIX = env("TENANT_NAME_PREFIX", "tenant_")
TENANT_SHARED_SCHEMA = env("TENANT_SHARED_SCHEMA", "tenant_shared")
TENANT_APP_ROLE = env("TENANT_APP_ROLE", "fleet_app")
# Tenants worked on at once by one onboarding or migration job (each holds one pooled connection).
TENANT_PARALLELISM = envint("TENANT_PARALLELISM", 4)
TENANT_MIGRATE_STATEMENT_TIMEOUT_MS = envint("TENANT_MIGRATE_STATEMENT_TIMEOUT_MS", 60000)
# Offboarding keeps a dump of every tenant before dropping it.
TENANT_DUMP_DIR = env("TENANT_DUMP_DIR", str(BASE_DIR / ".fleet" / "dumps"))
TENANT_PG_DUMP = env("TENANT_PG_DUMP", "/usr/lib/postgresql/15/bin/pg_dump")
TENANT_HEALTH_INTERVAL_S = envfloat("TENANT_HEALTH_INTERVAL_S", 300.0)
TENANT_HEALTH_KEEP = envint("TENANT_HEALTH_KEEP", 50)  # snapshots kept per tenant
# Tenants one onboarding takes at most: rows of a CSV upload, lines typed in, or both.
TENANT_CSV_MAX_ROWS = envint("TENANT_CSV_MAX_ROWS", 5000)
CELERY_BEAT_SCHEDULE["tenants-refresh-health"] = {
    "task": "tenants.refresh_health",
    "schedule": TENANT_HEALTH_INTERVAL_S,
}
EXPLAIN_STATEMENT_TIMEOUT_MS = envint("EXPLAIN_STATEMENT_TIMEOUT_MS", 10000)

# Backups and restore drills (monitors/drills/, console/pg/backup.py).
BACKUP_DIR = env("BACKUP_DIR", str(BASE_DIR / ".fleet" / "backups"))
# Where a backup policy may write (its destination must lie under one of them): BACKUP_DIR unless set.
BACKUP_ROOTS = [r for r in env("BACKUP_ROOTS", BACKUP_DIR).split(",") if r]
BACKUP_PG_DUMP = env("BACKUP_PG_DUMP", "/usr/lib/postgresql/15/bin/pg_dump")
BACKUP_PG_RESTORE = env("BACKUP_PG_RESTORE", "/usr/lib/postgresql/15/bin/pg_restore")
BACKUP_PG_AMCHECK = env("BACKUP_PG_AMCHECK", "/usr/lib/postgresql/15/bin/pg_amcheck")
BACKUP_JOBS = envint("BACKUP_JOBS", 2)  # parallel jobs of pg_dump, pg_restore and pg_amcheck
BACKUP_STATEMENT_TIMEOUT_MS = envint("BACKUP_STATEMENT_TIMEOUT_MS", 3600000)  # exact counts of big tables
BACKUP_TOOL_TIMEOUT_S = envfloat("BACKUP_TOOL_TIMEOUT_S", 6 * 3600.0)
DRILL_SWEEP_INTERVAL_S = envfloat("DRILL_SWEEP_INTERVAL_S", 300.0)
BACKUP_SCHEDULE_INTERVAL_S = envfloat("BACKUP_SCHEDULE_INTERVAL_S", 60.0)
CELERY_BEAT_SCHEDULE["monitors-schedule-backups"] = {
    "task": "monitors.schedule_backups",
    "schedule": BACKUP_SCHEDULE_INTERVAL_S,
    "options": {"expires": BACKUP_SCHEDULE_INTERVAL_S},
}
CELERY_BEAT_SCHEDULE["monitors-sweep-drills"] = {
    "task": "monitors.sweep_drills",
    "schedule": DRILL_SWEEP_INTERVAL_S,
    "options": {"expires": DRILL_SWEEP_INTERVAL_S},
}

# Physical backups and PITR drills with pgBackRest (console/pg/pgbackrest.py, monitors/drills/pitr.py).
PGBACKREST_BIN = env("PGBACKREST_BIN", "pgbackrest")
PGBACKREST_TIMEOUT_S = envfloat("PGBACKREST_TIMEOUT_S", 6 * 3600.0)  # a backup or a restore
PGBACKREST_INFO_TIMEOUT_S = envfloat("PGBACKREST_INFO_TIMEOUT_S", 30.0)
# pgBackRest and the drills' PostgreSQL run as this user when the worker runs as root.
PITR_SERVICE_USER = env("PITR_SERVICE_USER", "postgres")
PITR_SUPERUSER = env("PITR_SUPERUSER", "postgres")  # the restored copy's bootstrap superuser
# The pgBackRest configuration files a physical backup policy may name (pgBackRest's own places,
# and the local fleet's PGBACKREST_CONFIG), and the system users it may run as (never root).
PITR_PGBACKREST_CONFIGS = [c.strip() for c in env(
    "PITR_PGBACKREST_CONFIGS",
    ",".join(filter(None, ["/etc/pgbackrest/pgbackrest.conf", "/etc/pgbackrest.conf", env("PGBACKREST_CONFIG")])),
).split(",") if c.strip()]
PITR_RUN_AS_USERS = [u.strip() for u in env("PITR_RUN_AS_USERS", PITR_SERVICE_USER).split(",") if u.strip()]
PITR_PG_BIN = env("PITR_PG_BIN", "/usr/lib/postgresql/15/bin")
PITR_DRILL_DIR = env("PITR_DRILL_DIR", "/var/tmp/fleet-console-pitr")
PITR_RESTORE_PROCESSES = envint("PITR_RESTORE_PROCESSES", 2)
PITR_DRILL_DELAY_S = envfloat("PITR_DRILL_DELAY_S", 300.0)  # default target: now minus this
PITR_RECOVERY_TIMEOUT_S = envfloat("PITR_RECOVERY_TIMEOUT_S", 6 * 3600.0)
PITR_SWEEP_INTERVAL_S = envfloat("PITR_SWEEP_INTERVAL_S", 300.0)
CELERY_BEAT_SCHEDULE["monitors-sweep-pitr-drills"] = {
    "task": "monitors.sweep_pitr_drills",
    "schedule": PITR_SWEEP_INTERVAL_S,
    "options": {"expires": PITR_SWEEP_INTERVAL_S},
}
CELERY_BEAT_SCHEDULE["monitors-schedule-physical-backups"] = {
    "task": "monitors.schedule_physical_backups",
    "schedule": BACKUP_SCHEDULE_INTERVAL_S,
    "options": {"expires": BACKUP_SCHEDULE_INTERVAL_S},
}

# Lock-safe DDL (console/pg/ddl.py): each statement waits at most DDL_LOCK_TIMEOUT_MS for its
# lock, so application queries never queue behind it for longer; retried on 55P03 with backoff.
DDL_LOCK_TIMEOUT_MS = envint("DDL_LOCK_TIMEOUT_MS", 1000)
DDL_LOCK_RETRIES = envint("DDL_LOCK_RETRIES", 5)
DDL_LOCK_BACKOFF_S = envfloat("DDL_LOCK_BACKOFF_S", 0.5)  # first sleep; doubles, jittered, at most 10 s
DDL_STATEMENT_TIMEOUT_MS = envint("DDL_STATEMENT_TIMEOUT_MS", 3600000)  # VALIDATE and CONCURRENTLY scan
# Backfills (console/pg/backfill.py): defaults of the "Run a backfill" form.
BACKFILL_BATCH_TARGET_MS = envint("BACKFILL_BATCH_TARGET_MS", 200)
BACKFILL_BATCH_INITIAL_ROWS = envint("BACKFILL_BATCH_INITIAL_ROWS", 1000)
BACKFILL_BATCH_MAX_ROWS = envint("BACKFILL_BATCH_MAX_ROWS", 100000)
BACKFILL_MAX_REPLICA_LAG_S = envfloat("BACKFILL_MAX_REPLICA_LAG_S", 5.0)
BACKFILL_MAX_LOCK_WAITERS = envint("BACKFILL_MAX_LOCK_WAITERS", 2)
BACKFILL_THROTTLE_RETRY_S = envfloat("BACKFILL_THROTTLE_RETRY_S", 5.0)
# Replica lag, vacuum and lock queues on the table are read at most this often (the last batch's
# own waiters after every batch).
BACKFILL_HEALTH_INTERVAL_S = envfloat("BACKFILL_HEALTH_INTERVAL_S", 1.0)
# The console records a backfill's progress (rows, rate, where to resume; the target's own progress
# row moves in every batch's transaction) and looks for a pause or cancel this often. 0: every batch.
BACKFILL_PROGRESS_INTERVAL_S = envfloat("BACKFILL_PROGRESS_INTERVAL_S", 0.5)
# A batch whose row locks held sessions up for more than this share of its time, added up over
# them, makes the next batch half as big.
BACKFILL_LOCK_WAIT_SHARE = envfloat("BACKFILL_LOCK_WAIT_SHARE", 0.05)
# After each batch the backfill rests this fraction of the batch's time: the application's writers
# get the table (and the server) to themselves that long. 0 (the default) runs the batches back to
# back: what keeps writers' latency is the batch size, halved when sessions wait on a batch's locks.
BACKFILL_REST_RATIO = envfloat("BACKFILL_REST_RATIO", 0.0)
BACKFILL_STATEMENT_TIMEOUT_MS = envint("BACKFILL_STATEMENT_TIMEOUT_MS", 30000)
