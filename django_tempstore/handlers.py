"""The upload handler: streams each file to a tracked temp file."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.core.files.uploadhandler import FileUploadHandler
from django.core.handlers.asgi import ASGIRequest
from django.db import InterfaceError, OperationalError, connections
from django.utils import timezone

from . import lifecycle, quota, validators
from .conf import conf
from .exceptions import FileTooLarge, InsufficientStorage, ServiceUnavailable, UploadRejected
from .files import TempStoreUploadedFile
from .models import State
from .multipart import StreamingMultiPartParser
from .storage import create_temp, unlink

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


def prime_allocator(chunk_size: int) -> None:
    """Move glibc's mmap threshold above ``chunk_size`` buffers, once per process."""
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

    def __init__(self, algorithm: str, *, state: Any = None, inline: int | None = None) -> None:
        """Start a digest of ``algorithm``, or go on from ``state`` (a ``hashlib`` object).

        ``inline``: how many bytes to hash before starting the thread
        (``INLINE_BYTES``); 0 when the caller knows that many more will come.
        """
        self._hash = hashlib.new(algorithm) if state is None else state
        self._inline_left = self.INLINE_BYTES if inline is None else inline
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

    def join(self) -> Any:
        """Wait until every chunk given is hashed; return the ``hashlib`` object."""
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
        return self._hash

    def hexdigest(self) -> str:
        return str(self.join().hexdigest())


def _feed(digest: Any, chunks: queue.Queue[bytes | None]) -> None:
    while (data := chunks.get()) is not None:
        digest.update(data)


class _DatabaseDown(ServiceUnavailable):
    """Raised by ``_database()``, which has already deleted the file."""


