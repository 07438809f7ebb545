"""The Celery app of the test project, as a project would write it (``proj/celery.py``).

A worker or beat started by a test (see ``tests/celery_utils.py``) is told its
broker, default queue and beat schedule through environment variables, so that
tests running at the same time never share a queue.
"""

from __future__ import annotations

import json
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
if os.environ.get("TEMPSTORE_TEST_BROKER"):
    app.conf.broker_url = os.environ["TEMPSTORE_TEST_BROKER"]
if os.environ.get("TEMPSTORE_TEST_QUEUE"):
    app.conf.task_default_queue = os.environ["TEMPSTORE_TEST_QUEUE"]
if os.environ.get("TEMPSTORE_TEST_BEAT_SCHEDULE"):
    app.conf.beat_schedule = json.loads(os.environ["TEMPSTORE_TEST_BEAT_SCHEDULE"])
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_hijack_root_logger = False
app.autodiscover_tasks()
