"""Typed access to the ``TEMPSTORE_*`` settings, read at use time."""

from __future__ import annotations

import os
import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings


def _seconds(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=float(value))


class Settings:
    """One property per setting, so ``override_settings`` just works."""

    @property
    def DIR(self) -> Path:
        value = getattr(settings, "TEMPSTORE_DIR", None)
        if value is None:
            return Path(tempfile.gettempdir()) / "django_tempstore"
        return Path(value)

    @property
    def CHUNK_SIZE(self) -> int:
        return int(getattr(settings, "TEMPSTORE_CHUNK_SIZE", 1024 * 1024))

    @property
    def MAX_MEMORY_SIZE(self) -> int:
        """A request whose body is at most this many bytes keeps its files in memory
        until the view needs a temp file; 0 tracks every file from its first byte."""
        value = getattr(settings, "TEMPSTORE_MAX_MEMORY_SIZE", None)
        if value is None:
            return int(settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
        return int(value)

    @property
    def DIGEST(self) -> str | None:
        """A ``hashlib`` algorithm name computed while streaming, or None."""
        return getattr(settings, "TEMPSTORE_DIGEST", "sha256")

    @property
    def MAX_FILE_SIZE(self) -> int | None:
        value = getattr(settings, "TEMPSTORE_MAX_FILE_SIZE", None)
        return None if value is None else int(value)

    @property
    def QUOTA(self) -> int | None:
        value = getattr(settings, "TEMPSTORE_QUOTA", None)
        return None if value is None else int(value)

    @property
    def QUOTA_PER_KEY(self) -> int | None:
        """Bytes each quota key (by default each logged-in user) may hold, or None."""
        value = getattr(settings, "TEMPSTORE_QUOTA_PER_KEY", None)
        return None if value is None else int(value)

    @property
    def QUOTA_KEY(self) -> Any:
        """A callable ``(request) -> str | None`` or its dotted path: the request's quota key."""
        return getattr(settings, "TEMPSTORE_QUOTA_KEY", "django_tempstore.quota.user_key")

    @property
    def MIN_FREE_SPACE(self) -> int:
        return int(getattr(settings, "TEMPSTORE_MIN_FREE_SPACE", 0))

    @property
    def RETRY_AFTER(self) -> int:
        """Seconds sent in ``Retry-After`` with a 507 answer."""
        return int(getattr(settings, "TEMPSTORE_RETRY_AFTER", 60))

    @property
    def KEEP_TTL(self) -> timedelta:
        return _seconds(getattr(settings, "TEMPSTORE_KEEP_TTL", 3600))

    @property
    def COMPLETE_TTL(self) -> timedelta:
        """How long a complete upload may outlive a request that never closed it."""
        return _seconds(getattr(settings, "TEMPSTORE_COMPLETE_TTL", 3600))

    @property
    def HEARTBEAT_INTERVAL(self) -> timedelta:
        return _seconds(getattr(settings, "TEMPSTORE_HEARTBEAT_INTERVAL", 10))

    @property
    def STALE_AFTER(self) -> timedelta:
        """A receiving upload whose heartbeat is older than this is dead."""
        return _seconds(getattr(settings, "TEMPSTORE_STALE_AFTER", 300))

    @property
    def ORPHAN_GRACE(self) -> timedelta:
        return _seconds(getattr(settings, "TEMPSTORE_ORPHAN_GRACE", 3600))

    @property
    def HISTORY(self) -> timedelta:
        """How long rows in a terminal state are kept for the admin's history."""
        return _seconds(getattr(settings, "TEMPSTORE_HISTORY", 7 * 24 * 3600))

    @property
    def SHARED_DIR(self) -> bool:
        """True when every host sees the same ``TEMPSTORE_DIR``."""
        return bool(getattr(settings, "TEMPSTORE_SHARED_DIR", False))

    @property
    def HOSTNAME(self) -> str:
        return str(
            getattr(settings, "TEMPSTORE_HOSTNAME", None)
            or os.environ.get("TEMPSTORE_HOSTNAME")
            or socket.gethostname()
        )

    @property
    def SWEEP_ON_WORKER_START(self) -> bool:
        """Run a startup sweep when a Celery worker is ready."""
        return bool(getattr(settings, "TEMPSTORE_SWEEP_ON_WORKER_START", False))

    @property
    def DATABASE(self) -> str:
        """The database alias that holds the bookkeeping rows."""
        return str(getattr(settings, "TEMPSTORE_DATABASE", "default"))

    @property
    def VALIDATORS(self) -> list[Any]:
        """Dotted paths or instances of ``UploadValidator`` run on every upload."""
        return list(getattr(settings, "TEMPSTORE_VALIDATORS", []))

    @property
    def SCANNER(self) -> Any:
        """A ``Scanner``: an instance, a dotted path, or ``{"BACKEND": ..., "OPTIONS": {...}}``."""
        return getattr(settings, "TEMPSTORE_SCANNER", None)

    @property
    def QUARANTINE_DIR(self) -> Path | None:
        """Where infected files are moved; None deletes them."""
        value = getattr(settings, "TEMPSTORE_QUARANTINE_DIR", None)
        return None if value is None else Path(value)

    @property
    def PROMOTE_RETRIES(self) -> int:
        return int(getattr(settings, "TEMPSTORE_PROMOTE_RETRIES", 5))

    @property
    def PROMOTE_RETRY_DELAY(self) -> float:
        """Seconds before the first retry of ``promote_upload``; doubled each time."""
        return _seconds(getattr(settings, "TEMPSTORE_PROMOTE_RETRY_DELAY", 10)).total_seconds()

    @property
    def REFUSAL_VIEW(self) -> str | None:
        """Dotted path of a view ``(request, refusal) -> HttpResponse`` for non-JSON refusals."""
        value = getattr(settings, "TEMPSTORE_REFUSAL_VIEW", None)
        return None if value is None else str(value)

    @property
    def TUS_EXPIRY(self) -> timedelta:
        """How long a partial tus upload lives after its last progress."""
        return _seconds(getattr(settings, "TEMPSTORE_TUS_EXPIRY", 24 * 3600))

    @property
    def TUS_LOCK_TIMEOUT(self) -> timedelta:
        """A tus upload's lock not renewed for this long is taken over."""
        return _seconds(getattr(settings, "TEMPSTORE_TUS_LOCK_TIMEOUT", 60))

    @property
    def TUS_PERMISSION(self) -> str:
        """Dotted path of ``permission(request, action, upload) -> bool`` for tus requests."""
        return str(
            getattr(
                settings,
                "TEMPSTORE_TUS_PERMISSION",
                "django_tempstore.tus.permissions.owner_or_capability",
            )
        )


conf = Settings()
