"""Celery tasks: each one is a thin wrapper around a service.

Celery is optional: this module imports without it, and the tasks are plain
functions then (``delay()`` needs the ``celery`` extra).
"""

from __future__ import annotations

from typing import Any

try:
    from celery import shared_task
except ImportError:  # The "celery" extra is not installed.

    def shared_task(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda func: func


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
