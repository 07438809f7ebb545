"""Promotion: validate, scan and persist a kept upload, away from the request.

``promote()`` is the service; the ``promote_upload`` Celery task is a few lines
around it that retries transient errors. Whatever happens, the upload ends
persisted, discarded (refused, or given up) or quarantined: never half stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.core.files.storage import default_storage, storages

from . import lifecycle
from .conf import conf
from .exceptions import UploadRejected, UploadStateError
from .models import State, TempUpload, Transitions
from .scanners import Antivirus, ScannerError, get_scanner, scan
from .validators import load, reject, validate_file

logger = logging.getLogger("django_tempstore")


class TransientError(Exception):
    """A step failed in a way a later retry may not (scanner down, storage error)."""


@dataclass
class Promotion:
    """What ``promote()`` did: the upload's final ``state``, and ``name`` if persisted."""

    upload_id: str
    state: str
    name: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _result(upload: TempUpload) -> Promotion:
    return Promotion(str(upload.pk), upload.state, upload.persisted_name, upload.reason)


def promote(
    upload_id: Any,
    name: str,
    *,
    storage: str | None = None,
    validators: Sequence[Any] | None = None,
) -> Promotion:
    """Validate, scan and persist the kept upload ``upload_id`` as ``name``.

    ``storage`` is a ``STORAGES`` alias (default: ``default_storage``);
    ``validators`` defaults to ``TEMPSTORE_VALIDATORS``; the scan uses
    ``TEMPSTORE_SCANNER`` when set. A refused file is discarded (reason
    "rejected: ..."), an infected one quarantined. Raise ``TransientError``
    when a retry may succeed; the upload then stays kept. An upload that is no
    longer pending (a redelivered task) is left as it is.
    """
    upload = TempUpload.objects.using(conf.DATABASE).filter(pk=upload_id).first()
    if upload is None:
        return Promotion(str(upload_id), "missing", reason="no such upload")
    if upload.state not in Transitions.PERSIST.sources:
        return _result(upload)

    chosen = load(conf.VALIDATORS if validators is None else validators)
    try:
        validate_file(upload, chosen)
    except UploadRejected as exc:
        if exc.status == 503:  # "Try again later", e.g. the Antivirus validator's scanner.
            raise TransientError(exc.message) from exc
        reject(upload, exc, state=State.DISCARDED)
        return _result(upload)
    except FileNotFoundError:
        lifecycle.discard(upload, "promotion failed: the temp file is gone")
        return _result(upload)

    scanner = get_scanner()
    if scanner is not None and not any(isinstance(v, Antivirus) for v in chosen):
        try:
            if not scan(upload, scanner).clean:
                return _result(upload)
        except ScannerError as exc:
            raise TransientError(str(exc)) from exc

    target = storages[storage] if storage else default_storage
    try:
        lifecycle.persist(upload, name, target)
    except UploadStateError:
        raise  # Closed meanwhile: retrying cannot help.
    except Exception as exc:
        # Remote storages fail with their own exceptions (botocore's ClientError), not OSError.
        raise TransientError(f"could not store the file: {exc}") from exc
    return _result(upload)


def give_up(upload_id: Any, reason: str) -> Promotion:
    """Discard an upload whose promotion failed for good; report its final state."""
    upload = TempUpload.objects.using(conf.DATABASE).filter(pk=upload_id).first()
    if upload is None:
        return Promotion(str(upload_id), "missing", reason="no such upload")
    lifecycle.discard(upload, f"promotion failed: {reason}"[:2000])
    upload.refresh_from_db(using=conf.DATABASE)
    return _result(upload)
