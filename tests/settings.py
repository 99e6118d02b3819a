"""Settings for the test suite. ``DATABASE_URL`` picks PostgreSQL; SQLite otherwise."""

import os
from urllib.parse import urlparse

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
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
    "tests.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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
            "NAME": os.environ.get("TASKER_TEST_SQLITE", "tasker_test.sqlite3"),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            "TEST": {"NAME": os.environ.get("TASKER_TEST_SQLITE", "tasker_test.sqlite3")},
        }
    parts = urlparse(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/") or "test",
        "USER": parts.username or "postgres",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 5432),
        "CONN_MAX_AGE": 60,
        # Parallel runs on one machine need different test databases.
        "TEST": {"NAME": os.environ.get("TASKER_TEST_DB_NAME")},
    }


DATABASES = {"default": _database()}

Q_CLUSTER = {
    "name": "tasker_tests",
    "workers": 2,
    "timeout": 120,
    "retry": 180,
    "orm": "default",
    "poll": 0.05,
    "save_limit": 0,
    "ack_failures": True,
    "catch_up": False,
    "log_level": "WARNING",
}

TASKER: dict = {
    # Short timers so recovery tests run in seconds.
    "LEASE_SECONDS": float(os.environ.get("TASKER_TEST_LEASE", "3")),
    "REKICK_AFTER_SECONDS": 3,
    "SWEEP_INTERVAL": 0.2,
    "DEFAULT_STEP_TIMEOUT": 60,
    # Real-worker tests of TASKER["PG_SYNCHRONOUS_COMMIT"] start workers with "0".
    "PG_SYNCHRONOUS_COMMIT": os.environ.get("TASKER_TEST_PG_SYNCHRONOUS_COMMIT", "1") != "0",
    # For templates with security.encryption (the seed's payment_workflow).
    "ENCRYPTION_KEYS": [{"id": "test", "key": "jNbKGY0XuAUIn8rlia60J0sXsuYuKl2WeVNMRumRvFA="}],
    # The example project's mocks, named by the seed payment_workflow's testing section.
    "MOCK_SERVICES": {
        name: f"example_project.payments.mocks.{cls}"
        for name, cls in (
            ("mock_stripe", "MockStripe"),
            ("mock_email", "MockEmail"),
            ("mock_analytics", "MockAnalytics"),
        )
    },
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Basic first: an anonymous request gets 401 with a WWW-Authenticate challenge.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "WARNING"},
}
