"""State changes of a ``TempUpload``: each one updates the row, then the disk.

Every change applies a declared ``Transition`` (``models.Transitions``) with
``TempUploadQuerySet.transition()``, one conditional UPDATE from its allowed
states; so a row leaves the pending states exactly once, and a request, a task
and a sweep racing to close the same upload never double-release its quota or
double-send a signal. Every ending is an ``Outcome`` that goes through ``end()``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from django.db import connections, transaction
from django.utils import timezone
from django.utils.functional import LazyObject, empty

from . import process, quota, signals
from .conf import conf
from .exceptions import UploadClosed, UploadStateError
from .models import State, TempUpload, TempUploadQuerySet, Transition, Transitions
from .storage import (
    current_umask,
    ensure_dir,
    link_atomic,
    new_name,
    open_temp,
    part_path,
    unlink,
    unlink_temp,
)

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.dispatch import Signal
    from django.http import HttpRequest

logger = logging.getLogger("django_tempstore")


def clean_text(value: str | None, max_length: int) -> str:
    """Make client-supplied text safe to store: printable, bounded."""
    if not value:
        return ""
    text = "".join(ch for ch in str(value) if ch.isprintable())
    if len(text) <= max_length:
        return text
    stem, dot, ext = text.rpartition(".")
    if dot and 0 < len(ext) < 16:
        return stem[: max_length - len(ext) - 1] + "." + ext
    return text[:max_length]


def start(
    *,
    original_name: str | None,
    content_type: str | None = "",
    charset: str | None = "",
    field_name: str | None = "",
    request: HttpRequest | None = None,
    **fields: Any,
) -> TempUpload:
    """Write the row of a new upload; the file is created after this."""
    upload = prepare(
        original_name=original_name,
        content_type=content_type,
        charset=charset,
        field_name=field_name,
        request=request,
        **fields,
    )
    insert(upload)
    return upload


def prepare(
    *,
    original_name: str | None,
    content_type: str | None = "",
    charset: str | None = "",
    field_name: str | None = "",
    request: HttpRequest | None = None,
    **fields: Any,
) -> TempUpload:
    """The row of a new upload, not written yet (``insert()`` writes it)."""
    upload = TempUpload(
        **fields,
        name=new_name(),
        original_name=clean_text(original_name, 255),
        content_type=clean_text(content_type, 255),
        charset=clean_text(charset, 64),
        field_name=clean_text(field_name, 255),
        digest_algorithm=conf.DIGEST or "",
        host=clean_text(conf.HOSTNAME, 255),
        pid=os.getpid(),
        process_start=process.identity(),
    )
    if request is not None:
        upload.request_path = clean_text(request.path, 2048)
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            upload.user_id = user.pk
        upload.quota_key = quota.quota_key(request)
    return upload


def insert(upload: TempUpload) -> None:
    """Write the row of a ``prepare()``d upload, as ``receiving``; its file comes after."""
    upload.state = State.RECEIVING
    upload.updated_at = timezone.now()
    upload.save(using=conf.DATABASE, force_insert=True)


def _row(upload: TempUpload) -> TempUploadQuerySet:
    return TempUpload.objects.using(conf.DATABASE).filter(pk=upload.pk)


def heartbeat(upload: TempUpload, size: int) -> None:
    """Record that ``upload`` is alive; raise a 409 refusal if it was closed (swept)."""
    now = timezone.now()
    if not _row(upload).transition(Transitions.HEARTBEAT, size=size, updated_at=now):
        raise UploadClosed()
    upload.size, upload.updated_at = size, now


def complete(upload: TempUpload, size: int, digest: str, *, announce: bool = True) -> None:
    """Mark ``upload`` received; raise a 409 refusal if it was closed (swept) meanwhile.

    ``announce=False`` leaves sending ``upload_received`` to the caller.
    """
    now = timezone.now()
    fields = {
        "size": size,
        "digest": digest,
        "updated_at": now,
        "expires_at": now + conf.COMPLETE_TTL,
    }
    if not _row(upload).transition(Transitions.COMPLETE, **fields):
        raise UploadClosed()
    upload.state = State.COMPLETE
    for key, value in fields.items():
        setattr(upload, key, value)
    if announce:
        signals.upload_received.send(sender=TempUpload, upload=upload)


def keep(upload: TempUpload, ttl: float | None = None) -> None:
    """Let a complete upload outlive its request until ``ttl`` seconds from now."""
    now = timezone.now()
    expires_at = now + (conf.KEEP_TTL if ttl is None else timedelta(seconds=ttl))
    if not _row(upload).transition(Transitions.KEEP, expires_at=expires_at, updated_at=now):
        raise UploadStateError(f"Cannot keep upload {upload.pk} in state {upload.state!r}.")
    upload.state, upload.expires_at, upload.updated_at = State.KEPT, expires_at, now


def extend(upload: TempUpload, expires_at: datetime) -> bool:
    """Move a complete or kept upload's expiry to ``expires_at``; False if it was closed."""
    return bool(_row(upload).transition(Transitions.EXTEND, expires_at=expires_at))


