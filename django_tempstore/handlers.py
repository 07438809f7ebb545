"""The upload handler: streams each file to a tracked temp file."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import queue
import threading
import time
import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.core.files.uploadhandler import FileUploadHandler

from . import lifecycle, quota, validators
from .conf import conf
from .exceptions import FileTooLarge, InsufficientStorage, ServiceUnavailable, UploadRejected
from .files import TempStoreUploadedFile
from .models import State
from .storage import create_temp

if TYPE_CHECKING:
    from django.http import HttpRequest

logger = logging.getLogger("django_tempstore")

#: glibc's malloc serves a block above its mmap threshold (128 KiB at start) with
#: a fresh mmap, whose every page faults when touched, and it raises that threshold
#: only when such a block is freed. Freeing one large block per process up front
#: moves it above the chunk-sized buffers of the upload path, which then reuse
#: heap memory: measured in bench/, 512 MiB uploads went from ~900 to ~2 minor
#: faults per MiB and ran about twice as fast. Harmless with other allocators.
_ALLOCATOR_PRIMED = False
#: glibc adjusts its threshold only for blocks up to 32 MiB; gunicorn's body
#: reader alone holds ~2 MiB buffers whatever the chunk size.
_PRIME_MIN, _PRIME_MAX = 8 * 1024 * 1024, 16 * 1024 * 1024


def _prime_allocator(chunk_size: int) -> None:
    global _ALLOCATOR_PRIMED
    if not _ALLOCATOR_PRIMED:
        _ALLOCATOR_PRIMED = True
        size = min(_PRIME_MAX, max(_PRIME_MIN, 8 * chunk_size))
        block = bytearray(size)  # calloc'd: no page is touched
        del block


class OverlappedHash:
    """A ``hashlib`` digest fed from a helper thread once a file passes a few MiB.

    hashlib releases the GIL on large updates, so the digest of one chunk is
    computed while the next one is read from the socket and written. Small files
    are hashed inline and start no thread; at most two chunks wait.
    """

    INLINE_BYTES = 4 * 1024 * 1024

    def __init__(self, algorithm: str) -> None:
        self._hash = hashlib.new(algorithm)
        self._inline_left = self.INLINE_BYTES
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        if self._queue is None:
            self._inline_left -= len(data)
            if self._inline_left >= 0:
                self._hash.update(data)
                return
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(
                target=_feed, args=(self._hash, self._queue), name="tempstore-digest", daemon=True
            )
            self._thread.start()
            # An aborted upload never asks for its digest: stop the thread with it.
            weakref.finalize(self, self._queue.put, None)
        self._queue.put(data)

    def hexdigest(self) -> str:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
        return str(self._hash.hexdigest())


def _feed(digest: Any, chunks: queue.Queue[bytes | None]) -> None:
    while (data := chunks.get()) is not None:
        digest.update(data)


class TempStoreUploadHandler(FileUploadHandler):
    """Drop-in replacement for Django's ``TemporaryFileUploadHandler``."""

    file: TempStoreUploadedFile

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.chunk_size = conf.CHUNK_SIZE
        _prime_allocator(self.chunk_size)
        self.max_file_size = conf.MAX_FILE_SIZE
        self._hash: Any = None
        self._validation: validators.FileValidation | None = None
        self._next_heartbeat = 0.0
        #: The most a file can grow to: the body's length, TEMPSTORE_MAX_FILE_SIZE.
        self._bound = self.max_file_size
        #: Bytes of the current file covered by its quota reservation.
        self._covered = 0

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> None:
        try:
            quota.check_request(content_length)
        except UploadRejected as exc:
            self._note_rejection(exc)
            raise
        if content_length:
            self._bound = min(content_length, self._bound or content_length)

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        super().new_file(
            field_name, file_name, content_type, content_length, charset, content_type_extra
        )
        if self.max_file_size is not None and (content_length or 0) > self.max_file_size:
            self._reject(FileTooLarge.for_limit(self.max_file_size, self.file_name or ""))
        self._covered = 0
        upload = lifecycle.start(
            original_name=file_name,
            content_type=content_type,
            charset=charset,
            field_name=field_name,
            request=self.request,
        )
        try:
            fh = create_temp(upload.name)
        except OSError as exc:
            lifecycle.fail(upload, f"could not create the temp file: {exc}")
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._reject(InsufficientStorage())
            # A misconfigured TEMPSTORE_DIR (unsafe, unwritable): the operator must act,
            # the client can only retry later. Logged, answered 503, never a 500.
            logger.error("django-tempstore cannot create a temp file: %s", exc)
            self._reject(ServiceUnavailable(reason="the temp file could not be created"))
        self.file = TempStoreUploadedFile(
            upload, fh, self.file_name, self.content_type, self.charset, self.content_type_extra
        )
        if self.request is not None:
            _track(self.request, self.file)
        self._hash = OverlappedHash(upload.digest_algorithm) if upload.digest_algorithm else None
        self._next_heartbeat = time.monotonic() + conf.HEARTBEAT_INTERVAL.total_seconds()
        self._validation = validators.for_file(self.request, upload)
        self._validate("start")

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        size = start + len(raw_data)
        upload = self.file.temp_upload
        if self.max_file_size is not None and size > self.max_file_size:
            too_large = FileTooLarge.for_limit(self.max_file_size, self.file_name or "")
            self._abort(too_large, too_large.reason)
        if size > self._covered:
            try:
                self._covered = quota.cover(upload, size, bound=self._bound, received=size)
                if upload.size != size and start > 0:
                    # Nothing was reserved (no quota, or already covered): record
                    # the bytes received anyway, once per block, for the admin;
                    # not on the first chunk, so a small upload costs nothing.
                    self._next_heartbeat = 0.0
            except UploadRejected as exc:
                self._abort(exc, exc.reason)
        self._validate("chunk", raw_data, start)
        try:
            _write_all(self.file.file, raw_data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._abort(InsufficientStorage(), "the temp disk is full")
            self._abort(None, f"could not write the temp file: {exc.strerror}")
        if self._hash is not None:
            self._hash.update(raw_data)
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + conf.HEARTBEAT_INTERVAL.total_seconds()
            try:
                lifecycle.heartbeat(upload, size)
            except UploadRejected as exc:
                self._abort(exc, exc.reason)
        return None

    def file_complete(self, file_size: int) -> TempStoreUploadedFile:
        upload = self.file.temp_upload
        self.file.file.seek(0)
        self.file.size = file_size
        digest = self._hash.hexdigest() if self._hash is not None else ""
        self._validate("complete", file_size, digest)
        try:
            lifecycle.complete(upload, file_size, digest)
        except UploadRejected as exc:
            self._abort(exc, exc.reason)
        quota.trim(upload)
        return self.file

    def upload_interrupted(self) -> None:
        if hasattr(self, "file") and self.file.temp_upload.state == State.RECEIVING:
            self.file.close()
            lifecycle.fail(self.file.temp_upload, "the request body ended mid-file")

    def _validate(self, hook: str, *args: Any) -> None:
        if self._validation is None:
            return
        try:
            getattr(self._validation, hook)(*args)
        except UploadRejected as exc:
            self.file.close()
            validators.reject(self.file.temp_upload, exc)
            self._reject(exc)

    def _abort(self, exc: UploadRejected | None, reason: str) -> None:
        self.file.close()
        lifecycle.fail(self.file.temp_upload, reason)
        if exc is None:
            raise
        self._reject(exc)

    def _reject(self, exc: UploadRejected) -> None:
        self._note_rejection(exc)
        raise exc

    def _note_rejection(self, exc: UploadRejected) -> None:
        if self.request is not None:
            self.request._tempstore_rejection = exc  # type: ignore[attr-defined]
            # Django's error views read request.POST again (their CSRF check):
            # that must neither parse the rest of the body nor raise again.
            self.request._mark_post_parse_error()  # type: ignore[attr-defined]


def _write_all(fh: Any, data: bytes) -> None:
    """Write all of ``data``: an unbuffered file may write less (a disk filling up)."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view) :]


def _track(request: HttpRequest, file: TempStoreUploadedFile) -> None:
    """Make the end of ``request`` close ``file``'s row, however the request ends."""
    files: list[TempStoreUploadedFile] | None = getattr(request, "_tempstore_files", None)
    if files is None:
        files = request._tempstore_files = []  # type: ignore[attr-defined]
        original_close = request.close

        def close() -> None:
            try:
                original_close()
            finally:
                _end_of_request(files)

        request.close = close  # type: ignore[method-assign]
        # An ASGI request cancelled by a disconnect is never closed: then
        # TempStoreASGIHandler cleans up once Django is done with it, else
        # (another ASGI handler) the request being garbage collected does.
        pending = _unclosed.get()
        if pending is not None:
            pending.append(files)
        weakref.finalize(request, _end_of_request_anywhere, files)
    files.append(file)


#: Set by TempStoreASGIHandler for each request: the files lists of its requests.
_unclosed: ContextVar[list[list[TempStoreUploadedFile]] | None] = ContextVar(
    "tempstore_unclosed", default=None
)


def _end_of_request_anywhere(files: list[TempStoreUploadedFile]) -> None:
    """``_end_of_request`` from a finalizer, which may run on an event loop's thread."""
    if not files:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        _end_of_request(files)
    else:  # The ORM refuses to run there.
        threading.Thread(target=_end_of_request, args=(files,), daemon=True).start()


def _end_of_request(files: list[TempStoreUploadedFile]) -> None:
    while files:
        file = files.pop()
        try:
            file.end_of_request()
        except Exception:
            logger.exception("django-tempstore could not clean up %s", file.temp_upload.pk)
