"""Settings of the bench server; the runner picks the variant through environment variables.

``BENCH_DB``: ``sqlite`` (``BENCH_SQLITE_PATH``) or ``postgres`` (``BENCH_PG_NAME``).
``BENCH_HANDLERS``: ``tempstore``, ``stock-temp`` (``TemporaryFileUploadHandler`` alone) or
``stock-pair`` (Django's default ``MemoryFileUploadHandler`` + ``TemporaryFileUploadHandler``).
``BENCH_DIGEST``: ``sha256`` or empty for no digest. ``BENCH_DIR``: the work folder.
"""

from __future__ import annotations

import os
from pathlib import Path

WORK = Path(os.environ.get("BENCH_DIR", "/tmp/tsbench"))
SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "bench.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_tempstore"]
MIDDLEWARE = ["django_tempstore.middleware.TempStoreMiddleware"]

if os.environ.get("BENCH_DB", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "NAME": os.environ.get("BENCH_PG_NAME", "bench_tempstore"),
            # Persistent connections, as in production; see bench/README.md.
            "CONN_MAX_AGE": 600,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE_PATH", str(WORK / "bench.sqlite3")),
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
            "CONN_MAX_AGE": 600,
        }
    }

# The default rollback journal is measured on purpose (bench/README.md): W008 says so at each start.
SILENCED_SYSTEM_CHECKS = ["django_tempstore.W008"]

# BENCH_DURABILITY=wal: SQLite in WAL mode, as check W008 asks; still synchronous=FULL
# (each commit flushed, durable).
if os.environ.get("BENCH_DURABILITY") == "wal" and DATABASES["default"]["ENGINE"].endswith(
    "sqlite3"
):
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL;"

# BENCH_DURABILITY=relaxed: commits without a disk flush, as on the bookkeeping alias
# bench/README.md recommends (a lost row is recovered by the sweep's orphan rule).
if os.environ.get("BENCH_DURABILITY") == "relaxed":
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        DATABASES["default"]["OPTIONS"]["init_command"] = (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
        )
    else:
        DATABASES["default"]["OPTIONS"] = {"options": "-c synchronous_commit=off"}

_HANDLERS = {
    "tempstore": ["django_tempstore.handlers.TempStoreUploadHandler"],
    "memory+tempstore": [
        "django.core.files.uploadhandler.MemoryFileUploadHandler",
        "django_tempstore.handlers.TempStoreUploadHandler",
    ],
    "stock-temp": ["django.core.files.uploadhandler.TemporaryFileUploadHandler"],
    "stock-pair": [
        "django.core.files.uploadhandler.MemoryFileUploadHandler",
        "django.core.files.uploadhandler.TemporaryFileUploadHandler",
    ],
}
FILE_UPLOAD_HANDLERS = _HANDLERS[os.environ.get("BENCH_HANDLERS", "tempstore")]
TEMPSTORE_DIR = WORK / "tempstore"
TEMPSTORE_DIGEST = os.environ.get("BENCH_DIGEST", "sha256") or None
if os.environ.get("BENCH_CHUNK_SIZE"):
    TEMPSTORE_CHUNK_SIZE = int(os.environ["BENCH_CHUNK_SIZE"])
# The stock handlers write to their own folder on the same filesystem.
FILE_UPLOAD_TEMP_DIR = str(WORK / "stock")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "ERROR"}},
}