#: The intent fields of a persist in progress, and their value when none is.
NO_INTENT: dict[str, Any] = {"persist_dir": "", "persist_part": "", "persist_name": ""}


def record_intent(upload: TempUpload, directory: Path, part: str, name: str, label: str) -> None:
    """Record, committed before any byte is copied, where a persist is about to write.

    The row moves to this process (host, pid, identity): if it dies mid-persist,
    this host's sweep finishes the persist or removes what it wrote.
    """
    fields = {
        "persist_dir": str(directory),
        "persist_part": part,
        "persist_name": name,
        "persisted_storage": label,
        "host": clean_text(conf.HOSTNAME, 255),
        "pid": os.getpid(),
        "process_start": process.identity(),
        "updated_at": timezone.now(),
    }
    if not TempUpload.objects.using(conf.DATABASE).pending_row(upload.pk).update(**fields):
        raise UploadStateError(f"Upload {upload.pk} was closed while it was being persisted.")
    for key, value in fields.items():
        setattr(upload, key, value)


def clear_intent(upload: TempUpload) -> None:
    """Forget the intent of a persist that failed cleanly (nothing left at the target)."""
    fields = {**NO_INTENT, "persisted_storage": ""}
    TempUpload.objects.using(conf.DATABASE).pending_row(upload.pk).update(**fields)
    for key, value in fields.items():
        setattr(upload, key, value)


def close(
    upload: TempUpload,
    transition: Transition,
    reason: str = "",
    *,
    where: dict[str, Any] | None = None,
    **fields: Any,
) -> bool:
    """Apply a closing ``transition`` to ``upload``; False if another process won.

    Releases the upload's quota reservation in the same transaction as the
    row's change. Does not touch the file. ``where`` narrows the row further.
    """
    now = timezone.now()
    values = {
        "reason": reason,
        "reserved": 0,
        "updated_at": now,
        "closed_at": now,
        **fields,
    }
    rows = _row(upload).filter(**(where or {}))
    if not quota.ledger().settle(rows, upload, transition, values):
        return False
    upload.state = transition.target or upload.state
    for key, value in values.items():
        setattr(upload, key, value)
    return True


#: The closing transition the sweep applies for each state it closes rows to.
_CLOSE_TO = {State.FAILED: Transitions.FAIL, State.DISCARDED: Transitions.DISCARD}


def close_many(uploads: Sequence[TempUpload], state: State, reason: str) -> list[TempUpload]:
    """Close many pending uploads at once as ``state`` (failed or discarded);
    return those this call closed.

    A few statements per call, whatever the number of rows (the sweep closes
    thousands): the quota counters and then the still-pending rows are locked,
    their ids and reservations read, and exactly those rows closed and their
    reservations released, in one transaction.
    """
    if not uploads:
        return []
    transition = _CLOSE_TO[state]
    by_pk = {upload.pk: upload for upload in uploads}
    now = timezone.now()
    ledger = quota.ledger()
    rows = TempUpload.objects.using(conf.DATABASE).filter(pk__in=list(by_pk))
    with transaction.atomic(using=conf.DATABASE):
        ledger.lock({upload.quota_key for upload in uploads})
        closing = list(
            rows.in_sources(transition)
            .select_for_update()
            .values_list("pk", "reserved", "quota_key")
        )
        if not closing:
            return []
        rows.filter(pk__in=[pk for pk, _, _ in closing]).transition(
            transition, reason=reason, updated_at=now, closed_at=now, reserved=0
        )
        held: dict[str, int] = {}
        for _, reserved, key in closing:
            held[key] = held.get(key, 0) + reserved
        ledger.release(held)
    result = []
    for pk, _, _ in closing:
        upload = by_pk[pk]
        upload.state, upload.reason, upload.reserved = state, reason, 0
        upload.updated_at, upload.closed_at = now, now
        result.append(upload)
    return result


