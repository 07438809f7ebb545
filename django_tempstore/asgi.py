"""An ASGI handler that spools request bodies into ``TEMPSTORE_DIR``.

Django's ``ASGIHandler`` reads the whole request body before the view runs,
into a ``SpooledTemporaryFile`` that rolls over to the system temp dir past
``FILE_UPLOAD_MAX_MEMORY_SIZE``; only then does the upload handler stream the
files out of it. ``TempStoreASGIHandler`` puts that spool in ``TEMPSTORE_DIR``
(created 0700) and refuses, before the body is spooled, a multipart body that
could never be accepted.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import IO, Any

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.db import InterfaceError, OperationalError
from django.http import HttpResponseBase

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


class TempStoreASGIHandler(ASGIHandler):
    """``ASGIHandler`` whose body spool lives in ``TEMPSTORE_DIR``.

    On Linux the spool is an ``O_TMPFILE`` file (elsewhere it is unlinked as
    soon as it is created): it never has a name, so it is gone with its file
    descriptor, whether the request ends, fails, the client disconnects or the
    process is killed.
    """

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
