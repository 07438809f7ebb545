"""Bytes held by pending temp files, bounded by ``TEMPSTORE_QUOTA`` across processes.

One counter row (``QuotaCounter``) holds the bytes reserved by every pending
upload; each upload's share is in its row's ``reserved``. Both move together in
one transaction, and the counter only grows by a conditional UPDATE
(``used + n <= quota``): the database serializes concurrent reservations, so the
total never passes the quota, whatever the number of processes or hosts that
share the database. Bytes are reserved before they are written and a file is
deleted before its reservation is released, so the bytes on disk stay below the
counter too.

Lock order, everywhere (here, in ``lifecycle.close()`` and in the sweep): the
counter row first, then upload rows.
"""

from __future__ import annotations

import contextlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction
from django.db.models import Count, F, QuerySet, Sum
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from .conf import conf
from .exceptions import FileTooLarge, InsufficientStorage, UploadClosed
from .models import (
    QuotaCounter,
    State,
    TempUpload,
    TempUploadQuerySet,
    Transition,
)
from .storage import free_space

if TYPE_CHECKING:
    from django.http import HttpRequest

SCOPE = "default"
#: Reservations are taken in blocks of up to this many bytes (never past what
#: the file can grow to), so that most uploads take a single reservation.
BLOCK = 4 * 1024 * 1024
#: A complete file gives back what it reserved beyond its size only when it is
#: at least this much; the rest goes back when the upload closes.
TRIM_SLACK = 64 * 1024


class _Retry(Exception):
    """Roll back the transaction and try again (or give up)."""


class _Full(Exception):
    def __init__(self, scope: str) -> None:
        self.scope = scope


def key_scope(key: str) -> str:
    """The ``QuotaCounter.scope`` of quota key ``key``."""
    return "key:" + key