#: A step run before the temp file is deleted; returns what undoes it if the
#: row turns out to be closed already (or None).
BeforeDelete = Callable[[TempUpload], "Callable[[], None] | None"]


@dataclass(frozen=True)
class Outcome:
    """How an upload ends: its transition, the signal sent, the step before the delete."""

    name: str
    transition: Transition
    signal: Signal
    before_delete: BeforeDelete | None = None
    #: Whether ``signal`` takes a ``reason`` (``upload_persisted`` does not).
    sends_reason: bool = True


def _keep_evidence(upload: TempUpload) -> Callable[[], None] | None:
    """Link the file into ``TEMPSTORE_QUARANTINE_DIR`` (mode 0600), if that is set."""
    target_dir = conf.QUARANTINE_DIR
    if target_dir is None:
        return None
    target = target_dir / upload.name
    try:
        ensure_dir(target_dir)
        link_atomic(upload.path, target, mode=0o600)
    except OSError:
        # Keeping evidence must never keep the file in the temp dir.
        logger.exception("django-tempstore could not quarantine %s", upload.pk)
        return None

    def remove_copy() -> None:
        unlink(target)  # No row points at the copy.

    return remove_copy


class Outcomes:
    """Every way an upload ends. All go through ``end()``, ``persist()`` excepted
    (its delete and signal wait for the commit)."""

    DISCARD = Outcome("discard", Transitions.DISCARD, signals.upload_discarded)
    FAIL = Outcome("fail", Transitions.FAIL, signals.upload_failed)
    REJECT = Outcome("reject", Transitions.FAIL, signals.upload_rejected)
    #: A refusal of a file that was kept (by the promotion task).
    REJECT_KEPT = Outcome("reject", Transitions.DISCARD, signals.upload_rejected)
    QUARANTINE = Outcome(
        "quarantine", Transitions.QUARANTINE, signals.upload_quarantined, _keep_evidence
    )
    #: A file that a Django storage moved itself (``FileSystemStorage.save()``).
    PERSIST = Outcome("persist", Transitions.PERSIST, signals.upload_persisted, sends_reason=False)
    #: A persist whose transaction rolled back.
    UNDO = Outcome("undo", Transitions.UNDO, signals.upload_discarded)


def end(
    upload: TempUpload,
    outcome: Outcome,
    reason: str = "",
    *,
    where: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    **signal_kwargs: Any,
) -> bool:
    """Delete an upload's temp file, close its row as ``outcome``, then send its signal.

    The file goes first and the row's close releases the quota after it, so the
    quota bounds the disk; if the row was closed meanwhile the file is deleted
    all the same and False is returned. The outcome's ``before_delete`` runs
    first (to keep a copy of the file, as quarantine does).
    """
    if upload.state not in outcome.transition.sources:
        return False
    undo = outcome.before_delete(upload) if outcome.before_delete is not None else None
    unlink_temp(upload.name)
    if not close(upload, outcome.transition, reason, where=where, **(fields or {})):
        if undo is not None:
            undo()
        return False
    if outcome.sends_reason:
        signal_kwargs["reason"] = reason
    outcome.signal.send(sender=TempUpload, upload=upload, **signal_kwargs)
    return True


def discard(upload: TempUpload, reason: str = "") -> bool:
    """Delete a pending upload's temp file; False if it was already closed."""
    return end(upload, Outcomes.DISCARD, reason)


def fail(upload: TempUpload, reason: str) -> bool:
    """Abort an upload that could not be received; delete its partial file."""
    return end(upload, Outcomes.FAIL, reason)


def reject(upload: TempUpload, message: str, status: int, *, kept: bool = False) -> bool:
    """Close a refused upload (``discarded`` if it was kept, else ``failed``)."""
    outcome = Outcomes.REJECT_KEPT if kept else Outcomes.REJECT
    return end(upload, outcome, f"rejected: {message}", status=status)


