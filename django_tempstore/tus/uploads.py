"""The tus upload service: every write to a resumable ``TempUpload`` goes through here.

A resumable upload is a ``receiving`` row with ``resumable`` set, whose file
grows across requests. Its ``size`` is the offset that HEAD reports: it only
moves after the bytes below it are on disk (``fdatasync``), and a PATCH first
cuts the file back to it, so bytes a killed worker wrote past it are never
counted. ``received`` is what the admin shows: the bytes that have arrived,
durable or not, recorded every ``quota.BLOCK`` bytes of a PATCH and reset to
the offset when a PATCH starts or fails. The digest of what is below the offset
is carried from PATCH to PATCH in the process that wrote it (``RunningDigests``). One
request at a time writes to an upload: it holds the row's lock
(``lock_owner``/``locked_until``), taken by a conditional UPDATE, renewed while
bytes arrive, and taken over when its holder's process is gone or it expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from django.core.exceptions import RequestAborted
from django.db.models import F, Q, QuerySet
from django.http.request import UnreadablePostError
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from django_tempstore import lifecycle, process, quota, storage, validators
from django_tempstore.conf import conf
from django_tempstore.exceptions import FileTooLarge, InsufficientStorage, UploadRejected
from django_tempstore.files import TempStoreUploadedFile
from django_tempstore.handlers import OverlappedHash, RequestScope, prime_allocator
from django_tempstore.models import State, TempUpload
from django_tempstore.storage import create_temp

from . import protocol

if TYPE_CHECKING:
    from django.http import HttpRequest

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class TusError(UploadRejected):
    """A tus request refused with ``status`` and a message that says what to do."""

    code = "tus_error"

    def __init__(self, status: int, message: str, *, reason: str = "") -> None:
        super().__init__(message, status=status, reason=reason)


def not_found() -> TusError:
    return TusError(404, _("No such upload. Create a new one."))


def gone() -> TusError:
    return TusError(protocol.GONE, _("This upload expired or was deleted. Create a new one."))


def locked() -> TusError:
    return TusError(
        protocol.LOCKED,
        _("Another request is writing to this upload. Wait for it, then ask for the offset."),
    )


def permitted(request: HttpRequest, action: str, upload: TempUpload | None) -> bool:
    check = import_string(conf.TUS_PERMISSION)
    return bool(check(request, action, upload))


def parse_metadata(value: str) -> dict[str, str]:
    """Decode ``Upload-Metadata`` ("key base64value,key2"); raise TusError 400 if malformed."""
    result: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        key, _sep, encoded = pair.partition(" ")
        try:
            result[key[:255]] = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise TusError(
                400, _("Upload-Metadata is not a list of keys with base64 values.")
            ) from None
    return result


def parse_checksum(value: str) -> tuple[str, bytes] | None:
    """Decode ``Upload-Checksum`` ("sha1 base64digest")."""
    if not value:
        return None
    algorithm, _sep, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in protocol.CHECKSUM_ALGORITHMS:
        raise TusError(
            400,
            _("Upload-Checksum uses an algorithm this server does not support: use %(list)s.")
            % {"list": ", ".join(protocol.CHECKSUM_ALGORITHMS)},
        )
    try:
        return algorithm, base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise TusError(400, _("Upload-Checksum's digest is not base64.")) from None


def max_size() -> int | None:
    """The largest upload this server could take (``Tus-Max-Size``)."""
    limits = [v for v in (conf.MAX_FILE_SIZE, conf.QUOTA) if v is not None]
    return min(limits) if limits else None


def check_length(length: int) -> None:
    limit = max_size()
    if limit is not None and length > limit:
        raise FileTooLarge.for_limit(limit)


def get(upload_id: str) -> TempUpload:
    """The resumable upload ``upload_id``; raise 404 if unknown, 410 if it ended."""
    try:
        pk = uuid.UUID(upload_id)
    except ValueError:
        raise not_found() from None
    upload = TempUpload.objects.using(conf.DATABASE).filter(pk=pk, resumable=True).first()
    if upload is None:
        raise not_found()
    if not upload.is_pending or _expired(upload):
        # A finished upload past its expiry is gone too, before the sweep removes it.
        raise gone()
    return upload


def _expired(upload: TempUpload) -> bool:
    return upload.expires_at is not None and upload.expires_at <= timezone.now()


class RunningDigests:
    """The digest of each upload's first ``offset`` bytes, kept by the process that wrote them.

    A ``hashlib`` object cannot be stored in the row (it does not pickle), so a
    PATCH leaves its digest here, keyed by upload and offset, and the next PATCH
    goes on from it when it lands in this process at that offset (always, under
    one sync worker). Otherwise the digest is computed by reading the file when
    the upload completes. The offset never moves back and the bytes below it are
    never rewritten, so a digest at the upload's current offset is the digest of
    what is on disk.
    """

    #: Uploads remembered per process; the oldest is forgotten first.
    LIMIT = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: OrderedDict[uuid.UUID, tuple[int, Any]] = OrderedDict()

    def take(self, upload: TempUpload, offset: int) -> Any:
        """Remove and return the digest of ``upload``'s first ``offset`` bytes, or None."""
        with self._lock:
            entry = self._states.pop(upload.pk, None)
        return entry[1] if entry is not None and entry[0] == offset else None

    def put(self, upload: TempUpload, offset: int, state: Any) -> None:
        with self._lock:
            self._states[upload.pk] = (offset, state)
            self._states.move_to_end(upload.pk)
            while len(self._states) > self.LIMIT:
                self._states.popitem(last=False)


