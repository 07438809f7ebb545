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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import Count, F, QuerySet, Sum
from django.utils import timezone

from .conf import conf
from .exceptions import FileTooLarge, InsufficientStorage, UploadClosed
from .models import (
    PENDING_STATES,
    QuotaCounter,
    State,
    TempUpload,
    TempUploadQuerySet,
    Transition,
)
from .storage import free_space

SCOPE = "default"
#: Reservations are taken in blocks of up to this many bytes (never past what
#: the file can grow to), so that most uploads take a single reservation.
BLOCK = 4 * 1024 * 1024
#: A complete file gives back what it reserved beyond its size only when it is
#: at least this much; the rest goes back when the upload closes.
TRIM_SLACK = 64 * 1024


class _Retry(Exception):
    """Roll back the transaction and try again (or give up)."""


def _counter() -> QuerySet[QuotaCounter]:
    return QuotaCounter.objects.using(conf.DATABASE).filter(scope=SCOPE)


def _create_counter() -> bool:
    """Create the counter row if it is missing; True if this call created it."""
    return QuotaCounter.objects.using(conf.DATABASE).get_or_create(scope=SCOPE)[1]


def _move_counter(delta: int, limit: int | None = None) -> bool:
    rows = _counter()
    if limit is not None:
        rows = rows.filter(used__lte=limit - delta)
    return bool(rows.update(used=F("used") + delta, updated_at=timezone.now()))


def pending_row(upload: TempUpload) -> QuerySet[TempUpload]:
    return TempUpload.objects.using(conf.DATABASE).filter(pk=upload.pk, state__in=PENDING_STATES)


def counter_value() -> int:
    """Bytes the counter says are reserved (0 if it does not exist yet)."""
    return _counter().values_list("used", flat=True).first() or 0


def check_request(content_length: int | None) -> None:
    """Refuse, before its body is read, a request that cannot fit.

    ``content_length`` includes the multipart framing, so this errs by a few
    hundred bytes on the side of refusing. One database read when
    ``TEMPSTORE_QUOTA`` is set; none otherwise.
    """
    check_free_space(content_length or 0)
    limit = conf.QUOTA
    if limit is None or not content_length:
        return
    if content_length > limit:
        # No amount of waiting makes it fit: 413, not 507.
        raise FileTooLarge(
            "The upload is larger than this site can hold. Send fewer or smaller files.",
            reason="the request's Content-Length is larger than TEMPSTORE_QUOTA",
        )
    if content_length > limit - counter_value():
        raise InsufficientStorage(
            reason="TEMPSTORE_QUOTA has no room for the request's Content-Length"
        )


def check_free_space(nbytes: int = 0) -> None:
    """Raise InsufficientStorage if writing ``nbytes`` would leave the temp disk
    below ``TEMPSTORE_MIN_FREE_SPACE`` (one ``statvfs``, no database access)."""
    minimum = conf.MIN_FREE_SPACE
    if minimum and free_space() - nbytes < minimum:
        raise InsufficientStorage(
            reason="the temp disk has less free space than TEMPSTORE_MIN_FREE_SPACE"
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
    recorded as the row's ``size`` by the same UPDATE that reserves (the admin's
    live progress, at no extra statement).
    """
    want = max(size, upload.reserved) + BLOCK
    if bound is not None:
        want = max(size, min(want, bound))
    check_free_space(want - size)
    if conf.QUOTA is None:
        return want
    if want > upload.reserved:
        try:
            reserve(upload, want - upload.reserved, received=received)
        except InsufficientStorage:
            if want == size:
                raise
            reserve(upload, size - upload.reserved, received=received)
    return upload.reserved


def reserve(upload: TempUpload, nbytes: int, *, received: int | None = None) -> None:
    """Add ``nbytes`` to ``upload``'s reservation, or raise InsufficientStorage.

    Two UPDATEs in one transaction: the counter (conditional on the quota),
    then the upload's row (conditional on it being pending), which also records
    ``received`` as its ``size`` when given.
    """
    limit = conf.QUOTA
    if nbytes <= 0 or limit is None:
        return
    for attempt in range(2):
        try:
            with transaction.atomic(using=conf.DATABASE):
                if not _move_counter(nbytes, limit):
                    raise _Retry
                fields: dict[str, Any] = {"reserved": F("reserved") + nbytes}
                if received is not None:
                    fields["size"] = received
                if not pending_row(upload).update(**fields):
                    raise UploadClosed()
        except _Retry:
            if attempt == 0 and _create_counter():
                continue
            raise InsufficientStorage(reason="TEMPSTORE_QUOTA is used up") from None
        upload.reserved += nbytes
        if received is not None:
            upload.size = received
        return


def trim(upload: TempUpload) -> None:
    """Give back what a complete ``upload`` reserved beyond its size."""
    extra = upload.reserved - upload.size
    if extra < TRIM_SLACK:
        return
    with contextlib.suppress(_Retry), transaction.atomic(using=conf.DATABASE):
        _move_counter(-extra)
        rows = pending_row(upload).filter(reserved=upload.reserved)
        if not rows.update(reserved=F("reserved") - extra):
            raise _Retry  # Closed meanwhile: close() released it all.
        upload.reserved -= extra


def lock_counter() -> None:
    """Inside a transaction, take the counter row's lock before any upload row's.

    ``reserve()`` moves the counter first too: one lock order, no deadlocks.
    SQLite locks the whole database on the first write instead (a read first
    would make the upgrade fail at once rather than wait), so nothing is done there.
    """
    if conf.QUOTA is not None and connections[conf.DATABASE].vendor != "sqlite":
        list(_counter().select_for_update().values_list("pk", flat=True))


def release(nbytes: int) -> None:
    """Take ``nbytes`` off the counter (the caller has zeroed the rows that held them)."""
    if nbytes:
        _move_counter(-nbytes)


def settle(
    rows: TempUploadQuerySet, upload: TempUpload, transition: Transition, values: dict[str, Any]
) -> bool:
    """Apply ``transition`` to ``rows`` (``upload``'s row) with ``values``, which
    set ``reserved`` to 0, and release what the row held, in one transaction.
    False if the row was no longer in one of the transition's sources.

    Used by ``lifecycle.close()``: the release happens exactly once, and a
    ``reconcile()`` never sees the row closed with the counter not yet moved.
    """
    while True:
        held = upload.reserved
        try:
            with transaction.atomic(using=conf.DATABASE) if held else contextlib.nullcontext():
                if held:
                    _move_counter(-held)
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
    return int(drift)


def _pending_row_sum() -> int:
    total = TempUpload.objects.using(conf.DATABASE).pending().aggregate(n=Sum("reserved"))["n"]
    return int(total or 0)