def quarantine(upload: TempUpload, signature: str) -> bool:
    """Close ``upload`` as ``quarantined``; False if it was already closed.

    The file is deleted, or moved into ``TEMPSTORE_QUARANTINE_DIR`` (mode
    0600, under its temp name) when that is set, for someone to inspect.
    """
    return end(upload, Outcomes.QUARANTINE, f"infected: {signature}", signature=signature)


def moved(upload: TempUpload, name: str) -> bool:
    """Close a complete upload that a Django storage moved to ``name`` itself."""
    return end(upload, Outcomes.PERSIST, fields={"persisted_name": name}, name=name, storage=None)


def storage_label(storage: Storage) -> str:
    cls = type(storage)
    return f"{cls.__module__}.{cls.__qualname__}"


def _unwrap(storage: Storage) -> Storage:
    """The real storage behind a lazy one such as ``default_storage``."""
    if isinstance(storage, LazyObject):
        if storage._wrapped is empty:
            storage._setup()
        return storage._wrapped  # type: ignore[no-any-return]
    return storage


def _plain_filesystem(storage: Storage) -> bool:
    if not isinstance(storage, FileSystemStorage):
        return False
    # A storage that may overwrite wants replacing, which a hard link cannot do.
    if getattr(storage, "_allow_overwrite", False):
        return False
    # A subclass that overrides _save() must get to run it.
    return type(storage)._save is FileSystemStorage._save  # type: ignore[attr-defined]


def persist(upload: TempUpload, name: str, storage: Storage | None = None) -> str:
    """Store ``upload`` permanently as ``name`` in ``storage``; return the final name.

    A partial file never appears under the final name and no existing file is
    overwritten. Inside a transaction, the temp file is removed on commit; if the
    transaction rolls back, what was stored is deleted (``UndoLog``), in a request
    or not.
    """
    storage = _unwrap(default_storage if storage is None else storage)
    if upload.state not in Transitions.PERSIST.sources:
        raise UploadStateError(f"Cannot persist upload {upload.pk} in state {upload.state!r}.")
    label = storage_label(storage)
    try:
        if _plain_filesystem(storage):
            final = _persist_to_filesystem(upload, name, storage, label)  # type: ignore[arg-type]
        else:
            with open_temp(upload.name) as fh:
                final = storage.save(name, File(fh, name=upload.original_name or name))
    except FileNotFoundError as exc:
        if not _row(upload).in_sources(Transitions.PERSIST).exists():
            # Closed by another process (a sweep, a task), which deleted the file.
            raise UploadStateError(
                f"Upload {upload.pk} was closed before it was persisted."
            ) from exc
        raise

    if not close(
        upload,
        Transitions.PERSIST,
        persisted_name=final,
        persisted_storage=label,
        **NO_INTENT,
    ):
        # Someone closed the upload meanwhile (a sweep of an expired keep()).
        storage.delete(final)
        raise UploadStateError(f"Upload {upload.pk} was closed while it was being persisted.")

    alias = _atomic_alias()
    if alias is not None:
        UndoLog.of(alias).add(Uncommitted(upload, storage, final, alias))
    else:
        _finish_persist(upload, final, storage)
    return final


def _finish_persist(upload: TempUpload, name: str, storage: Storage) -> None:
    unlink_temp(upload.name)
    # Only now (after the commit): receivers must not act on a file that a
    # rollback is about to delete.
    _announce_persisted(upload, name, storage)


@dataclass(eq=False)
class Uncommitted:
    """A persist made inside a transaction that has neither committed nor rolled back yet."""

    upload: TempUpload
    storage: Storage
    name: str
    alias: str
    #: Set by its on_commit() callback, which Django drops if its savepoint rolls back.
    survived: bool = False
    settled: bool = False


