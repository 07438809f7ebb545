"""The sweep: remove what the end of a request could not (expired, dead, orphaned files).

``sweep()`` is the one service behind ``manage.py sweep_temp``, the Celery task,
the startup hooks and the admin. It is safe to run at any moment and from several
places at once:

- rows are closed a batch at a time with ``lifecycle.close_many()``, a conditional
  UPDATE on the pending states, so two sweeps (or a sweep and a request) never
  both close one upload; only what this sweep actually closed or unlinked is counted;
- files are deleted only after the transaction that closed their row commits;
- only regular files whose name matches ``storage.NAME_RE``, directly inside
  ``TEMPSTORE_DIR``, are deleted; a symlink is never followed (nor removed);
- the directory is read with ``os.scandir`` and the table in keyset batches,
  so memory stays constant whatever the number of files and rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import lifecycle, process, quota, signals
from .conf import conf
from .models import PENDING_STATES, TERMINAL_STATES, State, SweepRun, TempUpload, Transitions
from .storage import NAME_RE, PART_PREFIX, open_dir

logger = logging.getLogger("django_tempstore")

#: A part file a persist names in its intent; nothing else is removed from a target directory.
PART_RE = re.compile(r"\A" + re.escape(PART_PREFIX) + r"[0-9a-f]{32}\.part\Z")

#: Rows read (and closed in one transaction) per query; names looked up per query.
BATCH_SIZE = 500
#: File names looked up per query (and unlinked in inode order) by the orphan pass.
ORPHAN_BATCH_SIZE = 10000
#: How many foreign names a report keeps as examples.
FOREIGN_EXAMPLES = 20

#: What a sweep removes, in the order it runs. Each kind counts items and bytes.
KINDS = ("expired", "stale", "dead", "missing", "orphan", "history")
#: Kinds whose items are files on disk (the others are rows only).
FILE_KINDS = ("expired", "stale", "dead", "orphan")

#: ``on_item(kind, name, nbytes)``: called once per item removed (or that would be).
ItemCallback = Callable[[str, str, int], None]

KIND_LABELS = {
    "expired": "expired upload",
    "stale": "upload with a stopped heartbeat",
    "dead": "upload of a dead process",
    "missing": "row whose file vanished",
    "orphan": "orphan file",
    "history": "old history row",
}


@dataclass
class SweepReport:
    """What one sweep removed (or, with ``dry_run``, would remove), per kind."""

    dry_run: bool = False
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    #: Entries of TEMPSTORE_DIR left alone: a name not ours, a symlink, a directory.
    foreign: int = 0
    foreign_examples: list[str] = field(default_factory=list)
    #: Bytes the quota counter was off by (fixed unless ``dry_run``); None if not checked.
    quota_drift: int | None = None
    #: Persists of dead processes this sweep finished (their target was complete).
    recovered: int = 0

    def add(self, kind: str, nbytes: int = 0) -> None:
        self.counts[kind] += 1
        self.bytes[kind] += nbytes

    def add_many(self, kind: str, count: int, nbytes: int) -> None:
        self.counts[kind] += count
        self.bytes[kind] += nbytes

    def add_foreign(self, name: str) -> None:
        self.foreign += 1
        if len(self.foreign_examples) < FOREIGN_EXAMPLES:
            self.foreign_examples.append(name)

    @property
    def total_files(self) -> int:
        """Temp files deleted (or that would be)."""
        return sum(self.counts[kind] for kind in FILE_KINDS)

    @property
    def total_rows(self) -> int:
        """Rows closed or deleted without a file to delete (vanished files, history)."""
        return self.counts["missing"] + self.counts["history"]

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form, stored in ``SweepRun.report``."""
        return {
            "dry_run": self.dry_run,
            "counts": dict(self.counts),
            "bytes": dict(self.bytes),
            "total_files": self.total_files,
            "total_rows": self.total_rows,
            "total_bytes": self.total_bytes,
            "foreign": self.foreign,
            "foreign_examples": list(self.foreign_examples),
            "quota_drift": self.quota_drift,
            "recovered": self.recovered,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepReport:
        """Rebuild a report from ``as_dict()`` output (a ``SweepRun.report``)."""
        report = cls(dry_run=bool(data.get("dry_run", False)))
        report.counts.update(data.get("counts", {}))
        report.bytes.update(data.get("bytes", {}))
        report.foreign = int(data.get("foreign", 0))
        report.foreign_examples = list(data.get("foreign_examples", []))
        report.quota_drift = data.get("quota_drift")
        report.recovered = int(data.get("recovered", 0))
        return report

    def summary(self) -> str:
        """One human line, e.g. for a log or a command's output."""
        verb = "Would delete" if self.dry_run else "Deleted"
        parts = [f"{self.counts[kind]} {kind}" for kind in FILE_KINDS if self.counts[kind]]
        detail = f" ({', '.join(parts)})" if parts else ""
        text = (
            f"{verb} {self.total_files} temp file{'s' if self.total_files != 1 else ''}"
            f"{detail}, {_human_bytes(self.total_bytes)}"
        )
        if self.counts["missing"]:
            closed = "would close" if self.dry_run else "closed"
            text += f"; {closed} {self.counts['missing']} row(s) whose file vanished"
        if self.counts["history"]:
            text += f"; {verb.lower()} {self.counts['history']} old history row(s)"
        if self.quota_drift:
            fixed = "off by" if self.dry_run else "corrected by"
            text += f"; quota counter {fixed} {self.quota_drift} bytes"
        if self.recovered:
            text += f"; finished {self.recovered} persist(s) of dead processes"
        if self.foreign:
            text += f"; left {self.foreign} foreign entr{'ies' if self.foreign != 1 else 'y'}"
        return text + "."


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def sweep(
    *,
    dry_run: bool = False,
    startup: bool = False,
    older_than: timedelta | None = None,
    trigger: str = "api",
    on_item: ItemCallback | None = None,
    record: bool = True,
) -> SweepReport:
    """Remove expired, dead and orphaned temp files and rows; return what was done.

    ``dry_run`` changes nothing and reports what would be removed. Every sweep
    removes this host's uploads whose process is gone (told apart from a new
    process with the same id by its recorded identity) and finishes or undoes
    their interrupted persists; ``startup`` also removes those of rows that
    carry no identity, judged by the process id alone (run it when the server
    starts). ``older_than`` overrides ``TEMPSTORE_STALE_AFTER`` and
    ``TEMPSTORE_ORPHAN_GRACE``. ``trigger`` is recorded on the ``SweepRun`` row
    ("command", "celery", "startup", ...). ``on_item(kind, name, nbytes)`` is
    called for each item removed.

    Raise ``storage.UnsafeTempDir`` (before touching anything) if
    ``TEMPSTORE_DIR`` is a symlink.

    Every call records a ``SweepRun``; an error is recorded there, then raised.
    With ``record=False`` (a dry run for a page view) only an error is recorded.
    """
    db = conf.DATABASE
    run = None
    if record:
        run = SweepRun.objects.using(db).create(
            host=conf.HOSTNAME[:255], trigger=trigger[:32], dry_run=dry_run
        )
    report = SweepReport(dry_run=dry_run)
    try:
        _Sweeper(report, dry_run=dry_run, older_than=older_than, on_item=on_item).run(
            startup=startup
        )
    except BaseException as exc:
        fields = {
            "finished_at": timezone.now(),
            "report": report.as_dict(),
            "error": "".join(traceback.format_exception_only(type(exc), exc)).strip()[:10000],
        }
        if run is None:
            SweepRun.objects.using(db).create(
                host=conf.HOSTNAME[:255], trigger=trigger[:32], dry_run=dry_run, **fields
            )
        else:
            SweepRun.objects.using(db).filter(pk=run.pk).update(**fields)
        raise
    if run is not None:
        SweepRun.objects.using(db).filter(pk=run.pk).update(
            finished_at=timezone.now(), report=report.as_dict()
        )
    return report


class _Sweeper:
    def __init__(
        self,
        report: SweepReport,
        *,
        dry_run: bool,
        older_than: timedelta | None,
        on_item: ItemCallback | None,
    ) -> None:
        self.report = report
        self.dry_run = dry_run
        self.on_item = on_item
        self.db = conf.DATABASE
        self.dir = conf.DIR
        self.host = conf.HOSTNAME
        self.shared = conf.SHARED_DIR
        self.now = timezone.now()
        self.stale_after = conf.STALE_AFTER if older_than is None else older_than
        self.orphan_grace = conf.ORPHAN_GRACE if older_than is None else older_than

    def run(self, *, startup: bool) -> None:
        try:
            # Every file operation below is relative to this descriptor: a swap
            # of TEMPSTORE_DIR for a symlink after this point reaches nothing.
            self.dir_fd: int | None = open_dir(self.dir, private=False)
        except FileNotFoundError:
            self.dir_fd = None
        try:
            self.run_passes(startup=startup)
        finally:
            if self.dir_fd is not None:
                os.close(self.dir_fd)

    def run_passes(self, *, startup: bool) -> None:
        # Process ids only mean something on their own host, even with a shared dir.
        mine = TempUpload.objects.using(self.db).filter(host=self.host, state__in=PENDING_STATES)
        self.recover_persists(mine.exclude(persist_name=""), startup=startup)

        pending = self.rows().filter(state__in=PENDING_STATES)
        # A resumable (tus) upload is receiving between requests: it ends by expiry only.
        expired = pending.filter(
            Q(state__in=(State.COMPLETE, State.KEPT)) | Q(state=State.RECEIVING, resumable=True),
            expires_at__lt=self.now,
        )
        self.close_rows("expired", expired, "the upload expired")

        stale = pending.filter(
            state=State.RECEIVING, resumable=False, updated_at__lt=self.now - self.stale_after
        )
        self.close_rows("stale", stale, "the upload's heartbeat stopped")

        self.close_rows(
            "dead",
            # A resumable (tus) upload outlives the process of each of its requests.
            mine.filter(state__in=(State.RECEIVING, State.COMPLETE)).exclude(
                state=State.RECEIVING, resumable=True
            ),
            "the process that received the upload died",
            keep_if=lambda row: not self.process_gone(row, startup=startup),
        )

        # A request may move its own complete file away (Django's file_move_safe)
        # before it closes the row: only judge rows that have been quiet a while.
        missing = pending.filter(
            state__in=(State.COMPLETE, State.KEPT), updated_at__lt=self.now - self.stale_after
        )
        self.close_rows(
            "missing",
            missing,
            "the temp file vanished",
            keep_if=lambda row: self.stat(row.name) is not None,
        )

        self.sweep_orphans()
        self.delete_history()

        if self.dry_run:
            # What reconcile() would fix, read the same way, without its lock or write.
            self.report.quota_drift = quota.counter_value() - quota._pending_row_sum()
        else:
            self.report.quota_drift = quota.reconcile()

    @staticmethod
    def process_gone(row: TempUpload, *, startup: bool) -> bool:
        gone = process.is_gone(row.pid, row.process_start)
        if gone is None:
            # No identity to compare (an old row, no /proc): the pid alone is
            # trusted only at startup, when no older worker can still run.
            return startup and not _pid_alive(row.pid)
        return gone

    def recover_persists(self, queryset: QuerySet[TempUpload], *, startup: bool) -> None:
        """Finish or undo the persists that a dead process left half done.

        The final name appears only once the copy is complete and synced, so a
        target that matches the upload's size (and digest) is the upload: its
        row becomes persisted. Anything else at the target is someone else's
        file and stays; the part file always goes.
        """
        for batch in _batches(queryset):
            for row in batch:
                if not self.process_gone(row, startup=startup) or self.dry_run:
                    continue
                directory = Path(row.persist_dir)
                target = directory / Path(row.persist_name).name
                if PART_RE.match(row.persist_part):
                    _unlink_quietly(directory / row.persist_part)
                if self.target_matches(row, target):
                    if lifecycle.close(
                        row,
                        Transitions.PERSIST,
                        "the persist was finished by the sweep",
                        persisted_name=row.persist_name,
                        **lifecycle.NO_INTENT,
                    ):
                        self.delete_file(row.name)
                        self.report.recovered += 1
                        signals.upload_persisted.send_robust(
                            sender=TempUpload, upload=row, name=row.persist_name, storage=None
                        )
                    continue
                lifecycle.clear_intent(row)

    def target_matches(self, row: TempUpload, target: Path) -> bool:
        try:
            st = os.lstat(target)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != row.size:
            return False
        mine = self.stat(row.name)
        if mine is not None and (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino):
            return True  # The hard link of a same-filesystem persist.
        if not (row.digest and row.digest_algorithm in hashlib.algorithms_available):
            return True  # Size is all there is to compare.
        digest = hashlib.new(row.digest_algorithm)
        try:
            fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return False
        with os.fdopen(fd, "rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest() == row.digest

    def stat(self, name: str) -> os.stat_result | None:
        """``lstat`` of ``name`` in the temp dir, through its descriptor; None if absent."""
        if self.dir_fd is None:
            return None
        try:
            return os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return None

    def rows(self) -> QuerySet[TempUpload]:
        rows = TempUpload.objects.using(self.db).all()
        return rows if self.shared else rows.filter(host=self.host)

    def item(self, kind: str, name: str, nbytes: int) -> None:
        self.report.add(kind, nbytes)
        if self.on_item is not None:
            self.on_item(kind, name, nbytes)

    def close_rows(
        self,
        kind: str,
        queryset: QuerySet[TempUpload],
        reason: str,
        keep_if: Callable[[TempUpload], bool] | None = None,
    ) -> None:
        """Close the pending rows of ``queryset`` and delete their files."""
        for batch in _batches(queryset):
            batch = [row for row in batch if keep_if is None or not keep_if(row)]
            ours = []
            for row in batch:
                if NAME_RE.match(row.name):
                    ours.append(row)
                else:
                    self.report.add_foreign(row.name)
            if self.dry_run:
                for row in ours:
                    self.item(kind, row.name, 0 if kind == "missing" else self.size(row.name))
                continue
            closed = self.close_batch(kind, ours, reason)
            # Every file goes before any receiver runs: a receiver (or on_item)
            # that raises must not leave the files of closed rows behind.
            sizes = [0 if kind == "missing" else self.delete_file(row.name) for row, _ in closed]
            for (row, state), nbytes in zip(closed, sizes, strict=True):
                self.item(kind, row.name, nbytes)
                signal = (
                    signals.upload_failed if state == State.FAILED else signals.upload_discarded
                )
                responses = signal.send_robust(sender=TempUpload, upload=row, reason=row.reason)
                for receiver, response in responses:
                    if isinstance(response, Exception):
                        logger.error(
                            "django-tempstore: receiver %r of a sweep's signal for %s raised",
                            receiver,
                            row.name,
                            exc_info=response,
                        )

    def size(self, name: str) -> int:
        st = self.stat(name)
        return 0 if st is None else st.st_size

    def delete_file(self, name: str) -> int:
        """Delete the temp file ``name`` of a closed row; return its size (0 if gone)."""
        nbytes = self.size(name)
        if self.dir_fd is None:
            return nbytes
        try:
            # Never through a symlink: unlink removes the link, not its target.
            os.unlink(name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            pass
        except OSError:
            # Its row is closed: the orphan pass retries once TEMPSTORE_ORPHAN_GRACE passes.
            logger.exception("django-tempstore could not delete %s", self.dir / name)
        return nbytes

    def close_batch(
        self,
        kind: str,
        rows: list[TempUpload],
        reason: str,
    ) -> list[tuple[TempUpload, State]]:
        if not rows:
            return []
        # A partial file (or none at all) fails; a complete one is discarded.
        failed = [row for row in rows if row.state == State.RECEIVING or kind == "missing"]
        discarded = [row for row in rows if row.state != State.RECEIVING and kind != "missing"]
        return [
            (row, state)
            for state, group in ((State.FAILED, failed), (State.DISCARDED, discarded))
            for row in lifecycle.close_many(group, state, reason)
        ]

    def sweep_orphans(self) -> None:
        """Delete files with no row, or a terminal row, older than the grace period.

        The directory is read first and the table after: a file seen by the
        scan had its row written before it was created, so the lookup that
        follows sees that row. A file created after the lookup is never a
        candidate (the scan of its batch is over).
        """
        if self.dir_fd is None:
            return
        dir_fd = self.dir_fd
        cutoff = (self.now - self.orphan_grace).timestamp()
        match, is_regular = NAME_RE.match, stat.S_ISREG
        batch: list[tuple[int, str, int]] = []
        # scandir() of a descriptor reads the directory it was opened on, and
        # entry.stat() is an fstatat() on it that never follows a symlink.
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                name = entry.name
                if not match(name):
                    self.report.add_foreign(name)
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not is_regular(st.st_mode):
                    self.report.add_foreign(name)
                elif st.st_mtime < cutoff:
                    batch.append((st.st_ino, name, st.st_size))
                    if len(batch) >= ORPHAN_BATCH_SIZE:
                        self.delete_orphans(batch, dir_fd)
                        batch = []
        self.delete_orphans(batch, dir_fd)

    def delete_orphans(self, batch: list[tuple[int, str, int]], dir_fd: int) -> None:
        if not batch:
            return
        # Rows are written before files, so a live upload always has a pending row.
        tracked = TempUpload.objects.using(self.db)
        known = tracked.pending_names([name for _, name, _ in batch])
        # In inode order, like find (gnulib fts sorts big directories so): in the
        # directory's own order (a hash order on ext4) each unlink dirties another
        # inode table block, and deleting was 2.5 to 5 times slower on disk.
        batch.sort()
        unlink = os.unlink
        removed: list[tuple[str, int]] = []
        for _, name, nbytes in batch:
            if name in known:
                continue
            if not self.dry_run:
                try:
                    unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # Another sweep got it first.
                except OSError:
                    logger.exception("django-tempstore could not delete %s", self.dir / name)
                    continue
            removed.append((name, nbytes))
        if self.on_item is None:
            self.report.add_many("orphan", len(removed), sum(nbytes for _, nbytes in removed))
        else:
            for name, nbytes in removed:
                self.item("orphan", name, nbytes)

    def delete_history(self) -> None:
        """Delete terminal rows closed more than TEMPSTORE_HISTORY ago, in id batches.

        Every host's: a terminal row has no file, and the delete is conditional.
        """
        old = (
            TempUpload.objects.using(self.db)
            .filter(state__in=TERMINAL_STATES, closed_at__lt=self.now - conf.HISTORY)
            .order_by("pk")
        )
        last = None
        while True:
            page = old if last is None else old.filter(pk__gt=last)
            ids = list(page.values_list("pk", flat=True)[:BATCH_SIZE])
            if not ids:
                return
            last = ids[-1]
            if self.dry_run:
                for _ in ids:
                    self.report.add("history")
                continue
            with transaction.atomic(using=self.db):
                deleted, _ = old.filter(pk__in=ids).delete()
            for _ in range(deleted):
                self.report.add("history")


def _batches(queryset: QuerySet[TempUpload]) -> Iterator[list[TempUpload]]:
    """Yield ``queryset`` in primary-key order, ``BATCH_SIZE`` rows at a time."""
    queryset = queryset.order_by("pk")
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        batch = list(page[:BATCH_SIZE])
        if not batch:
            return
        last = batch[-1].pk
        yield batch


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        logger.exception("django-tempstore could not delete %s", path)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Someone else's process: alive.
    return True


def last_run(*, host: str | None = None) -> SweepRun | None:
    """The most recent finished ``SweepRun`` (of ``host`` if given), for monitoring."""
    runs = SweepRun.objects.using(conf.DATABASE).filter(finished_at__isnull=False)
    if host is not None:
        runs = runs.filter(host=host)
    return runs.order_by("-started_at").first()


__all__ = ["KINDS", "FILE_KINDS", "SweepReport", "last_run", "sweep"]
