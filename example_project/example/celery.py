"""The Celery app of the example site: the documented way to sweep with Celery beat.

Run from ``example_project/`` with Redis::

    REDIS_URL=redis://127.0.0.1:6379/0 celery -A example worker --loglevel INFO
    REDIS_URL=redis://127.0.0.1:6379/0 celery -A example beat --loglevel INFO

The schedule is ``CELERY_BEAT_SCHEDULE`` in ``example/settings.py``; django-tempstore's
task is a ``shared_task``, so it binds to this app without importing it.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

app = Celery("example")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
