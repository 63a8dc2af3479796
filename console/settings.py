"""Settings for Fleet Console. Every value comes from the environment, with defaults that work
for the local fleet that `make up` starts."""

import os
import warnings
from pathlib import Path

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
    "console",
    "tenants",
    "migrations_ui",
    "monitors",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
]

ROOT_URLCONF = "console.urls"
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
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A message unacknowledged this long is handed out again; the job claim makes that harmless.
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT_S", 3600),
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

# Target engines: defaults for every target, overridable per target.
TARGET_CONNECT_TIMEOUT_S = envint("TARGET_CONNECT_TIMEOUT_S", 3)
TARGET_STATEMENT_TIMEOUT_MS = envint("TARGET_STATEMENT_TIMEOUT_MS", 5000)
TARGET_LOCK_TIMEOUT_MS = envint("TARGET_LOCK_TIMEOUT_MS", 2000)
TARGET_PROBE_CONCURRENCY = envint("TARGET_PROBE_CONCURRENCY", 8)
ENGINE_APPLICATION_NAME = env("ENGINE_APPLICATION_NAME", "fleet-console")

# Demo fleet, registered by `manage.py bootstrap_demo`.
DEMO_PASSWORD_DEFAULT = "fleet-demo-2026"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("CONSOLE_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