class TempStoreUploadHandler(FileUploadHandler):
    """Drop-in replacement for Django's ``TemporaryFileUploadHandler``."""

    file: TempStoreUploadedFile

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.chunk_size = conf.CHUNK_SIZE
        prime_allocator(self.chunk_size)
        self.max_file_size = conf.MAX_FILE_SIZE
        self._hash: Any = None
        self._validation: validators.FileValidation | None = None
        self._next_heartbeat = 0.0
        #: The most a file can grow to: the body's length, TEMPSTORE_MAX_FILE_SIZE.
        self._bound = self.max_file_size
        #: Bytes of the current file covered by its quota reservation.
        self._covered = 0
        #: The chunks of the current file, while it is held in memory.
        self._chunks: list[bytes] = []

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> tuple[Any, Any] | None:
        try:
            with self._database(None):
                quota.check_request(content_length, quota.quota_key(self.request))
        except UploadRejected as exc:
            self._note_rejection(exc)
            raise
        if content_length:
            self._bound = min(content_length, self._bound or content_length)
        handlers = self._parses_for()
        if handlers is None:
            return None
        return StreamingMultiPartParser(META, input_data, handlers, encoding).parse()

    def _parses_for(self) -> list[FileUploadHandler] | None:
        """The request's handlers if this one parses the body for them, else None.

        Returning from ``handle_raw_input`` skips the ``handle_raw_input`` of the
        handlers after this one, so the body is parsed here only when none of them
        has its own; Django's parser then drives every handler's hooks as usual.
        """
        if self.request is None:
            return None
        handlers = list(self.request.upload_handlers)
        for index, handler in enumerate(handlers):
            if handler is self:
                later = handlers[index + 1 :]
                if all(
                    type(h).handle_raw_input is FileUploadHandler.handle_raw_input for h in later
                ):
                    return handlers
                return None
        return None

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
        self._chunks = []
        fields: dict[str, Any] = {
            "original_name": file_name,
            "content_type": content_type,
            "charset": charset,
            "field_name": field_name,
            "created_at": timezone.now(),
        }
        chosen = validators.validators_for(self.request)
        algorithm = conf.DIGEST or ""
        self._hash = OverlappedHash(algorithm) if algorithm else None
        self._validation = None
        if not chosen and self.request is not None and _fits_in_memory(self.request):
            # Weak: the file is in request.FILES, and its row is built (if ever)
            # while the request is alive.
            request = weakref.ref(self.request)
            self.file = TempStoreUploadedFile.in_memory_file(
                lambda: lifecycle.prepare(request=request(), **fields),
                self.file_name,
                self.content_type,
                self.charset,
                self.content_type_extra,
                digest_algorithm=algorithm,
            )
            RequestScope.of(self.request).track(self.file)
            return
        with self._database(None):
            upload = lifecycle.start(request=self.request, **fields)
        if chosen:
            self._validation = validators.FileValidation(chosen, upload, self.request)
        try:
            fh = create_temp(upload.name)
        except OSError as exc:
            with self._database(None):
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
            RequestScope.of(self.request).track(self.file)
        self._next_heartbeat = time.monotonic() + conf.HEARTBEAT_INTERVAL.total_seconds()
        self._validate("start")

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        size = start + len(raw_data)
        if self.max_file_size is not None and size > self.max_file_size:
            too_large = FileTooLarge.for_limit(self.max_file_size, self.file_name or "")
            self._abort(too_large, too_large.reason)
        if self.file.in_memory:
            # No disk, no row: nothing to reserve, validate or heartbeat. The
            # chunks are joined once at the end (a single one is not copied).
            self._chunks.append(raw_data)
            if self._hash is not None:
                self._hash.update(raw_data)
            return None
        upload = self.file.temp_upload
        if size > self._covered:
            try:
                with self._database(self.file):
                    self._covered = quota.cover(upload, size, bound=self._bound, received=size)
                if start > 0 and size - upload.size > upload.size // 4:
                    # Nothing was reserved (no quota, or already covered): record
                    # the bytes received anyway for the admin, at a block that
                    # adds more than a quarter to the size last recorded (17
                    # commits for 512 MiB instead of 128, measured in
                    # tests/test_admin_progress.py for 64 MiB); the heartbeat
                    # records it at least every HEARTBEAT_INTERVAL.
                    # Not on the first chunk, so a small upload costs nothing.
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
                with self._database(self.file):
                    lifecycle.heartbeat(upload, size)
            except UploadRejected as exc:
                self._abort(exc, exc.reason)
        return None

    def file_complete(self, file_size: int) -> TempStoreUploadedFile:
        self.file.size = file_size
        digest = self._hash.hexdigest() if self._hash is not None else ""
        if self.file.in_memory:
            chunks, self._chunks = self._chunks, []
            content = (
                chunks[0] if len(chunks) == 1 and type(chunks[0]) is bytes else b"".join(chunks)
            )
            self.file.file = io.BytesIO(content)  # Shares the bytes until written to.
            self.file.set_fields(state=State.COMPLETE, size=file_size, digest=digest)
            return self.file
        self.file.file.seek(0)
        upload = self.file.temp_upload
        self._validate("complete", file_size, digest)
        try:
            with self._database(self.file):
                lifecycle.complete(upload, file_size, digest)
        except UploadRejected as exc:
            self._abort(exc, exc.reason)
        with self._database(self.file):
            quota.trim(upload)
        return self.file

    def upload_interrupted(self) -> None:
        if hasattr(self, "file") and self.file.field("state") == State.RECEIVING:
            self.file.close()
            if self.file.in_memory:
                self.file.set_fields(state=State.FAILED)
                return
            with self._database(self.file):
                lifecycle.fail(self.file.temp_upload, "the request body ended mid-file")

    def _validate(self, hook: str, *args: Any) -> None:
        if self._validation is None:
            return
        try:
            with self._database(self.file):
                getattr(self._validation, hook)(*args)
        except _DatabaseDown:
            raise
        except UploadRejected as exc:
            self.file.close()
            with self._database(self.file):
                validators.reject(self.file.temp_upload, exc)
            self._reject(exc)

    def _abort(self, exc: UploadRejected | None, reason: str) -> None:
        self.file.close()
        if isinstance(exc, _DatabaseDown):
            raise exc  # Already cleaned up by _database(); the row waits for the request's end.
        if self.file.in_memory:
            self.file.set_fields(state=State.FAILED)  # No row to close.
        else:
            with self._database(self.file):
                lifecycle.fail(self.file.temp_upload, reason)
        if exc is None:
            raise
        self._reject(exc)

    @contextlib.contextmanager
    def _database(self, file: TempStoreUploadedFile | None) -> Iterator[None]:
        """Answer 503 when the database stops answering (connection lost, SQLite locked).

        ``file``'s temp file is deleted now; its row, still pending, is closed at
        the request's end on a fresh connection, which returns its reservation.
        """
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            logger.warning("django-tempstore could not reach the database: %s", exc)
            if file is not None:
                file.close()
                unlink(file.temp_upload.path)
            self._reject(_DatabaseDown(reason="the database did not answer"))

    def _reject(self, exc: UploadRejected) -> None:
        self._note_rejection(exc)
        raise exc

    def _note_rejection(self, exc: UploadRejected) -> None:
        if self.request is not None:
            RequestScope.of(self.request).rejection = exc
            # Django's error views read request.POST again (their CSRF check):
            # that must neither parse the rest of the body nor raise again.
            self.request._mark_post_parse_error()  # type: ignore[attr-defined]


