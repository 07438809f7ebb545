"""The tus upload service: every write to a resumable ``TempUpload`` goes through here.

A resumable upload is a ``receiving`` row with ``resumable`` set, whose file
grows across requests. Its ``size`` is the offset that HEAD reports: it only
moves after the bytes below it are fsynced, and a PATCH first cuts the file
back to it, so bytes a killed worker wrote past it are never counted. One
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
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.core.exceptions import RequestAborted
from django.db.models import Q, QuerySet
from django.http.request import UnreadablePostError
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from django_tempstore import lifecycle, process, quota, validators
from django_tempstore.conf import conf
from django_tempstore.exceptions import FileTooLarge, InsufficientStorage, UploadRejected
from django_tempstore.files import TempStoreUploadedFile
from django_tempstore.handlers import RequestScope
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
    if not upload.is_pending:
        raise gone()
    if upload.state == State.RECEIVING and _expired(upload):
        raise gone()
    return upload


def _expired(upload: TempUpload) -> bool:
    return upload.expires_at is not None and upload.expires_at <= timezone.now()


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
    values = {"lock_owner": token, "locked_until": now + conf.TUS_LOCK_TIMEOUT}
    rows = _receiving(upload)
    if rows.filter(Q(lock_owner="") | Q(locked_until__lt=now)).update(**values):
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
    _receiving(upload).filter(lock_owner=token).update(lock_owner="", locked_until=None)


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
        values["size"] = size
    if not _receiving(upload).filter(lock_owner=token).update(**values):
        raise TusError(
            protocol.CONFLICT,
            _("Another request took this upload over. Ask for its offset, then resume."),
        )
    for key, value in values.items():
        setattr(upload, key, value)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


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
    with one, nothing is kept unless all of it arrived and matches (460).
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
    digest = hashlib.new(checksum[0]) if checksum else None
    covered = upload.reserved if conf.QUOTA is not None else None
    # The first bytes meet the validators at once (a magic-byte check refuses a
    # wrong type before the rest is sent); all of them run again on completion.
    early = validators.for_file(request, upload) if offset == 0 and not upload.concat else None
    fd = os.open(upload.path, os.O_WRONLY | _NOFOLLOW | _CLOEXEC)
    position = offset
    try:
        if early is not None:
            _refuse_if_invalid(upload, early.start)
        # Bytes past the recorded offset were never confirmed (a killed worker's).
        os.ftruncate(fd, offset)
        next_record = time.monotonic() + interval
        remaining = content_length
        try:
            while remaining > 0:
                try:
                    data = request.read(min(conf.CHUNK_SIZE, remaining))
                except (OSError, UnreadablePostError, RequestAborted):
                    break
                if not data:
                    break
                end = position + len(data)
                if covered is not None and end > covered:
                    covered = quota.cover(upload, end, bound=bound)
                elif covered is None:
                    quota.check_free_space(len(data))
                if time.monotonic() >= next_record:
                    # Before the write: a request that stalled past its lock stops here.
                    if digest is None:
                        os.fsync(fd)
                    _record(upload, token, None if digest else position)
                    next_record = time.monotonic() + interval
                if early is not None:
                    _refuse_if_invalid(upload, early.chunk, data, position)
                _pwrite_all(fd, data, position)
                if digest is not None:
                    digest.update(data)
                position = end
                remaining -= len(data)
        except UploadRejected:
            if not upload.is_pending:
                raise
            if digest is None:
                os.fsync(fd)
                _record(upload, token, position)
            else:
                os.ftruncate(fd, offset)
            raise
        if digest is not None and checksum is not None and digest.digest() != checksum[1]:
            os.ftruncate(fd, offset)
            raise TusError(
                protocol.CHECKSUM_MISMATCH,
                _("The body does not match Upload-Checksum. Send this part again."),
            )
        os.fsync(fd)
    finally:
        os.close(fd)
    _record(upload, token, position)


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
    digest = "" if upload.concat == "partial" else _validate(request, upload)
    lifecycle.complete(upload, upload.size, digest)
    quota.trim(upload)


def _validate(request: HttpRequest, upload: TempUpload) -> str:
    """Run the project's validators over the whole file; return its digest."""
    validation = validators.for_file(request, upload)
    hasher = hashlib.new(upload.digest_algorithm) if upload.digest_algorithm else None
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
        digest = hasher.hexdigest() if hasher is not None else ""
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
            os.fsync(fd)
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
