"""System checks: ``django_tempstore.E001`` .. ``W004``."""

from __future__ import annotations

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
