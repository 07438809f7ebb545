"""An ASGI handler that streams request bodies into the view as they arrive.

Django's ``ASGIHandler`` reads the whole request body before the view runs,
into a ``SpooledTemporaryFile`` that rolls over to the system temp dir past
``FILE_UPLOAD_MAX_MEMORY_SIZE``; only then does the upload handler copy the
files out of it, so each byte is written twice. ``TempStoreASGIHandler`` feeds
the body of a request bound for a sync view to it while it arrives
(``BodyStream``): the upload handler writes each byte once. A body it cannot
stream (no ``Content-Length``, an async view) is spooled as Django does, but in
``TEMPSTORE_DIR`` (created 0700) and bounded by the quota. Either way a
multipart body that could never be accepted is refused before it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import IO, Any, cast

import django
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponseBase, UnreadablePostError
from django.urls import get_resolver, set_script_prefix

from .conf import conf
from .exceptions import FileTooLarge, InsufficientStorage, ServiceUnavailable, UploadRejected
from .storage import ensure_dir

logger = logging.getLogger("django_tempstore")

Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]

#: Bytes a multipart part may take besides its content: the boundary line and
#: the part's headers, which Django caps at 1024 bytes.
PART_OVERHEAD = 2048

_body_limit: ContextVar[int | None] = ContextVar("tempstore_body_limit", default=None)
_body_length: ContextVar[int | None] = ContextVar("tempstore_body_length", default=None)
#: The rows whose reservations cover the spools of this request's body.
_spools: ContextVar[list[Any] | None] = ContextVar("tempstore_spools", default=None)


class _Refused(Exception):
    def __init__(self, rejection: UploadRejected) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


def _too_large() -> FileTooLarge:
    return FileTooLarge(
        "The request is larger than this site accepts. Send fewer or smaller files."
    )


def max_body_size(content_type: str) -> int | None:
    """The largest multipart body this site could accept, or None if unbounded.

    Django refuses more than ``DATA_UPLOAD_MAX_NUMBER_FILES`` files, more than
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` fields and more than
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes of field data; the upload handler
    refuses a file larger than ``TEMPSTORE_MAX_FILE_SIZE``. Without all four
    limits, or for a body that is not multipart, there is no bound.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    max_file = conf.MAX_FILE_SIZE
    files = settings.DATA_UPLOAD_MAX_NUMBER_FILES
    fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    field_bytes = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if max_file is None or files is None or fields is None or field_bytes is None:
        return None
    return files * (max_file + PART_OVERHEAD) + field_bytes + (fields + 3) * PART_OVERHEAD


def _header(scope: Mapping[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


class BodyStream:
    """The request body as a blocking file, fed by ``receive()`` as the body arrives.

    The event loop appends each ``http.request`` message's bytes (``put()``);
    the request's sync thread (a sync view, a sync middleware, the multipart
    parser) reads them. ``read(n)`` blocks until ``n`` bytes or the end of the
    body, as a file does. At most ``max_buffered`` bytes (plus one message)
    wait to be read; past that the loop stops calling ``receive()``, so the
    server stops reading the socket and memory stays flat.

    The event loop's own thread cannot wait for bytes that only that loop can
    receive: there, a read that would block raises ``RuntimeError``. Async views
    get a spooled body instead (``TempStoreASGIHandler.streams()``).
    """

    def __init__(self, length: int, max_buffered: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._ready = threading.Condition(threading.Lock())
        self._chunks: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._max_buffered = max(1, max_buffered)
        #: Bytes the waiting reader needs before it is woken.
        self._wanted = 0
        self._ended = length == 0
        self._failure: str | None = None
        self._closed = False
        self._space = asyncio.Event()
        self._loop_waits = False
        #: Bytes received so far.
        self.received = 0

    # The event loop's side.

    async def put(self, data: bytes) -> None:
        """Append ``data``; wait while ``max_buffered`` bytes are not read yet."""
        with self._ready:
            if self._closed or self._failure is not None:
                return
            self._chunks.append(data)
            self._buffered += len(data)
            self.received += len(data)
            if self._buffered >= self._wanted:
                self._ready.notify()
            full = self._buffered >= self._max_buffered
            if full:
                self._space.clear()
                self._loop_waits = True
        if full:
            await self._space.wait()

    def end(self) -> None:
        """The last message arrived."""
        with self._ready:
            self._ended = True
            self._ready.notify_all()

    def fail(self, reason: str) -> None:
        """Make every read from now on raise ``UnreadablePostError(reason)`` (unless it ended)."""
        with self._ready:
            if self._ended or self._failure is not None:
                return
            self._failure = reason
            self._chunks.clear()
            self._buffered = 0
            self._ready.notify_all()
            self._wake_loop()

    # The reader's side.

    def read(self, size: int | None = -1) -> bytes:
        parts: list[bytes | memoryview] = []
        with self._ready:
            if size is None or size < 0:
                while self._next(parts, sys.maxsize):
                    pass
            else:
                left = size
                while left > 0 and (taken := self._next(parts, left)):
                    left -= taken
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return parts[0]
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        parts: list[bytes | memoryview] = []
        filled = 0
        with self._ready:
            while filled < len(view) and (taken := self._next(parts, len(view) - filled)):
                view[filled : filled + taken] = parts.pop()
                filled += taken
        return filled

    def read1(self, size: int = -1) -> bytes:
        """Return what has arrived, up to ``size`` bytes; block only while nothing has."""
        parts: list[bytes | memoryview] = []
        with self._ready:
            self._next(parts, sys.maxsize if size is None or size < 0 else size)
        return bytes(parts[0]) if parts else b""

    def readline(self, size: int | None = -1) -> bytes:
        limit = sys.maxsize if size is None or size < 0 else size
        line = bytearray()
        with self._ready:
            parts: list[bytes | memoryview] = []
            while len(line) < limit and self._next(parts, limit - len(line)):
                chunk = parts.pop()
                newline = bytes(chunk).find(b"\n")
                if newline >= 0:
                    self._unread(chunk[newline + 1 :])
                    chunk = chunk[: newline + 1]
                line += chunk
                if newline >= 0:
                    break
        return bytes(line)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._ready:
            if self._closed:
                return
            self._closed = True
            if not self._ended and self._failure is None:
                self._failure = "the request body was closed before it was read"
            self._chunks.clear()
            self._buffered = 0
            self._ready.notify_all()
            self._wake_loop()

    def _next(self, parts: list[bytes | memoryview], most: int) -> int:
        """Append the next chunk of at most ``most`` bytes to ``parts``; 0 at the end.

        Called with the lock held; waits for the loop when nothing is buffered.
        """
        while True:
            if self._failure is not None:
                raise UnreadablePostError(self._failure)
            if self._chunks:
                chunk = self._chunks.popleft()
                if len(chunk) > most:
                    rest = memoryview(chunk)[most:]
                    self._chunks.appendleft(rest)
                    chunk = memoryview(chunk)[:most]
                self._buffered -= len(chunk)
                if self._loop_waits and self._buffered < self._max_buffered:
                    self._wake_loop()
                parts.append(chunk)
                return len(chunk)
            if self._ended or self._closed:
                return 0
            if threading.get_ident() == self._loop_thread:
                raise RuntimeError(
                    "django-tempstore streams this request's body: it cannot be read "
                    "synchronously on the event loop. Read it in a thread "
                    "(sync_to_async), or spool it (TempStoreASGIHandler.streams())."
                )
            self._wanted = min(most, self._max_buffered)
            try:
                self._ready.wait()
            finally:
                self._wanted = 0

    def _unread(self, chunk: bytes | memoryview) -> None:
        if len(chunk):
            self._chunks.appendleft(chunk)
            self._buffered += len(chunk)

    def _wake_loop(self) -> None:
        if not self._loop_waits:
            return
        self._loop_waits = False
        if threading.get_ident() == self._loop_thread:
            self._space.set()
        else:
            with contextlib.suppress(RuntimeError):  # The loop is closed: nobody waits.
                self._loop.call_soon_threadsafe(self._space.set)


class TempStoreASGIHandler(ASGIHandler):
    """``ASGIHandler`` that streams request bodies, and spools the rest in ``TEMPSTORE_DIR``.

    A body that ``streams()`` is read by the view's thread while it arrives;
    a client that disconnects meanwhile makes that read raise
    ``UnreadablePostError``. Any other body is spooled before the view runs, as
    Django does: on Linux in an ``O_TMPFILE`` file (elsewhere it is unlinked as
    soon as it is created) that never has a name, so it is gone with its file
    descriptor, whether the request ends, fails, the client disconnects or the
    process is killed.
    """

    #: Bytes a streamed body may hold in memory, as multiples of ``TEMPSTORE_CHUNK_SIZE``.
    stream_buffer_chunks = 2

    def streams(self, scope: Mapping[str, Any], length: int | None) -> bool:
        """Whether this request's body streams into the view (else it is spooled first).

        A body streams when it declares its ``Content-Length`` and the view its
        path resolves to is a sync one (or the body is empty). Django's parsers
        ignore a body without a length (chunked); an async view may read the
        body on the event loop, where a streamed body cannot be waited for (the
        read raises ``RuntimeError``). Middleware is not looked at: a project
        whose async middleware reads ``request.POST`` or ``request.body`` must
        override this to spool those requests.
        """
        if length is None:
            return False
        return length == 0 or _resolves_to_sync_view(scope)

    async def handle(
        self, scope: dict[str, Any], receive: Receive, send: Send
    ) -> HttpResponseBase | None:
        content_type = _header(scope, b"content-type")
        limit = max_body_size(content_type)
        try:
            length = int(_header(scope, b"content-length"))
        except ValueError:
            length = None
        try:
            if length is not None and limit is not None and length > limit:
                raise _too_large()
            if length is not None and content_type.lower().startswith("multipart/form-data"):
                from . import quota  # Imports models: not before django.setup().

                await sync_to_async(quota.check_request)(length)
        except UploadRejected as rejection:
            await self._refuse(scope, rejection, send)
            return None
        from .handlers import RequestScope

        token = _body_limit.set(limit)
        length_token = _body_length.set(length)
        spools: list[Any] = []
        spools_token = _spools.set(spools)
        with RequestScope.collect() as scopes:
            try:
                if self.streams(scope, length):
                    assert length is not None
                    await self._handle_streamed(scope, receive, send, length)
                else:
                    await super().handle(scope, receive, send)
            except _Refused as refused:
                # Raised by read_body(), before the request started.
                await self._refuse(scope, refused.rejection, send)
            finally:
                _body_limit.reset(token)
                _body_length.reset(length_token)
                _spools.reset(spools_token)
                for spool in spools:
                    await sync_to_async(_release_spool)(spool)
                # A request cancelled by a client disconnect is never closed. In
                # this request's sync thread, so after a view still running there.
                for request_scope in scopes:
                    await sync_to_async(request_scope.close)()
        return None

    async def _handle_streamed(
        self, scope: dict[str, Any], receive: Receive, send: Send, length: int
    ) -> None:
        """Django's ``handle()``, with the body read while the view runs instead of before."""
        body = BodyStream(length, self.stream_buffer_chunks * conf.CHUNK_SIZE)
        set_script_prefix(get_script_prefix(scope))
        await signals.request_started.asend(sender=self.__class__, scope=scope)
        # A file for Django's purposes: read(), readline(), close().
        request, error_response = self.create_request(scope, cast("IO[bytes]", body))
        if request is None:
            body.close()
            assert error_response is not None
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request: HttpRequest, send: Send) -> HttpResponseBase:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # A disconnect during the send.
                await self.send_response(response, send)
            return response

        # As Django's: the receiving task first, so that it is checked and
        # cancelled before the request's; it ends only with a disconnect.
        tasks = [
            asyncio.create_task(self._receive_body(body, receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    with contextlib.suppress(RequestAborted):  # The client disconnected.
                        task.result()
                else:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            try:
                response = tasks[1].result()
            except asyncio.CancelledError:
                await signals.request_finished.asend(sender=self.__class__)
            else:
                if response is not None:
                    await sync_to_async(response.close)()
        finally:
            # A view still running in its thread (its task was cancelled) stops reading.
            body.close()

    async def _receive_body(self, body: BodyStream, receive: Receive) -> None:
        """Feed ``body`` from ``receive()``, then wait for the disconnect as Django does."""
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    body.fail("the client disconnected before the whole body arrived")
                    raise RequestAborted()
                if message.get("body"):
                    await body.put(message["body"])
                if not message.get("more_body", False):
                    break
        except BaseException:
            body.fail("the request ended before its body arrived")
            raise
        body.end()
        await self.listen_for_disconnect(receive)

    async def read_body(self, receive: Receive) -> IO[bytes]:
        """Spool the request body into ``TEMPSTORE_DIR``, as Django does in the system's."""
        limit = _body_limit.get()
        length = _body_length.get()
        spools = _spools.get()
        in_memory = settings.FILE_UPLOAD_MAX_MEMORY_SIZE
        body_file = tempfile.SpooledTemporaryFile(  # noqa: SIM115  (closed by Django)
            max_size=in_memory, mode="w+b", dir=str(ensure_dir())
        )
        size = 0
        # Past the in-memory part, the spool is on the temp disk: bounded by the
        # quota (a reservation on a row of its own) and the free-disk floor.
        covered = in_memory
        spool: Any = None
        interval = conf.HEARTBEAT_INTERVAL.total_seconds()
        next_heartbeat = time.monotonic() + interval
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestAborted()
                if "body" in message:
                    size += len(message["body"])
                    if limit is not None and size > limit:
                        raise _Refused(_too_large())  # A chunked body with no length.
                    if size > covered:
                        if spool is None and spools is not None and conf.QUOTA is not None:
                            spool = await sync_to_async(_start_spool)()
                            spools.append(spool)
                        covered = await sync_to_async(_cover_spool)(spool, size, length)
                    elif spool is not None and time.monotonic() >= next_heartbeat:
                        next_heartbeat = time.monotonic() + interval
                        await sync_to_async(_heartbeat_spool)(spool, size)
                    try:
                        body_file.write(message["body"])
                    except OSError as exc:
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise _Refused(InsufficientStorage()) from exc
                        raise
                if not message.get("more_body", False):
                    break
        except UploadRejected as exc:
            body_file.close()
            raise _Refused(exc) from exc
        except BaseException:
            body_file.close()
            raise
        body_file.seek(0)
        return body_file

    async def _refuse(self, scope: dict[str, Any], rejection: UploadRejected, send: Send) -> None:
        from .middleware import rejection_response  # Imports models: not before django.setup().

        request, response = self.create_request(scope, io.BytesIO())
        if request is not None:
            response = rejection_response(request, rejection)
        assert response is not None
        await self.send_response(response, send)
        await sync_to_async(response.close)()


def _resolves_to_sync_view(scope: Mapping[str, Any]) -> bool:
    script_name = get_script_prefix(scope)
    path_info = str(scope["path"])
    if script_name:
        path_info = path_info.removeprefix(script_name)
    try:
        match = get_resolver().resolve(path_info)
    except Exception:
        # A 404 (or a path another urlconf serves), or a broken urlconf that
        # Django reports when it resolves the request: spool, as Django does.
        return False
    return not iscoroutinefunction(match.func)


def get_asgi_application() -> TempStoreASGIHandler:
    """Set up Django and return the ASGI application, like Django's function of that name."""
    django.setup(set_prefix=False)
    return TempStoreASGIHandler()


# The spool's row: its reservation counts the spool's bytes against
# TEMPSTORE_QUOTA while the spool exists (the tracked files reserve their own),
# and a process killed meanwhile leaves a receiving row that the sweep closes.
# These run in a thread (sync_to_async); lifecycle and quota import the models,
# which cannot be imported before django.setup(), hence the imports inside.


def _start_spool() -> Any:
    from . import lifecycle

    with _database_answers():
        return lifecycle.start(original_name="(ASGI request body spool)")


def _cover_spool(spool: Any, size: int, length: int | None) -> int:
    from . import quota

    with _database_answers():
        if spool is None:
            quota.check_free_space(quota.BLOCK)
            return size + quota.BLOCK
        return quota.cover(spool, size, bound=length)


def _heartbeat_spool(spool: Any, size: int) -> None:
    from . import lifecycle

    with _database_answers():
        lifecycle.heartbeat(spool, size)


def _release_spool(spool: Any) -> None:
    from . import lifecycle
    from .models import Transitions

    try:
        lifecycle.close(spool, Transitions.DISCARD, "the request body spool was closed")
    except Exception:
        logger.exception("django-tempstore could not close the spool row %s", spool.pk)


@contextlib.contextmanager
def _database_answers() -> Iterator[None]:
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        logger.warning("django-tempstore could not reach the database: %s", exc)
        raise ServiceUnavailable(reason="the database did not answer") from exc