running_digests = RunningDigests()


def create(
    request: HttpRequest,
    *,
    length: int | None,
    metadata: dict[str, str],
    concat: str = "",
) -> TempUpload:
    """Write the row, reserve ``length`` bytes of quota, create the empty file."""
    if length is not None:
        check_length(length)
    quota.check_free_space(length or 0)
    now = timezone.now()
    upload = lifecycle.start(
        original_name=metadata.get("filename") or metadata.get("name") or "",
        content_type=metadata.get("filetype") or metadata.get("type") or "",
        request=request,
        resumable=True,
        upload_length=length,
        upload_metadata=metadata,
        concat=concat,
        expires_at=now + conf.TUS_EXPIRY,
    )
    try:
        if length:
            quota.reserve(upload, length)
        create_temp(upload.name).close()
        # The file's name is durable with it: a PATCH's sync_data() covers only its bytes.
        storage.fsync_dir(conf.DIR)
    except InsufficientStorage as exc:
        lifecycle.fail(upload, exc.reason)
        raise
    except OSError as exc:
        lifecycle.fail(upload, f"could not create the temp file: {exc}")
        raise UploadRejected(
            _("The server cannot take uploads right now. Try again later."), status=503
        ) from exc
    return upload


def _receiving(upload: TempUpload) -> QuerySet[TempUpload]:
    return TempUpload.objects.using(conf.DATABASE).filter(pk=upload.pk, state=State.RECEIVING)