class UndoLog:
    """The uncommitted persists of one connection: finished on commit, undone on rollback.

    Django has no rollback hook. Each persist registers two callbacks: a marker
    through ``on_commit()``, which Django drops when a savepoint around the
    persist rolls back, and a check outside every savepoint, which runs when the
    outermost block commits: it finishes the persist if the marker ran, else
    undoes it. A rollback of the outermost block drops both; so while the log
    holds persists it wraps this connection's ``set_autocommit()``, which Django
    calls as the outermost block ends, and undoes what is left once autocommit is
    back after a rollback; and its ``close()``, for a connection lost mid-transaction.
    A request scope's end settles what is still open (``rollback_uncommitted``).
    """

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self.connection = connection
        self.entries: list[Uncommitted] = []

    @classmethod
    def of(cls, alias: str) -> UndoLog:
        connection = connections[alias]
        log: UndoLog | None = getattr(connection, "_tempstore_undo_log", None)
        if log is None:
            log = connection._tempstore_undo_log = cls(connection)  # type: ignore[attr-defined]
        return log

    def add(self, entry: Uncommitted) -> None:
        if not self.entries:
            # Instance attributes shadow the methods, for this connection only,
            # until the last entry is settled.
            self.connection.set_autocommit = self._set_autocommit  # type: ignore[method-assign]
            self.connection.close = self._close  # type: ignore[method-assign]
        self.entries.append(entry)
        entry.upload._tempstore_uncommitted = entry  # type: ignore[attr-defined]
        self.connection.on_commit(functools.partial(setattr, entry, "survived", True))
        # Outside every savepoint (on_commit() would tie it to the current ones),
        # and after the marker: so it runs on any commit of the outermost block.
        check = functools.partial(self._committed, entry)
        # (savepoint ids, callback, robust): Django 4.2's format; the stubs lag behind.
        self.connection.run_on_commit.append((set(), check, False))  # type: ignore[arg-type]

    def _committed(self, entry: Uncommitted) -> None:
        if entry.settled:
            return
        self.settle(entry)
        if entry.survived:
            _finish_persist(entry.upload, entry.name, entry.storage)
        else:
            # A savepoint around the persist rolled back; the rest committed.
            _undo(entry)

    def _set_autocommit(self, autocommit: bool, *args: Any, **kwargs: Any) -> None:
        connection = self.connection
        # Set by commit(), cleared once the commit's callbacks have run.
        committed = connection.run_commit_hooks_on_set_autocommit_on
        try:
            type(connection).set_autocommit(connection, autocommit, *args, **kwargs)
        finally:
            if autocommit and not connection.in_atomic_block:
                # After a commit, a check is left only if another callback raised
                # first: that persist stands (the sweep removes its temp file).
                for entry in list(self.entries):
                    self.settle(entry)
                    if not committed:
                        _undo_logged(entry)

    def _close(self) -> None:
        in_transaction = self.connection.in_atomic_block
        try:
            type(self.connection).close(self.connection)
        finally:
            if in_transaction:  # The database rolls the transaction back.
                for entry in list(self.entries):
                    self.settle(entry)
                    _undo_logged(entry, query=False)

    def settle(self, entry: Uncommitted) -> None:
        """Take ``entry`` out of the log (done with, one way or the other)."""
        entry.settled = True
        entry.upload._tempstore_uncommitted = None  # type: ignore[attr-defined]
        with contextlib.suppress(ValueError):
            self.entries.remove(entry)
        if not self.entries:
            for name in ("set_autocommit", "close"):
                self.connection.__dict__.pop(name, None)


def _undo_logged(entry: Uncommitted, *, query: bool = True) -> None:
    try:
        _undo(entry, query=query)
    except Exception:
        # Never masks the error that rolled the transaction back.
        logger.exception("django-tempstore could not undo the persist of %s", entry.upload.pk)


def _undo(entry: Uncommitted, *, query: bool = True) -> None:
    """Delete what a rolled-back persist stored; close the row if its change had committed.

    ``query=False``: the transaction's connection is gone, so ``upload`` is not read again.
    """
    upload = entry.upload
    entry.storage.delete(entry.name)
    if entry.alias == conf.DATABASE:
        # The row's change rolled back with the rest: pending again, with its reservation.
        if query:
            with contextlib.suppress(TempUpload.DoesNotExist):  # A test's rows roll back too.
                upload.refresh_from_db(using=conf.DATABASE)
        return
    # The row was closed on TEMPSTORE_DATABASE, outside the transaction that
    # rolled back: undo the persist by hand.
    end(
        upload,
        Outcomes.UNDO,
        "the transaction that persisted it rolled back",
        where={"persisted_name": entry.name},
        fields={"persisted_name": "", "persisted_storage": ""},
    )
    upload.refresh_from_db(using=conf.DATABASE)


