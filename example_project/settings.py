"""Settings of the example project: a Django project that installed tasker-django.

SQLite and django-q2's ORM broker by default; PostgreSQL when ``DATABASE_URL`` is
set and Redis when ``REDIS_URL`` is set.
"""

import os
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "example_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "django_q",
    "tasker_django",
    "example_project.payments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "/static/"


def _database() -> dict:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR.parent / "demo.sqlite3")),
            # WAL lets workers read while one writes; IMMEDIATE transactions take the
            # write lock up front instead of failing with "database is locked".
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    parts = urlparse(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        # Keep connections: at 0 every django-q2 task opens a new one.
        "CONN_MAX_AGE": 60,
    }


DATABASES = {"default": _database()}

# The seed's payment_workflow asks for a Redis cache with a one-hour TTL
# (performance.caching; check W014 compares). tasker caches nothing itself, but
# django-q2 keeps cluster stats in the default cache: Redis only when REDIS_URL is set
# (then W014 is satisfied), else memory, so the default demo needs nothing running.
CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            "KEY_PREFIX": "example_project",
            "TIMEOUT": 3600,
        }
        if os.environ.get("REDIS_URL")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "TIMEOUT": 3600}
    )
}

# django-q2 runs the step handlers. The ORM broker needs nothing else running;
# set REDIS_URL to use Redis instead.
Q_CLUSTER = {
    "name": "tasker",
    "workers": 2,
    "timeout": 600,  # above the longest step timeout + TASKER EAGER_MAX_SECONDS
    "retry": 720,  # above timeout, or running kicks are delivered twice
    "poll": 0.05,  # ORM broker: seconds between polls of an empty queue
    "save_limit": 0,
    "ack_failures": True,
    "catch_up": False,
}
if os.environ.get("REDIS_URL"):
    redis = urlparse(os.environ["REDIS_URL"])
    Q_CLUSTER["redis"] = {
        "host": redis.hostname or "127.0.0.1",
        "port": redis.port or 6379,
        "db": int((redis.path or "/0").lstrip("/") or 0),
    }
else:
    Q_CLUSTER["orm"] = "default"

# The tasker API (mounted at /tasker/) uses these authentication classes.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "tasker-django example project API",
    "VERSION": "0.1.0",
}

TASKER = {
    # Attempts of a step (the first included) when a template names none.
    "DEFAULT_MAX_ATTEMPTS": 3,
    # Seconds a step may run when its template names no timeout_seconds.
    "DEFAULT_STEP_TIMEOUT": 300,
    # A running step whose worker stops renewing its lease for this long is retried.
    "LEASE_SECONDS": 30,
    # Templates found on demand as {namespace}/{name}/{version}.yaml.
    "TEMPLATE_DIRS": [BASE_DIR / "task_templates"],
    # Environment overrides applied when templates are loaded.
    "ENVIRONMENT": os.environ.get("TASKER_ENVIRONMENT", "development"),
    # What templates' error_handling.escalation_rules call (the seed's payment_workflow
    # names these three); each function gets the escalation event, a dict.
    "ESCALATION_ACTIONS": {
        name: f"example_project.payments.escalations.{name}"
        for name in ("escalate_to_support", "escalate_to_security", "escalate_to_manual_review")
    },
    # The external services handlers get with self.service(name), and the mocks the
    # seed's payment_workflow names in testing.mock_services (tasker_test_scenarios).
    "SERVICES": {
        "payment_gateway": "example_project.payments.services.SimulatedGateway",
        "notification_service": "example_project.payments.services.SimulatedNotifier",
        "analytics_service": "example_project.payments.services.SimulatedAnalytics",
    },
    "MOCK_SERVICES": {
        "mock_stripe": "example_project.payments.mocks.MockStripe",
        "mock_email": "example_project.payments.mocks.MockEmail",
        "mock_analytics": "example_project.payments.mocks.MockAnalytics",
    },
    # Keys for templates with security.encryption (the seed's payment_workflow): base64
    # of 32 random bytes, newest first. The fallback key is for the demo database only;
    # set TASKER_ENCRYPTION_KEY anywhere else (python -c "import base64, os;
    # print(base64.b64encode(os.urandom(32)).decode())").
    "ENCRYPTION_KEYS": [
        {
            "id": "demo",
            "key": os.environ.get(
                "TASKER_ENCRYPTION_KEY", "llKsKY9sYc1KTwscw6cRVKO5zqyqP3RYLdB8ZFBhdn0="
            ),
            "created": "2026-11-26",
        }
    ],
    # Sinks the seed's payment_workflow routes events to (events.*.publish_to); each
    # logs on payments.sinks.<name>. audit_log and logging are built in.
    "EVENT_SINKS": {
        "monitoring": "example_project.payments.sinks.Monitoring",
        "analytics": "example_project.payments.sinks.Analytics",
        "alerting": "example_project.payments.sinks.Alerting",
        "customer_updates": "example_project.payments.sinks.CustomerUpdates",
        "fraud_detection": "example_project.payments.sinks.FraudDetection",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "tasker_django": {
            "handlers": ["console"],
            "level": os.environ.get("TASKER_LOG", "WARNING"),
        },
        # The example event sinks (payments/sinks.py): one line per delivered event.
        "payments.sinks": {
            "handlers": ["console"],
            "level": os.environ.get("PAYMENTS_SINKS_LOG", "INFO"),
        },
    },
}
