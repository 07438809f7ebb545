"""Typed access to the ``TEMPSTORE_*`` settings, read at use time."""

from __future__ import annotations

import os
import socket
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

_MISSING = object()
#: The raw value of each setting read so far (``_MISSING`` when unset), for the
#: settings object they were read from: a getattr on Django's lazy settings costs
#: microseconds, and a small upload reads a dozen of them. ``override_settings``
#: (and pytest-django's ``settings`` fixture, ``del`` included) installs a new
#: settings object, which starts afresh; ``setting_changed`` empties it too.
_cache: tuple[object, dict[str, Any]] = (None, {})


def _setting(name: str, default: Any = None) -> Any:
    global _cache
    source = settings._wrapped  # type: ignore[misc]
    holder, values = _cache
    if holder is not source:
        values = {}
        _cache = (source, values)
    try:
        value = values[name]
    except KeyError:
        value = getattr(settings, name, _MISSING)
        values[name] = value
    return default if value is _MISSING else value


def _forget_settings(**kwargs: Any) -> None:
    global _cache
    _cache = (None, {})


setting_changed.connect(_forget_settings, dispatch_uid="django_tempstore.conf.forget_settings")


def _seconds(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=float(value))


class Settings:
    """One property per setting, so ``override_settings`` just works."""

    @property
    def DIR(self) -> Path:
        value = _setting("TEMPSTORE_DIR", None)
        if value is None:
            return Path(tempfile.gettempdir()) / "django_tempstore"
        return Path(value)

    @property
    def CHUNK_SIZE(self) -> int:
        return int(_setting("TEMPSTORE_CHUNK_SIZE", 1024 * 1024))

    @property
    def MAX_MEMORY_SIZE(self) -> int:
        """A request whose body is at most this many bytes keeps its files in memory
        until the view needs a temp file; 0 tracks every file from its first byte."""
        value = _setting("TEMPSTORE_MAX_MEMORY_SIZE", None)
        if value is None:
            return int(_setting("FILE_UPLOAD_MAX_MEMORY_SIZE", 2621440))
        return int(value)

    @property
    def DIGEST(self) -> str | None:
        """A ``hashlib`` algorithm name computed while streaming, or None."""
        value: str | None = _setting("TEMPSTORE_DIGEST", "sha256")
        return value

    @property
    def MAX_FILE_SIZE(self) -> int | None:
        value = _setting("TEMPSTORE_MAX_FILE_SIZE", None)
        return None if value is None else int(value)

    @property
    def QUOTA(self) -> int | None:
        value = _setting("TEMPSTORE_QUOTA", None)
        return None if value is None else int(value)

    @property
    def QUOTA_PER_KEY(self) -> int | None:
        """Bytes each quota key (by default each logged-in user) may hold, or None."""
        value = _setting("TEMPSTORE_QUOTA_PER_KEY", None)
        return None if value is None else int(value)

    @property
    def QUOTA_KEY(self) -> Any:
        """A callable ``(request) -> str | None`` or its dotted path: the request's quota key."""
        return _setting("TEMPSTORE_QUOTA_KEY", "django_tempstore.quota.user_key")

    @property
    def MIN_FREE_SPACE(self) -> int:
        return int(_setting("TEMPSTORE_MIN_FREE_SPACE", 0))

    @property
    def RETRY_AFTER(self) -> int:
        """Seconds sent in ``Retry-After`` with a 507 answer."""
        return int(_setting("TEMPSTORE_RETRY_AFTER", 60))

    @property
    def KEEP_TTL(self) -> timedelta:
        return _seconds(_setting("TEMPSTORE_KEEP_TTL", 3600))

    @property
    def COMPLETE_TTL(self) -> timedelta:
        """How long a complete upload may outlive a request that never closed it."""
        return _seconds(_setting("TEMPSTORE_COMPLETE_TTL", 3600))

    @property
    def HEARTBEAT_INTERVAL(self) -> timedelta:
        return _seconds(_setting("TEMPSTORE_HEARTBEAT_INTERVAL", 10))

    @property
    def STALE_AFTER(self) -> timedelta:
        """A receiving upload whose heartbeat is older than this is dead."""
        return _seconds(_setting("TEMPSTORE_STALE_AFTER", 300))

    @property
    def ORPHAN_GRACE(self) -> timedelta:
        return _seconds(_setting("TEMPSTORE_ORPHAN_GRACE", 3600))

    @property
    def HISTORY(self) -> timedelta:
        """How long rows in a terminal state are kept for the admin's history."""
        return _seconds(_setting("TEMPSTORE_HISTORY", 7 * 24 * 3600))

    @property
    def SHARED_DIR(self) -> bool:
        """True when every host sees the same ``TEMPSTORE_DIR``."""
        return bool(_setting("TEMPSTORE_SHARED_DIR", False))

    @property
    def HOSTNAME(self) -> str:
        return str(
            _setting("TEMPSTORE_HOSTNAME", None)
            or os.environ.get("TEMPSTORE_HOSTNAME")
            or socket.gethostname()
        )

    @property
    def SWEEP_ON_WORKER_START(self) -> bool:
        """Run a startup sweep when a Celery worker is ready."""
        return bool(_setting("TEMPSTORE_SWEEP_ON_WORKER_START", False))

    @property
    def DATABASE(self) -> str:
        """The database alias that holds the bookkeeping rows."""
        return str(_setting("TEMPSTORE_DATABASE", "default"))

    @property
    def VALIDATORS(self) -> list[Any]:
        """Dotted paths or instances of ``UploadValidator`` run on every upload."""
        return list(_setting("TEMPSTORE_VALIDATORS", []))

    @property
    def SCANNER(self) -> Any:
        """A ``Scanner``: an instance, a dotted path, or ``{"BACKEND": ..., "OPTIONS": {...}}``."""
        return _setting("TEMPSTORE_SCANNER", None)

    @property
    def QUARANTINE_DIR(self) -> Path | None:
        """Where infected files are moved; None deletes them."""
        value = _setting("TEMPSTORE_QUARANTINE_DIR", None)
        return None if value is None else Path(value)

    @property
    def PROMOTE_RETRIES(self) -> int:
        return int(_setting("TEMPSTORE_PROMOTE_RETRIES", 5))

    @property
    def PROMOTE_RETRY_DELAY(self) -> float:
        """Seconds before the first retry of ``promote_upload``; doubled each time."""
        return _seconds(_setting("TEMPSTORE_PROMOTE_RETRY_DELAY", 10)).total_seconds()

    @property
    def REFUSAL_VIEW(self) -> str | None:
        """Dotted path of a view ``(request, refusal) -> HttpResponse`` for non-JSON refusals."""
        value = _setting("TEMPSTORE_REFUSAL_VIEW", None)
        return None if value is None else str(value)

    @property
    def TUS_EXPIRY(self) -> timedelta:
        """How long a partial tus upload lives after its last progress."""
        return _seconds(_setting("TEMPSTORE_TUS_EXPIRY", 24 * 3600))

    @property
    def TUS_LOCK_TIMEOUT(self) -> timedelta:
        """A tus upload's lock not renewed for this long is taken over."""
        return _seconds(_setting("TEMPSTORE_TUS_LOCK_TIMEOUT", 60))

    @property
    def TUS_PERMISSION(self) -> str:
        """Dotted path of ``permission(request, action, upload) -> bool`` for tus requests."""
        return str(
            _setting(
                "TEMPSTORE_TUS_PERMISSION",
                "django_tempstore.tus.permissions.owner_or_capability",
            )
        )


conf = Settings()
