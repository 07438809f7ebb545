"""Settings of the example site.

By default: SQLite, no Redis, temp files swept at startup by ``manage.py demo``
(and by ``manage.py sweep_temp`` whenever you like). With ``REDIS_URL`` set,
Celery beat sweeps every few minutes (see ``example/celery.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
#: Where the database, the uploads and the temp files go (the project folder by default).
DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR") or BASE_DIR)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", *os.environ.get("ALLOWED_HOSTS", "").split()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_tempstore",
    "example",
]
MIDDLEWARE = [
    # Above CsrfViewMiddleware, which may be the first to read an upload's body.
    "django_tempstore.middleware.TempStoreMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "example.resumable.tus_client",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
#: tus-js-client, when ``npm ci`` ran at the repository root; without it the page posts the form.
TUS_JS_CLIENT_DIR = Path(
    os.environ.get("EXAMPLE_TUS_JS_DIR")
    or BASE_DIR.parent / "node_modules" / "tus-js-client" / "dist"
)
EXAMPLE_TUS_CLIENT = (TUS_JS_CLIENT_DIR / "tus.min.js").is_file()
STATICFILES_DIRS = [("tus-js-client", TUS_JS_CLIENT_DIR)] if EXAMPLE_TUS_CLIENT else []
MEDIA_URL = "media/"
MEDIA_ROOT = DATA_DIR / "media"

# django-tempstore
FILE_UPLOAD_HANDLERS = ["django_tempstore.handlers.TempStoreUploadHandler"]
TEMPSTORE_DIR = DATA_DIR / "tmp_uploads"
#: The one limit per image, named in the page: refused with 413 while streaming.
EXAMPLE_MAX_IMAGE_SIZE = 8 * 1024 * 1024
TEMPSTORE_MAX_FILE_SIZE = EXAMPLE_MAX_IMAGE_SIZE
TEMPSTORE_QUOTA = 512 * 1024 * 1024  # all pending temp files together (507 beyond)
TEMPSTORE_KEEP_TTL = 3600
#: Without JavaScript, a 413 or 507 re-renders the form with the refusal (status kept).
TEMPSTORE_REFUSAL_VIEW = "example.views.refused"

# With Redis, Celery beat runs the sweep (``celery -A example worker`` plus ``... beat``).
# The task is named by string, so this file imports without Celery installed.
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_IGNORE_RESULT = True
    CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "celery")
    TEMPSTORE_SWEEP_ON_WORKER_START = True  # a startup sweep when the worker is ready
    CELERY_BEAT_SCHEDULE = {
        "sweep-temp-uploads": {
            "task": "django_tempstore.tasks.sweep_temp_uploads",
            "schedule": float(os.environ.get("EXAMPLE_SWEEP_EVERY", 300)),
        },
    }