def _fits_in_memory(request: HttpRequest) -> bool:
    """Whether this request's files may wait in memory: its whole body is at most
    ``TEMPSTORE_MAX_MEMORY_SIZE`` (as ``MemoryFileUploadHandler`` decides)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return 0 < length <= conf.MAX_MEMORY_SIZE


def _write_all(fh: Any, data: bytes) -> None:
    """Write all of ``data``: an unbuffered file may write less (a disk filling up)."""
    view = memoryview(data)
    while view:
        view = view[fh.write(view) :]


class RequestScope:
    """What one request created: its temp files and its refusal.

    ``close()`` ends the request's uploads (closes the rows of the files it did
    not persist or keep, undoes persists whose transaction rolled back). It is
    called once per request by ``TempStoreMiddleware`` (when the response is
    closed) and by ``TempStoreASGIHandler`` (after the response, also when the
    client disconnected); later calls do nothing. A scope that is never closed
    writes nothing from the garbage collector: it is logged, and the sweep
    closes its rows.
    """

    def __init__(self, request: HttpRequest) -> None:
        self.files: list[TempStoreUploadedFile] = []
        #: The refusal raised while the body was parsed, for the middleware.
        self.rejection: UploadRejected | None = None
        self.closed = False
        self._finalizer = weakref.finalize(request, _never_closed, self.files)
        collecting = _asgi_scopes.get()
        if collecting is not None:
            collecting.append(self)
        elif isinstance(request, ASGIRequest):
            _warn_foreign_asgi_handler()

    @classmethod
    def of(cls, request: HttpRequest) -> RequestScope:
        """The scope of ``request``, created on first use."""
        scope: RequestScope | None = getattr(request, "_tempstore_scope", None)
        if scope is None:
            scope = request._tempstore_scope = cls(request)  # type: ignore[attr-defined]
        return scope

    @classmethod
    def find(cls, request: HttpRequest) -> RequestScope | None:
        """The scope of ``request`` if the upload handler opened one."""
        return getattr(request, "_tempstore_scope", None)

    @staticmethod
    @contextlib.contextmanager
    def collect() -> Iterator[list[RequestScope]]:
        """Collect the scopes opened while the block runs (an ASGI handler's request)."""
        scopes: list[RequestScope] = []
        token = _asgi_scopes.set(scopes)
        try:
            yield scopes
        finally:
            _asgi_scopes.reset(token)

    def track(self, file: TempStoreUploadedFile) -> None:
        self.files.append(file)

    def close(self) -> None:
        """End the request's uploads; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._finalizer.detach()
        if any(not file.in_memory for file in self.files):
            _replace_broken_connection()
        while self.files:
            file = self.files.pop()
            try:
                file.end_of_request()
            except Exception:
                logger.exception("django-tempstore could not clean up %s", file.temp_upload.pk)


#: Set by TempStoreASGIHandler around each request: the scopes it must close.
_asgi_scopes: ContextVar[list[RequestScope] | None] = ContextVar(
    "tempstore_asgi_scopes", default=None
)
_warned_foreign_asgi = False


def _warn_foreign_asgi_handler() -> None:
    global _warned_foreign_asgi
    if not _warned_foreign_asgi:
        _warned_foreign_asgi = True
        logger.warning(
            "django-tempstore: this ASGI request is not served by "
            "django_tempstore.asgi.TempStoreASGIHandler; Django's own handler spools "
            "the body outside TEMPSTORE_DIR and never closes a request whose client "
            "disconnected. Use django_tempstore.asgi.get_asgi_application()."
        )


def _never_closed(files: list[TempStoreUploadedFile]) -> None:
    # From the garbage collector: no database write; the sweep closes the rows.
    for file in files:
        file.close()
    if any(not file.in_memory for file in files):
        logger.warning(
            "django-tempstore: a request ended without closing its uploads %s "
            "(is TempStoreMiddleware installed?); the sweep will close them.",
            ", ".join(str(file.temp_upload.pk) for file in files if not file.in_memory),
        )


def _replace_broken_connection() -> None:
    """Close the connection if it broke during the request, so the next query opens a fresh one."""
    connection = connections[conf.DATABASE]
    if (
        connection.connection is not None
        and connection.errors_occurred
        and not connection.in_atomic_block
        and not connection.is_usable()
    ):
        connection.close()
