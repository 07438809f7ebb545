"""Celery tasks and routing helpers. Celery is optional: only a Celery worker imports this.

Each web host with its own ``TEMPSTORE_DIR`` needs its own sweep: give each host's
worker a queue named by ``host_queue()`` (``-Q celery,tempstore.<host>``) and
build the beat schedule with ``beat_schedule(hosts)``, one entry per host.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from .conf import conf
from .sweep import sweep

logger = logging.getLogger("django_tempstore")

TASK_NAME = "django_tempstore.tasks.sweep_temp_uploads"
QUEUE_PREFIX = "tempstore."


@shared_task(name=TASK_NAME, ignore_result=True)
def sweep_temp_uploads(*, startup: bool = False) -> dict[str, Any]:
    """Run the sweep once; return its report as a dict."""
    return sweep(startup=startup, trigger="celery").as_dict()


def host_queue(host: str | None = None) -> str:
    """The queue that reaches the worker of ``host`` (default: this host)."""
    return QUEUE_PREFIX + (host or conf.HOSTNAME)


def beat_schedule(
    hosts: Iterable[str] | None = None,
    *,
    every: float | timedelta = 300,
    name: str = "tempstore-sweep",
) -> dict[str, dict[str, Any]]:
    """Celery beat entries that run the sweep every ``every`` seconds.

    With ``hosts`` (each web host's ``TEMPSTORE_HOSTNAME``), one entry per host,
    routed to ``host_queue(host)``: each host sweeps its own local temp dir.
    Without, one entry on the default queue (``TEMPSTORE_SHARED_DIR = True``).
    Merge the result into ``CELERY_BEAT_SCHEDULE``.
    """
    schedule = every.total_seconds() if isinstance(every, timedelta) else float(every)
    if hosts is None:
        return {name: {"task": TASK_NAME, "schedule": schedule}}
    return {
        f"{name}-{host}": {
            "task": TASK_NAME,
            "schedule": schedule,
            "options": {"queue": host_queue(host), "expires": schedule},
        }
        for host in hosts
    }


@worker_ready.connect(dispatch_uid="django_tempstore.sweep_on_worker_start")
def sweep_on_worker_start(sender: Any = None, **kwargs: Any) -> None:
    """Run a startup sweep when a worker is ready, if TEMPSTORE_SWEEP_ON_WORKER_START."""
    if not conf.SWEEP_ON_WORKER_START:
        return
    try:
        report = sweep(startup=True, trigger="worker_start")
    except Exception:
        logger.exception("django-tempstore's startup sweep failed")
    else:
        logger.info("django-tempstore startup sweep: %s", report.summary())