def _atomic_alias() -> str | None:
    """The database whose open transaction a persist belongs to, if any.

    ``TEMPSTORE_DATABASE`` first; else any other alias in an atomic block (the
    application's transaction when ``TEMPSTORE_DATABASE`` is a separate alias).
    """
    if transaction.get_connection(conf.DATABASE).in_atomic_block:
        return conf.DATABASE
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            return str(connection.alias)
    return None


def _announce_persisted(upload: TempUpload, name: str, storage: Storage) -> None:
    signals.upload_persisted.send(sender=TempUpload, upload=upload, name=name, storage=storage)


def _fit_name(name: str, location: str) -> str:
    """Shorten ``name``'s last part to the filesystem's byte limit, keeping its extension.

    A client's 255-character filename can be 765 bytes in UTF-8; left alone it
    would make persist() fail with ENAMETOOLONG.
    """
    try:
        name_max = os.pathconf(location, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    head, _, base = name.rpartition("/")
    if len(os.fsencode(base)) <= name_max:
        return name
    stem, ext = os.path.splitext(base)
    if len(os.fsencode(ext)) > 16:
        stem, ext = base, ""
    # Room for the "_<7 chars>" get_available_name() adds to a taken name.
    budget = max(name_max - len(os.fsencode(ext)) - 8, 1)
    stem = os.fsencode(stem)[:budget].decode("utf-8", "ignore") or "file"
    return f"{head}/{stem}{ext}" if head else stem + ext


#: Names persist() tries before it gives up (each taken between check and link).
_PERSIST_TRIES = 100


def _persist_to_filesystem(
    upload: TempUpload, name: str, storage: FileSystemStorage, label: str
) -> str:
    name = _fit_name(storage.generate_filename(name), str(storage.location))
    for _ in range(_PERSIST_TRIES):
        name = storage.get_available_name(name)
        target = Path(storage.path(name))
        if storage.directory_permissions_mode is not None:
            from django.utils._os import safe_makedirs

            safe_makedirs(target.parent, storage.directory_permissions_mode, exist_ok=True)
        else:
            os.makedirs(target.parent, exist_ok=True)
        final = name.replace("\\", "/")
        part = part_path(target)
        record_intent(upload, target.parent, part.name, final, label)
        try:
            link_atomic(upload.path, target, mode=_file_mode(storage), part=part)
        except FileExistsError:
            continue  # Taken between get_available_name() and now: pick again.
        except BaseException:
            clear_intent(upload)
            raise
        return final
    clear_intent(upload)
    raise FileExistsError(f"No free name for {name!r} after {_PERSIST_TRIES} tries.")


def _file_mode(storage: FileSystemStorage) -> int:
    """The mode Django would give a new file: the storage's, else 0666 less the umask.

    The temp file is 0600, and a hard link shares its inode, so the mode is
    always set explicitly.
    """
    if storage.file_permissions_mode is not None:
        return int(storage.file_permissions_mode)
    return 0o666 & ~current_umask()


def row_exists(upload: TempUpload) -> bool:
    """Whether ``upload``'s row is in the database (a rolled-back insert is not)."""
    return _row(upload).exists()


def forget_rolled_back(upload: TempUpload) -> None:
    """Delete what an upload whose row's insert rolled back left: its temp file, and
    the stored copy of a persist made in the same transaction (no row explains either)."""
    entry: Uncommitted | None = getattr(upload, "_tempstore_uncommitted", None)
    if entry is not None and not entry.settled:
        # Usually the UndoLog has deleted it already, as the transaction rolled back.
        UndoLog.of(entry.alias).settle(entry)
        entry.storage.delete(entry.name)
    unlink_temp(upload.name)


def rollback_uncommitted(upload: TempUpload) -> None:
    """At a request's end: undo a persist of ``upload`` whose transaction is still unsettled.

    Its savepoint rolled back while an outer transaction is still open (a test's);
    a persist that is still in the row is left to that transaction's end.
    """
    entry: Uncommitted | None = getattr(upload, "_tempstore_uncommitted", None)
    if entry is None or entry.settled:
        return
    log = UndoLog.of(entry.alias)
    if entry.alias == conf.DATABASE:
        upload.refresh_from_db(using=conf.DATABASE)
        if upload.state == State.PERSISTED:
            return
    log.settle(entry)
    _undo(entry)