def user_key(request: HttpRequest) -> str | None:
    """The default ``TEMPSTORE_QUOTA_KEY``: ``"user:<pk>"``, None for anonymous clients."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return "user:" + str(user.pk)


def quota_key(request: HttpRequest | None) -> str:
    """The quota key of ``request`` ("" for none), from ``TEMPSTORE_QUOTA_KEY``."""
    if request is None or conf.QUOTA_PER_KEY is None:
        return ""
    func = conf.QUOTA_KEY
    if isinstance(func, str):
        func = import_string(func)
    return str(func(request) or "")[:255]


def _counter(scope: str = SCOPE) -> QuerySet[QuotaCounter]:
    return QuotaCounter.objects.using(conf.DATABASE).filter(scope=scope)


def _create_counter(scope: str = SCOPE) -> bool:
    """Create the counter row if it is missing; True if this call created it."""
    return QuotaCounter.objects.using(conf.DATABASE).get_or_create(scope=scope)[1]


def _move_counter(delta: int, limit: int | None = None, scope: str = SCOPE) -> bool:
    rows = _counter(scope)
    if limit is not None:
        rows = rows.filter(used__lte=limit - delta)
    return bool(rows.update(used=F("used") + delta, updated_at=timezone.now()))


def _rows() -> TempUploadQuerySet:
    return TempUpload.objects.using(conf.DATABASE).all()


def counter_value(scope: str = SCOPE) -> int:
    """Bytes the counter of ``scope`` says are reserved (0 if it does not exist yet)."""
    return _counter(scope).values_list("used", flat=True).first() or 0


def _refusal(scope: str) -> InsufficientStorage:
    if scope == SCOPE:
        return InsufficientStorage(
            _("The server's upload quota is used up. Try again later."),
            reason="TEMPSTORE_QUOTA is used up",
        )
    return InsufficientStorage(
        _(
            "Your upload quota is used up. "
            "Finish or delete some of your uploads, or try again later."
        ),
        reason="TEMPSTORE_QUOTA_PER_KEY is used up for " + scope,
    )


class QuotaLedger(ABC):
    """The one owner of the quota's rules; every reservation and release goes through it.

    Rules kept here, not by callers: counters are locked and moved before upload
    rows, the global scope before the key scope (key scopes in sorted order); a
    caller deletes the file before it releases the reservation (``settle`` and
    ``release`` are only called on rows whose file is gone or is kept); SQLite
    locks the whole database on the first write, so ``lock`` does nothing there.
    """

    #: True when reservations are recorded (some quota is configured).
    active = False

    @abstractmethod
    def scopes(self, key: str) -> list[tuple[str, int | None]]:
        """The (scope, limit) pairs an upload with quota key ``key`` reserves in, in lock order."""

    def reserve(self, upload: TempUpload, nbytes: int, *, received: int | None = None) -> None:
        """Add ``nbytes`` to ``upload``'s reservation in every scope, or raise InsufficientStorage.

        One transaction: each scope's counter (conditional on its limit), in
        lock order, then the upload's row (conditional on it being pending,
        else UploadClosed). The resumable-upload endpoint calls this once per
        request with the bytes it is about to write to an existing row; the
        bytes go back with ``settle``/``lifecycle.close`` when the row closes,
        or with ``unreserve`` earlier. ``received``, when given, is recorded as
        the row's ``size`` by the same UPDATE (the admin's live progress).
        """
        scopes = self.scopes(upload.quota_key)
        if nbytes <= 0 or not scopes:
            return
        for _attempt in range(len(scopes) + 1):
            try:
                with transaction.atomic(using=conf.DATABASE):
                    for scope, limit in scopes:
                        if not _move_counter(nbytes, limit, scope):
                            raise _Full(scope)
                    fields: dict[str, Any] = {"reserved": F("reserved") + nbytes}
                    if received is not None:
                        fields["size"] = received
                    if not _rows().pending_row(upload.pk).update(**fields):
                        raise UploadClosed()
            except _Full as full:
                if _create_counter(full.scope):
                    continue
                raise _refusal(full.scope) from None
            upload.reserved += nbytes
            if received is not None:
                upload.size = received
            return
        raise _refusal(SCOPE)

    def unreserve(self, upload: TempUpload, nbytes: int) -> int:
        """Give back up to ``nbytes`` of a pending ``upload``'s reservation; return how many.

        For bytes reserved and then not written (a resumable request that ended
        early). The caller must not have more than ``upload.reserved - nbytes``
        bytes of the file on disk.
        """
        nbytes = min(nbytes, upload.reserved)
        if nbytes <= 0:
            return 0
        with contextlib.suppress(_Retry), transaction.atomic(using=conf.DATABASE):
            for scope, _limit in self.scopes(upload.quota_key):
                _move_counter(-nbytes, None, scope)
            rows = _rows().pending_row(upload.pk).filter(reserved=upload.reserved)
            if not rows.update(reserved=F("reserved") - nbytes):
                raise _Retry  # Closed or moved meanwhile: close() releases it all.
            upload.reserved -= nbytes
            return nbytes
        return 0

    def settle(
        self,
        rows: TempUploadQuerySet,
        upload: TempUpload,
        transition: Transition,
        values: dict[str, Any],
    ) -> bool:
        """Apply ``transition`` to ``rows`` (``upload``'s row) with ``values``, which
        set ``reserved`` to 0, and release what the row held in every scope, in
        one transaction. False if the row was no longer in one of the
        transition's sources. The caller deletes the file first.

        The release happens exactly once, and a ``reconcile()`` never sees the
        row closed with the counters not yet moved.
        """
        while True:
            held = upload.reserved
            scopes = self.scopes(upload.quota_key) if held else []
            try:
                with transaction.atomic(using=conf.DATABASE) if held else contextlib.nullcontext():
                    for scope, _limit in scopes:
                        _move_counter(-held, None, scope)
                    if rows.filter(reserved=held).transition(transition, **values):
                        return True
                    raise _Retry
            except _Retry:
                pass
            # This copy of the row is out of date: read what the row holds now.
            current = rows.in_sources(transition).values_list("reserved", flat=True).first()
            if current is None:
                return False
            upload.reserved = current

    def lock(self, keys: Iterable[str] = ()) -> None:
        """Inside a transaction, take the counters' locks before any upload row's.

        SQLite locks the whole database on the first write instead (a read
        first would make the upgrade fail at once rather than wait).
        """
        if connections[conf.DATABASE].vendor == "sqlite":
            # A write takes SQLite's lock now, so the reads that follow see
            # what the caller's writes will change.
            _counter().update(updated_at=timezone.now())
            return
        wanted = {scope for key in set(keys) | {""} for scope, _ in self.scopes(key)}
        for scope in _lock_order(wanted):
            list(_counter(scope).select_for_update().values_list("pk", flat=True))

    def release(self, held: dict[str, int]) -> None:
        """Take ``held`` (bytes per quota key) off the counters; the caller has
        zeroed the rows that held them, in this transaction, after their files went."""
        per_scope: dict[str, int] = {}
        for key, nbytes in held.items():
            for scope, _limit in self.scopes(key):
                per_scope[scope] = per_scope.get(scope, 0) + nbytes
        for scope in _lock_order(per_scope):
            if per_scope[scope]:
                _move_counter(-per_scope[scope], None, scope)


def _lock_order(scopes: Iterable[str]) -> list[str]:
    return sorted(scopes, key=lambda scope: (scope != SCOPE, scope))


class DatabaseLedger(QuotaLedger):
    """Counters in ``QuotaCounter`` rows: the global scope plus one per quota key."""

    active = True

    def scopes(self, key: str) -> list[tuple[str, int | None]]:
        result: list[tuple[str, int | None]] = [(SCOPE, conf.QUOTA)]
        per_key = conf.QUOTA_PER_KEY
        if key and per_key is not None:
            result.append((key_scope(key), per_key))
        return result


class NoQuotaLedger(QuotaLedger):
    """No quota configured: nothing is reserved, a close only updates its row."""

    def scopes(self, key: str) -> list[tuple[str, int | None]]:
        return []


def ledger() -> QuotaLedger:
    """The ledger for the current settings (``TEMPSTORE_QUOTA``, ``TEMPSTORE_QUOTA_PER_KEY``)."""
    if conf.QUOTA is None and conf.QUOTA_PER_KEY is None:
        return NoQuotaLedger()
    return DatabaseLedger()


def check_request(content_length: int | None, key: str = "") -> None:
    """Refuse, before its body is read, a request that cannot fit.

    ``content_length`` includes the multipart framing, so this errs by a few
    hundred bytes on the side of refusing. ``key`` is the request's quota key
    (``quota_key(request)``). One database read per configured scope; none
    without a quota.
    """
    check_free_space(content_length or 0)
    if not content_length:
        return
    limit = conf.QUOTA
    if limit is not None:
        if content_length > limit:
            # No amount of waiting makes it fit: 413, not 507.
            raise FileTooLarge(
                "The upload is larger than this site can hold. Send fewer or smaller files.",
                reason="the request's Content-Length is larger than TEMPSTORE_QUOTA",
            )
        if content_length > limit - counter_value():
            raise InsufficientStorage(
                _("The server's upload quota has no room for this upload now. Try again later."),
                reason="TEMPSTORE_QUOTA has no room for the request's Content-Length",
            )
    per_key = conf.QUOTA_PER_KEY
    if key and per_key is not None:
        if content_length > per_key:
            raise FileTooLarge(
                _("The upload is larger than your upload quota. Send fewer or smaller files."),
                reason="the request's Content-Length is larger than TEMPSTORE_QUOTA_PER_KEY",
            )
        if content_length > per_key - counter_value(key_scope(key)):
            raise InsufficientStorage(
                _(
                    "Your upload quota has no room for this upload. "
                    "Finish or delete some of your uploads, or try again later."
                ),
                reason="TEMPSTORE_QUOTA_PER_KEY has no room for the request's Content-Length",
            )


def check_free_space(nbytes: int = 0) -> None:
    """Raise InsufficientStorage if writing ``nbytes`` would leave the temp disk
    below ``TEMPSTORE_MIN_FREE_SPACE`` (one ``statvfs``, no database access)."""
    minimum = conf.MIN_FREE_SPACE
    if minimum and free_space() - nbytes < minimum:
        # The default message: the disk is full for everyone, not just this client.
        raise InsufficientStorage(
            reason="the temp disk has less free space than TEMPSTORE_MIN_FREE_SPACE",
        )


def cover(
    upload: TempUpload, size: int, *, bound: int | None = None, received: int | None = None
) -> int:
    """Make sure ``upload`` may hold ``size`` bytes; return how many it may hold.

    Called by the upload handler before it writes past what is covered. Takes a
    block (``BLOCK``, cut to ``bound``, the most the file can grow to) and, if
    the quota has no room for a block, exactly what is needed. Raises
    InsufficientStorage when even that does not fit, or when the temp disk
    would go below ``TEMPSTORE_MIN_FREE_SPACE``. ``received``, when given, is
    recorded as the row's ``size`` by the UPDATE that reserves (no extra statement).
    """
    want = max(size, upload.reserved) + BLOCK
    if bound is not None:
        want = max(size, min(want, bound))
    check_free_space(want - size)
    current = ledger()
    if not current.active:
        return want
    if want > upload.reserved:
        try:
            current.reserve(upload, want - upload.reserved, received=received)
        except InsufficientStorage:
            if want == size:
                raise
            current.reserve(upload, size - upload.reserved, received=received)
    return upload.reserved


def reserve(upload: TempUpload, nbytes: int) -> None:
    """Add ``nbytes`` to ``upload``'s reservation in every scope, or raise
    InsufficientStorage naming the limit hit (see ``QuotaLedger.reserve``)."""
    ledger().reserve(upload, nbytes)


def unreserve(upload: TempUpload, nbytes: int) -> int:
    """Give back up to ``nbytes`` of ``upload``'s reservation (see ``QuotaLedger.unreserve``)."""
    return ledger().unreserve(upload, nbytes)


def trim(upload: TempUpload) -> None:
    """Give back what a complete ``upload`` reserved beyond its size."""
    extra = upload.reserved - upload.size
    if extra >= TRIM_SLACK:
        ledger().unreserve(upload, extra)


@dataclass
class Usage:
    """The temp store's state, for the admin, the command line and monitoring."""

    #: Bytes of the pending temp files (their ``size``, as last recorded).
    used: int
    #: Bytes reserved against the quota (the counter).
    reserved: int
    quota: int | None
    #: Bytes free on the temp disk (``statvfs``).
    free_disk: int
    #: Number of rows in each state, every state present.
    counts: dict[str, int] = field(default_factory=dict)
    oldest_pending: datetime | None = None
    oldest_pending_id: uuid.UUID | None = None
    #: Number of pending uploads.
    pending: int = 0
    #: Bytes the pending rows say they hold; differs from ``reserved`` only
    #: after a crash, until ``reconcile()`` (the sweep) runs.
    held: int = 0
    max_file_size: int | None = None
    min_free_space: int = 0

    @property
    def percent(self) -> float | None:
        """Share of the quota reserved, in percent, or None without a quota."""
        if not self.quota:
            return None
        return min(100.0, 100.0 * self.reserved / self.quota)

    @property
    def drift(self) -> int:
        return self.reserved - self.held


def usage() -> Usage:
    """Bytes and counts of the temp store, for the admin, the CLI and monitoring."""
    rows = TempUpload.objects.using(conf.DATABASE)
    pending = rows.pending().aggregate(used=Sum("size"), held=Sum("reserved"), n=Count("pk"))
    oldest = rows.pending().order_by("created_at").values("pk", "created_at").first()
    counts = dict.fromkeys(State.values, 0)
    for row in rows.values("state").annotate(n=Count("pk")).order_by():
        counts[row["state"]] = row["n"]
    return Usage(
        used=pending["used"] or 0,
        reserved=counter_value(),
        quota=conf.QUOTA,
        free_disk=free_space(),
        counts=counts,
        oldest_pending=oldest["created_at"] if oldest else None,
        oldest_pending_id=oldest["pk"] if oldest else None,
        pending=pending["n"] or 0,
        held=pending["held"] or 0,
        max_file_size=conf.MAX_FILE_SIZE,
        min_free_space=conf.MIN_FREE_SPACE,
    )


def reconcile() -> int:
    """Set the quota counter to what pending rows really hold; return the drift fixed.

    Takes the counter's lock first (with a write, which also takes SQLite's
    lock at once), so that reservations and releases in flight finish before
    the sum is read, and new ones wait until the counter is set.
    """
    with transaction.atomic(using=conf.DATABASE):
        if not _counter().update(updated_at=timezone.now()):
            _create_counter()
        used = _counter().values_list("used", flat=True).get()
        held = _pending_row_sum()
        drift = used - held
        if drift:
            _counter().update(used=held, updated_at=timezone.now())
        by_key = dict(
            _rows()
            .pending()
            .exclude(quota_key="")
            .values_list("quota_key")
            .annotate(n=Sum("reserved"))
            .order_by()
        )
        keyed = QuotaCounter.objects.using(conf.DATABASE).filter(scope__startswith="key:")
        for counter in keyed.order_by("scope"):
            right = int(by_key.pop(counter.scope[len("key:") :], 0) or 0)
            if counter.used != right:
                keyed.filter(scope=counter.scope).update(used=right, updated_at=timezone.now())
        for key, n in by_key.items():
            QuotaCounter.objects.using(conf.DATABASE).update_or_create(
                scope=key_scope(key), defaults={"used": int(n or 0)}
            )
    return int(drift)


def _pending_row_sum() -> int:
    total = TempUpload.objects.using(conf.DATABASE).pending().aggregate(n=Sum("reserved"))["n"]
    return int(total or 0)
