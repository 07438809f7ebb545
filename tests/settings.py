"""Settings for the test suite: SQLite by default, PostgreSQL with TEMPSTORE_TEST_DB=postgres."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "tests.urls"
WORKDIR = Path(os.environ.get("TEMPSTORE_TEST_WORKDIR") or tempfile.mkdtemp(prefix="tstest-"))

if os.environ.get("TEMPSTORE_TEST_DB", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "NAME": os.environ.get("PGDATABASE", "test"),
            "TEST": {"NAME": os.environ.get("TEMPSTORE_TEST_DB_NAME", "test_tempstore")},
        }
    }
    # W004's advice: a second alias of the same database, outside any request's transaction.
    DATABASES["tempstore"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(WORKDIR / "db.sqlite3"),
            # A file, so that servers started by the tests share the test database.
            "TEST": {"NAME": str(WORKDIR / "test.sqlite3")},
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }

# A server or worker started by a test uses the test's database and folders.
if os.environ.get("TEMPSTORE_SERVER_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["TEMPSTORE_SERVER_DB_NAME"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_tempstore",
    "tests",
]
MIDDLEWARE = [
    "django_tempstore.middleware.TempStoreMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
FILE_UPLOAD_HANDLERS = ["django_tempstore.handlers.TempStoreUploadHandler"]
TEMPSTORE_DIR = Path(os.environ.get("TEMPSTORE_DIR") or WORKDIR / "tempstore")
# Every file tracked from its first byte: most tests check the rows and temp files of small
# uploads. tests/test_memory_uploads.py turns the in-memory path back on.
TEMPSTORE_MAX_MEMORY_SIZE = 0
MEDIA_ROOT = Path(os.environ.get("TEMPSTORE_MEDIA_ROOT") or WORKDIR / "media")
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# PBKDF2 takes ~0.3s per user (admin_client makes one per test): tests need no strength.
# PBKDF2 stays second, to check passwords that the example project's processes hash.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
CELERY_BROKER_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "ERROR"},
        "django_tempstore": {"handlers": ["console"], "level": "WARNING"},
    },
}
# A Celery worker started by a test may be told to sweep when it is ready.
TEMPSTORE_SWEEP_ON_WORKER_START = os.environ.get("TEMPSTORE_TEST_SWEEP_ON_WORKER_START") == "1"
# A server started by a test may be given a quota.
if os.environ.get("TEMPSTORE_TEST_QUOTA"):
    TEMPSTORE_QUOTA = int(os.environ["TEMPSTORE_TEST_QUOTA"])

# A server or worker started by a test may be given extra settings as JSON.
globals().update(json.loads(os.environ.get("TEMPSTORE_TEST_SETTINGS") or "{}"))
