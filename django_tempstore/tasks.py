"""Celery tasks and routing helpers; each task is a thin wrapper around a service.

Celery is optional for the app: only a Celery worker (or code that queues a task)
imports this module.

Each web host with its own ``TEMPSTORE_DIR`` needs its own sweep: give each host's
worker a queue named by ``host_queue()`` (``-Q celery,tempstore.<host>``) and
build the beat schedule with ``beat_schedule(hosts)``, one entry per host.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.db import transaction

from . import lifecycle
from .conf import conf
from .files import TempStoreUploadedFile
from .models import TempUpload
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


@shared_task(bind=True, name="django_tempstore.promote_upload", acks_late=True)
def promote_upload(
    self: Any,
    upload_id: str,
    name: str,
    storage: str | None = None,
    validators: list[Any] | None = None,
) -> dict[str, str]:
    """Validate, scan and persist a kept upload; retry transient errors.

    After ``TEMPSTORE_PROMOTE_RETRIES`` retries, or on an unexpected error,
    the upload is discarded: it never stays half stored.
    """
    from . import promotion
    from .conf import conf

    try:
        return promotion.promote(upload_id, name, storage=storage, validators=validators).as_dict()
    except promotion.TransientError as exc:
        retries = self.request.retries
        if retries >= conf.PROMOTE_RETRIES:
            return promotion.give_up(upload_id, str(exc)).as_dict()
        countdown = conf.PROMOTE_RETRY_DELAY * 2**retries
        raise self.retry(exc=exc, countdown=countdown, max_retries=conf.PROMOTE_RETRIES) from exc
    except Exception as exc:
        promotion.give_up(upload_id, f"{type(exc).__name__}: {exc}")
        raise


def promote_later(
    file: TempStoreUploadedFile | TempUpload,
    name: str,
    *,
    storage: str | None = None,
    validators: Sequence[str] | None = None,
    ttl: float | None = None,
) -> str:
    """Keep ``file`` and queue ``promote_upload`` for it once the transaction commits.

    Call it from a view; ``validators`` must be dotted paths (or dicts) since
    they travel through the broker. Return the upload's id.
    """
    if isinstance(file, TempStoreUploadedFile):
        file.keep(ttl)  # A file held in memory spills to a tracked temp file first.
        upload = file.temp_upload
    else:
        upload = file
        lifecycle.keep(upload, ttl)
    upload_id = str(upload.pk)
    kwargs: dict[str, Any] = {"storage": storage, "validators": validators}
    transaction.on_commit(
        lambda: promote_upload.delay(upload_id, name, **kwargs), using=conf.DATABASE
    )
    return upload_id
