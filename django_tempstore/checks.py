"""System checks: ``django_tempstore.E001`` .. ``E010`` and ``W001`` .. ``W008``, one id per
condition."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import conf
from .storage import unsafe_dir_reason

HANDLER = "django_tempstore.handlers.TempStoreUploadHandler"
MIDDLEWARE = "django_tempstore.middleware.TempStoreMiddleware"
CSRF_MIDDLEWARE = "django.middleware.csrf.CsrfViewMiddleware"


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


@register(Tags.security)
def check_dir(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        path = conf.DIR
    except TypeError:
        return []  # E005 says why.
    if not os.path.lexists(path):
        # The runtime creates the missing parents too (``storage.ensure_dir``).
        ancestor = _nearest_existing(path)
        if not (ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK)):
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
                id="django_tempstore.E008",
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
                id="django_tempstore.E009",
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
                id="django_tempstore.W007",
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
    wal = _sqlite_wal(options)
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


def _sqlite_wal(options: dict[str, Any]) -> bool:
    return "journal_mode=wal" in str(options.get("init_command", "")).lower().replace(" ", "")


@register(Tags.compatibility)
def check_sqlite_journal(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    database: dict[str, Any] = settings.DATABASES.get(conf.DATABASE, {})
    if not str(database.get("ENGINE", "")).endswith("sqlite3"):
        return []
    if _sqlite_wal(database.get("OPTIONS") or {}):
        return []
    return [
        Warning(
            f"The SQLite database {conf.DATABASE!r} is not set to WAL mode: with the "
            "default rollback journal every commit of a tracked upload's row is flushed "
            "to disk (about 1 ms each in bench/, against 0.1 ms in WAL mode), and readers "
            "wait for writers.",
            hint=(
                'Add "init_command": "PRAGMA journal_mode=WAL;" to its OPTIONS (WAL mode '
                "needs the database on a local disk, not a network filesystem)."
            ),
            id="django_tempstore.W008",
        )
    ]


@register(Tags.compatibility)
def check_stale_after(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        stale_after = conf.STALE_AFTER
        interval = conf.HEARTBEAT_INTERVAL
    except (TypeError, ValueError):
        return []  # E005 says why.
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


#: (setting, allowed types, allow None, minimum) for the settings ``conf`` reads.
_BYTES = (int,)
_DURATION = (int, float, timedelta)
_SETTINGS: list[tuple[str, tuple[type, ...], bool, float | None]] = [
    ("TEMPSTORE_CHUNK_SIZE", _BYTES, False, 1),
    ("TEMPSTORE_MAX_FILE_SIZE", _BYTES, True, 1),
    ("TEMPSTORE_QUOTA", _BYTES, True, 1),
    ("TEMPSTORE_QUOTA_PER_KEY", _BYTES, True, 1),
    ("TEMPSTORE_MIN_FREE_SPACE", _BYTES, False, 0),
    ("TEMPSTORE_MAX_MEMORY_SIZE", _BYTES, True, 0),
    ("TEMPSTORE_RETRY_AFTER", (int,), False, 0),
    ("TEMPSTORE_PROMOTE_RETRIES", (int,), False, 0),
    ("TEMPSTORE_KEEP_TTL", _DURATION, False, 0),
    ("TEMPSTORE_COMPLETE_TTL", _DURATION, False, 0),
    ("TEMPSTORE_HEARTBEAT_INTERVAL", _DURATION, False, 0),
    ("TEMPSTORE_STALE_AFTER", _DURATION, False, 0),
    ("TEMPSTORE_ORPHAN_GRACE", _DURATION, False, 0),
    ("TEMPSTORE_HISTORY", _DURATION, False, 0),
    ("TEMPSTORE_PROMOTE_RETRY_DELAY", _DURATION, False, 0),
    ("TEMPSTORE_SHARED_DIR", (bool,), False, None),
    ("TEMPSTORE_SWEEP_ON_WORKER_START", (bool,), False, None),
    ("TEMPSTORE_DIR", (str, os.PathLike), True, None),
    ("TEMPSTORE_QUARANTINE_DIR", (str, os.PathLike), True, None),
    ("TEMPSTORE_DIGEST", (str,), True, None),
    ("TEMPSTORE_HOSTNAME", (str,), True, None),
    ("TEMPSTORE_DATABASE", (str,), False, None),
    ("TEMPSTORE_VALIDATORS", (list, tuple), False, None),
]


def _type_names(types: tuple[type, ...], nullable: bool) -> str:
    names = [t.__name__ for t in types] + (["None"] if nullable else [])
    return " or ".join(names)


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The type (E005) and range (E006) of each ``TEMPSTORE_*`` setting,
    ``TEMPSTORE_DATABASE`` (E010) and ``TEMPSTORE_QUOTA_KEY`` (E007)."""
    errors: list[CheckMessage] = []
    for name, types, nullable, minimum in _SETTINGS:
        if not hasattr(settings, name):
            continue
        value = getattr(settings, name)
        if value is None and nullable:
            continue
        # bool is an int: True is no byte count.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            errors.append(
                Error(
                    f"{name} is {value!r} ({type(value).__name__}), "
                    f"not {_type_names(types, nullable)}.",
                    hint=f"Set {name} to a {_type_names(types, nullable)}, such as the "
                    "number of bytes or seconds (1 GiB is 1024 ** 3), not a string.",
                    id="django_tempstore.E005",
                )
            )
            continue
        if minimum is None:
            continue
        number: Any = value
        amount = float(number.total_seconds() if isinstance(number, timedelta) else number)
        if amount < minimum:
            errors.append(
                Error(
                    f"{name} is {value!r}, below its minimum {minimum:g}.",
                    hint=f"Set {name} to {minimum:g} or more, or remove it for the default.",
                    id="django_tempstore.E006",
                )
            )
    database = getattr(settings, "TEMPSTORE_DATABASE", "default")
    if isinstance(database, str) and database not in settings.DATABASES:
        errors.append(
            Error(
                f"TEMPSTORE_DATABASE {database!r} is not an alias in DATABASES.",
                hint="Set TEMPSTORE_DATABASE to one of: " + ", ".join(settings.DATABASES) + ".",
                id="django_tempstore.E010",
            )
        )
    key = getattr(settings, "TEMPSTORE_QUOTA_KEY", None)
    if key is not None and not callable(key):
        try:
            loaded = import_string(key) if isinstance(key, str) else key
        except ImportError:
            loaded = None
        if not callable(loaded):
            errors.append(
                Error(
                    f"TEMPSTORE_QUOTA_KEY {key!r} is not a callable or the dotted path of one.",
                    hint="Point it at a function (request) -> str | None, such as "
                    '"django_tempstore.quota.user_key" (the default).',
                    id="django_tempstore.E007",
                )
            )
    return errors