def _holder_is_dead(owner: str) -> bool:
    """True if ``owner`` ("host:pid[.start]:token") is a process of this host that is gone.

    A zombie counts as gone (a killed worker whose arbiter died too may never be
    reaped), and so does a pid that now belongs to a process started later.
    """
    try:
        host, who, _token = owner.rsplit(":", 2)
        pid, _, started = who.partition(".")
        number = int(pid)
    except ValueError:
        return True
    if host != conf.HOSTNAME or number == os.getpid():
        return False
    now = process.start_ticks(number)
    if now is None:
        try:
            os.kill(number, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        # It answers signals: a zombie if /proc shows it without a start time,
        # alive where there is no /proc to ask.
        return os.path.isdir(f"/proc/{number}")
    return bool(started) and now != started


def acquire(upload: TempUpload) -> str:
    """Take ``upload``'s lock and return its token; raise 423 while a live request holds it."""
    me = os.getpid()
    token = f"{conf.HOSTNAME}:{me}.{process.start_ticks(me) or ''}:{secrets.token_hex(8)}"
    now = timezone.now()
    until = now + conf.TUS_LOCK_TIMEOUT
    # ``received`` goes back to the offset: what a killed PATCH showed past it is gone.
    values: dict[str, Any] = {"lock_owner": token, "locked_until": until, "received": F("size")}
    rows = _receiving(upload)
    free = Q(lock_owner="") | Q(locked_until__lt=now)
    # One statement when the row is still as read: nothing to read again.
    unchanged = rows.filter(
        size=upload.size, upload_length=upload.upload_length, reserved=upload.reserved
    )
    if unchanged.filter(free).update(**values):
        upload.lock_owner, upload.locked_until, upload.received = token, until, upload.size
        return token
    if rows.filter(free).update(**values):
        upload.refresh_from_db(using=conf.DATABASE)
        return token
    held = rows.values_list("lock_owner", flat=True).first()
    if held is None:
        raise gone()
    if _holder_is_dead(held) and rows.filter(lock_owner=held).update(**values):
        upload.refresh_from_db(using=conf.DATABASE)
        return token
    raise locked()


def release(upload: TempUpload, token: str) -> None:
    """Give the lock back, unless the request's last record already did."""
    if upload.lock_owner == token:
        # A PATCH that ends here failed: what it showed past the offset was not kept.
        _receiving(upload).filter(lock_owner=token).update(
            lock_owner="", locked_until=None, received=F("size")
        )
        upload.lock_owner, upload.locked_until, upload.received = "", None, upload.size


def _record(upload: TempUpload, token: str, size: int | None, **extra: Any) -> None:
    """Renew the lock (and move the offset to ``size``); raise 409 if the lock was lost."""
    now = timezone.now()
    values: dict[str, Any] = {
        "updated_at": now,
        "locked_until": now + conf.TUS_LOCK_TIMEOUT,
        "expires_at": now + conf.TUS_EXPIRY,
        **extra,
    }
    if size is not None:
        values["size"] = values["received"] = size
    if not _receiving(upload).filter(lock_owner=token).update(**values):
        raise TusError(
            protocol.CONFLICT,
            _("Another request took this upload over. Ask for its offset, then resume."),
        )
    for key, value in values.items():
        setattr(upload, key, value)


def _show_progress(upload: TempUpload, token: str, received: int) -> None:
    """Record the bytes received so far for the admin; the offset stays where it is durable."""
    # A lost lock changes nothing here: the next record answers 409.
    if _receiving(upload).filter(lock_owner=token).update(received=received):
        upload.received = received


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _resume_digest(upload: TempUpload, length: int) -> OverlappedHash | None:
    """The digest to feed this PATCH's ``length`` bytes to; None if completion reads the file."""
    if not upload.digest_algorithm or upload.concat:
        return None
    state = running_digests.take(upload, upload.size)
    if state is None and upload.size:
        return None  # Another process wrote what is there.
    # A large body is hashed in the thread from its first byte.
    inline = length if length <= OverlappedHash.INLINE_BYTES else 0
    return OverlappedHash(upload.digest_algorithm, state=state, inline=inline)


def write(
    request: HttpRequest,
    upload: TempUpload,
    token: str,
    *,
    content_length: int,
    checksum: tuple[str, bytes] | None,
) -> None:
    """Append the request body (``content_length`` bytes) at ``upload.size``, in chunks.

    Without a checksum, what arrived is kept even if the body was cut short;
    with one, nothing is kept unless all of it arrived and matches (460). The
    last record of the offset also releases the lock.
    """
    offset = upload.size
    bound = upload.upload_length if upload.upload_length is not None else conf.MAX_FILE_SIZE
    if bound is not None and offset + content_length > bound:
        if upload.upload_length is not None:
            raise TusError(
                413, _("The body goes past Upload-Length. Send only the bytes that remain.")
            )
        raise FileTooLarge.for_limit(bound)
    interval = min(conf.HEARTBEAT_INTERVAL, conf.TUS_LOCK_TIMEOUT / 2).total_seconds()
    check = hashlib.new(checksum[0]) if checksum else None
    covered = upload.reserved if conf.QUOTA is not None else None
    watch_disk = covered is None and conf.MIN_FREE_SPACE > 0
    # The first bytes meet the validators at once (a magic-byte check refuses a
    # wrong type before the rest is sent); all of them run again on completion.
    # A PATCH that starts within the bytes a type is sniffed from gives them
    # what earlier PATCHes stored first, so small first PATCHes are checked too.
    early = None
    if offset < validators.SNIFF_BYTES and not upload.concat:
        early = validators.for_file(request, upload)
    chunk_size = conf.CHUNK_SIZE
    prime_allocator(chunk_size)
    digest = _resume_digest(upload, content_length)
    # Readable too: a PATCH within the sniffed bytes reads the ones before it.
    mode = os.O_RDWR if early is not None and offset else os.O_WRONLY
    fd = os.open(upload.path, mode | _NOFOLLOW | _CLOEXEC)
    position = offset
    try:
        if early is not None:
            _refuse_if_invalid(upload, early.start)
            if offset:
                _refuse_if_invalid(upload, early.chunk, os.pread(fd, offset, 0), 0)
        # Bytes past the recorded offset were never confirmed (a killed worker's).
        os.ftruncate(fd, offset)
        next_record = time.monotonic() + interval
        # Per block, as the multipart handler records its size: a PATCH of at
        # most one block costs no statement for this (the last record shows it).
        next_progress = offset + quota.BLOCK
        remaining = content_length
        try:
            while remaining > 0:
                try:
                    data = request.read(min(chunk_size, remaining))
                except (OSError, UnreadablePostError, RequestAborted):
                    break
                if not data:
                    break
                end = position + len(data)
                if covered is not None and end > covered:
                    covered = quota.cover(upload, end, bound=bound)
                elif watch_disk:
                    quota.check_free_space(len(data))
                if time.monotonic() >= next_record:
                    # Before the write: a request that stalled past its lock stops here.
                    if check is None:
                        storage.sync_data(fd)
                    _record(upload, token, None if check else position)
                    next_record = time.monotonic() + interval
                if early is not None:
                    _refuse_if_invalid(upload, early.chunk, data, position)
                _pwrite_all(fd, data, position)
                # Written back while the next chunk arrives: the last sync_data() is short.
                storage.start_writeback(fd, position, len(data))
                if check is not None:
                    check.update(data)
                if digest is not None:
                    digest.update(data)
                position = end
                remaining -= len(data)
                if position >= next_progress and remaining > 0:
                    _show_progress(upload, token, position)
                    next_progress = position + quota.BLOCK
        except UploadRejected:
            if not upload.is_pending:
                raise
            if check is None:
                storage.sync_data(fd)
                _record(upload, token, position)
                _keep_digest(upload, position, digest)
            else:
                os.ftruncate(fd, offset)
            raise
        if check is not None and checksum is not None and check.digest() != checksum[1]:
            os.ftruncate(fd, offset)
            raise TusError(
                protocol.CHECKSUM_MISMATCH,
                _("The body does not match Upload-Checksum. Send this part again."),
            )
        storage.sync_data(fd)
        # Durable now, and not read again before completion: give the pages back.
        storage.drop_cached(fd, offset, position - offset)
    finally:
        os.close(fd)
        state = digest.join() if digest is not None else None
    _record(upload, token, position, lock_owner="", locked_until=None)
    _keep_digest(upload, position, state)


def _keep_digest(upload: TempUpload, offset: int, digest: OverlappedHash | Any) -> None:
    if isinstance(digest, OverlappedHash):
        digest = digest.join()
    if digest is not None:
        running_digests.put(upload, offset, digest)


def _refuse_if_invalid(upload: TempUpload, hook: Any, *args: Any) -> None:
    """Call a validation hook; on a refusal close the upload (file deleted), then raise."""
    try:
        hook(*args)
    except UploadRejected as exc:
        validators.reject(upload, exc)
        raise


def set_length(upload: TempUpload, token: str, length: int) -> None:
    """Fix a deferred ``Upload-Length``; its quota is reserved as bytes arrive."""
    if upload.upload_length is not None:
        if upload.upload_length != length:
            raise TusError(400, _("Upload-Length cannot change once it is set."))
        return
    if length < upload.size:
        raise TusError(400, _("Upload-Length is smaller than what was already sent."))
    check_length(length)
    _record(upload, token, None, upload_length=length)


def finish_if_complete(request: HttpRequest, upload: TempUpload) -> None:
    """Validate a complete upload and mark it received (``upload_received``)."""
    if upload.upload_length is None or upload.size != upload.upload_length:
        return
    state = running_digests.take(upload, upload.size)
    digest = "" if upload.concat == "partial" else _validate(request, upload, state)
    lifecycle.complete(upload, upload.size, digest)
    quota.trim(upload)


def _validate(request: HttpRequest, upload: TempUpload, state: Any = None) -> str:
    """Run the project's validators over the whole file; return its digest.

    ``state`` is the digest of the whole file carried across the PATCHes; without
    it, and with validators, the file is read once.
    """
    validation = validators.for_file(request, upload)
    if state is not None and validation is None:
        return str(state.hexdigest())
    hasher = None
    if state is None and upload.digest_algorithm:
        hasher = hashlib.new(upload.digest_algorithm)
    try:
        if validation is not None:
            validation.start()
        offset = 0
        with upload.open() as fh:
            while data := fh.read(conf.CHUNK_SIZE):
                if validation is not None:
                    validation.chunk(data, offset)
                if hasher is not None:
                    hasher.update(data)
                offset += len(data)
        source = state if state is not None else hasher
        digest = source.hexdigest() if source is not None else ""
        if validation is not None:
            validation.complete(offset, digest)
    except UploadRejected as exc:
        validators.reject(upload, exc)
        raise
    return digest


def terminate(upload: TempUpload) -> None:
    """Delete the upload's file and release its quota (termination)."""
    lifecycle.discard(upload, reason="terminated by the client")


def concatenate(request: HttpRequest, ids: list[str], metadata: dict[str, str]) -> TempUpload:
    """Create a final upload from complete partial ones, in order; the parts are discarded."""
    parts = []
    for upload_id in ids:
        part = get(upload_id)
        if part.concat != "partial" or part.state != State.COMPLETE:
            raise TusError(
                400, _("Upload-Concat names an upload that is not a finished partial upload.")
            )
        if not permitted(request, "resume", part):
            raise not_found()
        parts.append(part)
    length = sum(part.size for part in parts)
    final = create(request, length=length, metadata=metadata, concat="final")
    token = acquire(final)
    try:
        fd = os.open(final.path, os.O_WRONLY | _NOFOLLOW | _CLOEXEC)
        try:
            position = 0
            for part in parts:
                with part.open() as fh:
                    while data := fh.read(conf.CHUNK_SIZE):
                        _pwrite_all(fd, data, position)
                        position += len(data)
            storage.sync_data(fd)
        finally:
            os.close(fd)
        _record(final, token, position, lock_owner="", locked_until=None)
    except BaseException:
        lifecycle.fail(final, "the partial uploads could not be joined")
        raise
    for part in parts:
        lifecycle.discard(part, reason="joined into a final upload")
    finish_if_complete(request, final)
    return final


class ClaimError(UploadRejected):
    status = 404
    code = "upload_not_found"
    message = "No finished upload has this id. Upload the file again."


def claim(request: HttpRequest | None, upload_id: str | uuid.UUID) -> TempStoreUploadedFile:
    """The finished tus upload ``upload_id`` as an uploaded file of ``request``.

    Like a file of ``request.FILES``: ``persist()``, ``keep()`` or ``discard()``
    it, else the end of ``request`` discards it. Raise ``ClaimError`` (404) if
    there is no such complete upload or the permission hook refuses it.
    """
    try:
        pk = upload_id if isinstance(upload_id, uuid.UUID) else uuid.UUID(str(upload_id))
    except ValueError:
        raise ClaimError() from None
    upload = (
        TempUpload.objects.using(conf.DATABASE)
        .filter(pk=pk, resumable=True, state__in=(State.COMPLETE, State.KEPT))
        .exclude(concat="partial")
        .first()
    )
    if upload is None or (request is not None and not permitted(request, "claim", upload)):
        raise ClaimError()
    fh = upload.open("rb")
    file = TempStoreUploadedFile(upload, fh, upload.original_name, upload.content_type, None)
    file.size = upload.size
    if request is not None:
        RequestScope.of(request).track(file)
    return file
