"""System checks: ``django_tempstore.E001`` .. ``E004`` and ``W001`` .. ``W006``."""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import conf
from .storage import unsafe_dir_reason

HANDLER = "django_tempstore.handlers.TempStoreUploadHandler"
MIDDLEWARE = "django_tempstore.middleware.TempStoreMiddleware"
CSRF_MIDDLEWARE = "django.middleware.csrf.CsrfViewMiddleware"


@register(Tags.compatibility)
def check_dir(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    path = conf.DIR
    if not os.path.lexists(path):
        parent = path.parent
        if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
            return [
                Error(
                    f"TEMPSTORE_DIR {path} does not exist and cannot be created.",
                    hint="Create it (mode 0700) or point TEMPSTORE_DIR at a writable folder.",
                    id="django_tempstore.E001",
                )
            ]
        return []
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return [
            Error(
                f"TEMPSTORE_DIR {path} is a symbolic link.",
                hint="Point TEMPSTORE_DIR at the real directory: a link can be swapped.",
                id="django_tempstore.E002",
            )
        ]
    if not stat.S_ISDIR(st.st_mode) or not os.access(path, os.W_OK | os.X_OK):
        return [
            Error(
                f"TEMPSTORE_DIR {path} is not a writable directory.",
                hint="Give the user running Django write access, or choose another folder.",
                id="django_tempstore.E001",
            )
        ]
    reason = unsafe_dir_reason(st)
    if reason is not None:
        return [
            Error(
                f"TEMPSTORE_DIR {path} {reason}.",
                hint=(
                    f"Run 'chown $(id -u) {path} && chmod 700 {path}' as the user running "
                    "Django: other users could plant or swap temp files."
                ),
                id="django_tempstore.E002",
            )
        ]
    return []


def _handler_classes() -> list[type]:
    classes = []
    for dotted in settings.FILE_UPLOAD_HANDLERS:
        try:
            classes.append(import_string(dotted))
        except ImportError:
            continue
    return classes


@register(Tags.compatibility)
def check_handlers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django.core.files.uploadhandler import MemoryFileUploadHandler

    from .handlers import TempStoreUploadHandler

    classes = _handler_classes()
    ours = [i for i, cls in enumerate(classes) if issubclass(cls, TempStoreUploadHandler)]
    if not ours:
        return [
            Warning(
                f"{HANDLER} is not in FILE_UPLOAD_HANDLERS: uploads are not tracked.",
                hint=f'Set FILE_UPLOAD_HANDLERS = ["{HANDLER}"].',
                id="django_tempstore.W001",
            )
        ]
    smaller = [cls for cls in classes if 0 < getattr(cls, "chunk_size", 0) < conf.CHUNK_SIZE]
    if any(issubclass(cls, MemoryFileUploadHandler) for cls in smaller):
        return [
            Warning(
                "MemoryFileUploadHandler in FILE_UPLOAD_HANDLERS caps Django's reads at "
                "64 KiB, below TEMPSTORE_CHUNK_SIZE: more work per MiB (about 7% slower "
                "for large uploads in bench/), and small requests are kept in memory, "
                "untracked and outside TEMPSTORE_QUOTA.",
                hint=(
                    f'Use FILE_UPLOAD_HANDLERS = ["{HANDLER}"] alone unless many uploads are '
                    "small enough to keep in memory."
                ),
                id="django_tempstore.W002",
            )
        ]
    return []


@register(Tags.compatibility)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    middleware = list(settings.MIDDLEWARE)
    if MIDDLEWARE not in middleware:
        return [
            Warning(
                f"{MIDDLEWARE} is not in MIDDLEWARE: refused uploads answer 400, not 413 or 507.",
                hint=f"Add it above {CSRF_MIDDLEWARE}.",
                id="django_tempstore.W003",
            )
        ]
    if CSRF_MIDDLEWARE in middleware and middleware.index(CSRF_MIDDLEWARE) < middleware.index(
        MIDDLEWARE
    ):
        return [
            Warning(
                f"{MIDDLEWARE} is below {CSRF_MIDDLEWARE}, which may read the body first.",
                hint=f"Move it above {CSRF_MIDDLEWARE}.",
                id="django_tempstore.W003",
            )
        ]
    return []


@register(Tags.compatibility)
def check_atomic_requests(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    database = settings.DATABASES.get(conf.DATABASE, {})
    if database.get("ATOMIC_REQUESTS"):
        return [
            Warning(
                f"ATOMIC_REQUESTS is on for the database {conf.DATABASE!r}: the rows of "
                "uploads parsed inside a view are invisible to sweeps, and quota "
                "reservations stay locked, until the view returns.",
                hint=(
                    "Add a second alias for the same database without ATOMIC_REQUESTS "
                    "and set TEMPSTORE_DATABASE to it."
                ),
                id="django_tempstore.W004",
            )
        ]
    return []


@register(Tags.compatibility)
def check_sqlite_locking(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    database: dict[str, Any] = settings.DATABASES.get(conf.DATABASE, {})
    if not str(database.get("ENGINE", "")).endswith("sqlite3"):
        return []
    options: dict[str, Any] = database.get("OPTIONS") or {}
    immediate = str(options.get("transaction_mode", "")).upper() == "IMMEDIATE"
    wal = "journal_mode=wal" in str(options.get("init_command", "")).lower().replace(" ", "")
    if immediate:
        return []
    return [
        Warning(
            f"The SQLite database {conf.DATABASE!r} starts its transactions DEFERRED: "
            "concurrent uploads fail with 'database is locked' (answered 503) instead "
            "of waiting for each other.",
            hint=(
                'Add "transaction_mode": "IMMEDIATE" to its OPTIONS'
                + ("" if wal else ', and "init_command": "PRAGMA journal_mode=WAL;" so that ')
                + ("" if wal else "readers never wait for a writer")
                + '; raise its "timeout" (seconds) above the longest write you expect.'
            ),
            id="django_tempstore.W006",
        )
    ]


@register(Tags.compatibility)
def check_stale_after(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    stale_after = conf.STALE_AFTER
    interval = conf.HEARTBEAT_INTERVAL
    if stale_after < 2 * interval:
        return [
            Warning(
                f"TEMPSTORE_STALE_AFTER ({stale_after.total_seconds():g} s) is less than twice "
                f"TEMPSTORE_HEARTBEAT_INTERVAL ({interval.total_seconds():g} s): the sweep "
                "fails uploads that are still being received.",
                hint=(
                    f"Set TEMPSTORE_STALE_AFTER to {2 * interval.total_seconds():g} seconds or "
                    "more, and above TEMPSTORE_CHUNK_SIZE divided by the slowest client's "
                    "upload rate."
                ),
                id="django_tempstore.W005",
            )
        ]
    return []


def _configured_validators() -> list[Any]:
    """TEMPSTORE_VALIDATORS and the validators of each ``@validate_uploads`` view in the URLconf."""
    from django.urls import URLPattern, URLResolver, get_resolver

    from .validators import load

    found: list[Any] = []
    entries: list[Any] = [conf.VALIDATORS]
    stack: list[Any] = list(get_resolver().url_patterns)
    while stack:
        pattern = stack.pop()
        if isinstance(pattern, URLResolver):
            stack.extend(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            chosen = getattr(pattern.callback, "tempstore_validators", None)
            if chosen is not None:
                entries.append(chosen.validators)
    for group in entries:
        try:
            found.extend(load(group))
        except Exception:  # An unimportable validator fails loudly on the first upload.
            continue
    return found


@register(Tags.compatibility)
def check_scanner(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from .scanners import Antivirus

    if conf.SCANNER is not None:
        return []
    if any(isinstance(v, Antivirus) and v.scanner is None for v in _configured_validators()):
        return [
            Error(
                "The Antivirus validator is used but TEMPSTORE_SCANNER is not set: "
                "every upload it checks fails with a server error.",
                hint=(
                    "Set TEMPSTORE_SCANNER (e.g. "
                    '{"BACKEND": "django_tempstore.scanners.ClamAVScanner"}) '
                    "or give Antivirus(scanner=...)."
                ),
                id="django_tempstore.E003",
            )
        ]
    return []


@register(Tags.compatibility)
def check_digest(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    name = conf.DIGEST
    if not name:
        return []
    try:
        hashlib.new(name).hexdigest()
    except (ValueError, TypeError):  # Unknown, or a SHAKE needing a length.
        return [
            Error(
                f"TEMPSTORE_DIGEST {name!r} is not a hashlib algorithm with a fixed-size "
                "digest: every upload fails with a server error.",
                hint='Use "sha256" (the default), another hashlib name such as "sha512", '
                "or None to compute no digest.",
                id="django_tempstore.E004",
            )
        ]
    return []
