"""Bytes held by pending temp files, bounded by ``TEMPSTORE_QUOTA`` across processes.

The bound is one counter row per scope, moved only by a conditional UPDATE
(``used + n <= quota``): the database serializes concurrent reservations, so
the total can never pass the quota, whatever the number of processes or hosts
that share the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.db.models import Count, F, Min, Sum
from django.utils import timezone

from .conf import conf
from .exceptions import InsufficientStorage
from .models import QuotaCounter, State, TempUpload
from .storage import free_space

SCOPE = "default"
#: Reservations are taken in blocks of at least this many bytes, to keep the
#: database round trips per upload few.
BLOCK = 4 * 1024 * 1024


def block_for(nbytes: int) -> int:
    return max(nbytes, BLOCK)


def check_request(content_length: int | None) -> None:
    """Refuse a request before its body is read when it cannot fit."""
    check_free_space()
    limit = conf.QUOTA
    if limit is None or not content_length:
        return
    counter = QuotaCounter.objects.using(conf.DATABASE).filter(scope=SCOPE).first()
    used = counter.used if counter else 0
    if content_length > limit - used:
        raise InsufficientStorage()


def reserve(upload: TempUpload, nbytes: int) -> None:
    """Add ``nbytes`` to ``upload``'s reservation, or raise InsufficientStorage."""
    if nbytes <= 0:
        return
    limit = conf.QUOTA
    if limit is None:
        upload.reserved += nbytes
        return
    db = conf.DATABASE
    counter = QuotaCounter.objects.using(db).filter(scope=SCOPE)
    with transaction.atomic(using=db):
        if limit is not None:
            moved = counter.filter(used__lte=limit - nbytes).update(
                used=F("used") + nbytes, updated_at=timezone.now()
            )
            if not moved:
                if not counter.exists():
                    QuotaCounter.objects.using(db).get_or_create(scope=SCOPE)
                    return reserve(upload, nbytes)
                raise InsufficientStorage()
        TempUpload.objects.using(db).filter(pk=upload.pk).update(reserved=F("reserved") + nbytes)
    upload.reserved += nbytes


def trim(upload: TempUpload) -> None:
    """Give back what ``upload`` reserved beyond its final size."""
    extra = upload.reserved - upload.size
    if extra <= 0:
        return
    if conf.QUOTA is not None:
        with transaction.atomic(using=conf.DATABASE):
            TempUpload.objects.using(conf.DATABASE).filter(pk=upload.pk).update(
                reserved=F("reserved") - extra
            )
            release(extra)
    upload.reserved -= extra


def release(nbytes: int) -> None:
    """Give back ``nbytes`` reserved by an upload that has just closed."""
    if nbytes > 0 and conf.QUOTA is not None:
        QuotaCounter.objects.using(conf.DATABASE).filter(scope=SCOPE).update(
            used=F("used") - nbytes, updated_at=timezone.now()
        )


def check_free_space() -> None:
    """Raise InsufficientStorage when the temp disk is below TEMPSTORE_MIN_FREE_SPACE."""
    minimum = conf.MIN_FREE_SPACE
    if minimum and free_space() < minimum:
        raise InsufficientStorage()


@dataclass
class Usage:
    used: int
    reserved: int
    quota: int | None
    free_disk: int
    counts: dict[str, int] = field(default_factory=dict)
    oldest_pending: datetime | None = None

    @property
    def percent(self) -> float | None:
        if not self.quota:
            return None
        return min(100.0, 100.0 * self.reserved / self.quota)


def usage() -> Usage:
    """Bytes and counts of the temp store, for the admin, the CLI and monitoring."""
    db = conf.DATABASE
    rows = TempUpload.objects.using(db)
    pending = rows.pending().aggregate(used=Sum("size"), oldest=Min("created_at"))
    counts = dict.fromkeys(State.values, 0)
    for row in rows.values("state").annotate(n=Count("pk")).order_by():
        counts[row["state"]] = row["n"]
    counter = QuotaCounter.objects.using(db).filter(scope=SCOPE).first()
    return Usage(
        used=pending["used"] or 0,
        reserved=counter.used if counter else 0,
        quota=conf.QUOTA,
        free_disk=free_space(),
        counts=counts,
        oldest_pending=pending["oldest"],
    )


def reconcile() -> int:
    """Set the quota counter to what pending rows really hold; return the drift fixed.

    Locks the counter row first, so that reservations in flight finish before
    the sum is taken and new ones wait until the counter is set.
    """
    db = conf.DATABASE
    with transaction.atomic(using=db):
        QuotaCounter.objects.using(db).get_or_create(scope=SCOPE)
        counter = QuotaCounter.objects.using(db).select_for_update().get(scope=SCOPE)
        held = TempUpload.objects.using(db).pending().aggregate(n=Sum("reserved"))["n"] or 0
        drift = counter.used - held
        if drift:
            QuotaCounter.objects.using(db).filter(scope=SCOPE).update(
                used=held, updated_at=timezone.now()
            )
    return int(drift)
