"""The uploaded-file object that ``request.FILES`` holds."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from . import lifecycle, quota, signals
from .conf import conf
from .exceptions import InsufficientStorage, ServiceUnavailable, UploadStateError
from .models import State, TempUpload
from .storage import create_temp, same_file

if TYPE_CHECKING:
    from django.core.files.storage import Storage

    _UploadedFile = UploadedFile[bytes]
else:  # Django's classes are not subscriptable at run time.
    _UploadedFile = UploadedFile

logger = logging.getLogger("django_tempstore")


class TempStoreUploadedFile(_UploadedFile):
    """An upload streamed to a tracked temp file in ``TEMPSTORE_DIR``.

    It behaves like Django's ``TemporaryUploadedFile``; in addition it can be
    persisted atomically, kept past the request, or discarded, and its row is
    closed when the request ends.

    A small request's file is held in memory instead (``in_memory``; see
    ``TEMPSTORE_MAX_MEMORY_SIZE``): its ``temp_upload`` is not written, and
    no temp file exists, until ``temporary_file_path()``, ``keep()`` or
    ``persist()`` spills it (the row first, then the file).
    """

    file: IO[bytes]
    #: The upload's row. A file held in memory builds it on first use (``__getattr__``).
    temp_upload: TempUpload

    def __init__(
        self,
        temp_upload: TempUpload | None,
        file: IO[bytes],
        name: str | None,
        content_type: str | None,
        charset: str | None,
        content_type_extra: dict[str, bytes] | None = None,
        *,
        prepare: Callable[[], TempUpload] | None = None,
    ) -> None:
        super().__init__(file, name, content_type, 0, charset, content_type_extra)
        if temp_upload is not None:
            self.temp_upload = temp_upload
        #: Builds the row of a file held in memory (a ``lifecycle.prepare()``).
        self._prepare = prepare
        #: The row's fields a file held in memory has set before its row was built.
        self._fields: dict[str, Any] = {"state": State.RECEIVING, "size": 0, "digest": ""}
        self._path_handed_out = False
        self._moved_to: str | None = None
        self._spilled_in_atomic = False
        #: The bytes of a file held in memory that was closed before it was spilled.
        self._closed_content = b""
        #: True while the content is only in ``file`` (a ``BytesIO``), with no row.
        self.in_memory = prepare is not None

    def __getattr__(self, name: str) -> Any:
        # Only called for a missing attribute: the row of a file held in memory,
        # which costs a model instance, is built when someone asks for it.
        prepare = self.__dict__.get("_prepare")
        if name != "temp_upload" or prepare is None:
            raise AttributeError(name)
        upload = prepare()
        for key, value in self._fields.items():
            setattr(upload, key, value)
        self.temp_upload = upload
        return upload

    @classmethod
    def in_memory_file(
        cls,
        prepare: Callable[[], TempUpload],
        name: str | None,
        content_type: str | None,
        charset: str | None,
        content_type_extra: dict[str, bytes] | None = None,
        *,
        digest_algorithm: str = "",
    ) -> TempStoreUploadedFile:
        """A file held in memory, whose row ``prepare()`` builds (not writes) when needed."""
        file = cls(
            None, io.BytesIO(), name, content_type, charset, content_type_extra, prepare=prepare
        )
        file._fields["digest_algorithm"] = digest_algorithm
        return file

    def field(self, name: str) -> Any:
        """A field of the row, without building the row of a file held in memory."""
        upload = self.__dict__.get("temp_upload")
        return self._fields[name] if upload is None else getattr(upload, name)

    def set_fields(self, **values: Any) -> None:
        """Set fields of the row (not written), without building the row of a file in memory."""
        upload = self.__dict__.get("temp_upload")
        if upload is None:
            self._fields.update(values)
            return
        for key, value in values.items():
            setattr(upload, key, value)

    def spill(self) -> None:
        """Move a file held in memory to a tracked temp file: write its row, then the file.

        The bytes are reserved against the quota before they are written (507 if
        it has no room). A complete file's row then takes ``complete`` (and
        ``upload_received`` is sent), as if it had been streamed to disk. Does
        nothing for a file already on disk.
        """
        if not self.in_memory:
            return
        upload = self.temp_upload
        if upload.state not in (State.RECEIVING, State.COMPLETE):
            raise UploadStateError(f"Cannot spill upload {upload.pk} in state {upload.state!r}.")
        buffer: io.BytesIO = self.file  # type: ignore[assignment]
        complete, size, digest = upload.state == State.COMPLETE, upload.size, upload.digest
        # A view may close the file (``with f.open(): ...``) before it persists it.
        position = 0 if buffer.closed else buffer.tell()
        # Inside the view's transaction on TEMPSTORE_DATABASE the row is only
        # there if it commits; the request's end checks (end_of_request()).
        self._spilled_in_atomic = transaction.get_connection(conf.DATABASE).in_atomic_block
        lifecycle.insert(upload)
        try:
            fh = create_temp(upload.name)
        except OSError as exc:
            lifecycle.fail(upload, f"could not create the temp file: {exc}")
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage() from exc
            logger.error("django-tempstore cannot create a temp file: %s", exc)
            raise ServiceUnavailable(reason="the temp file could not be created") from exc
        data = self._closed_content if buffer.closed else buffer.getvalue()
        try:
            quota.cover(upload, len(data), bound=len(data))
            view = memoryview(data)
            while view:
                view = view[fh.write(view) :]
        except BaseException as exc:
            fh.close()
            reason = getattr(exc, "reason", None) or f"could not write the temp file: {exc}"
            lifecycle.fail(upload, reason)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage() from exc
            raise
        fh.seek(position)
        buffer.close()
        self.file, self.in_memory, self._closed_content = fh, False, b""
        if complete:
            lifecycle.complete(upload, size, digest, announce=False)

            def received() -> None:
                signals.upload_received.send(sender=TempUpload, upload=upload)

            transaction.on_commit(received, using=conf.DATABASE)

    @property
    def sha256(self) -> str | None:
        """Hex digest of the content, if ``TEMPSTORE_DIGEST`` is sha256."""
        digest: str = self.field("digest")
        if self.field("digest_algorithm") == "sha256" and digest:
            return digest
        return None

    @property
    def digest(self) -> str:
        return str(self.field("digest"))

    def temporary_file_path(self) -> str:
        """Return the full path of the temp file (spilling a file held in memory)."""
        self.spill()
        self._path_handed_out = True
        return str(self.temp_upload.path)

    def persist(self, name: str, storage: Storage | None = None) -> str:
        """Store the file permanently as ``name``; return the final name."""
        self.spill()
        self.file.close()
        return lifecycle.persist(self.temp_upload, name, storage)

    def keep(self, ttl: float | None = None) -> None:
        """Keep the temp file after the request, until ``ttl`` seconds from now."""
        if self.in_memory and self.field("state") != State.COMPLETE:
            raise UploadStateError(
                f"Cannot keep upload {self.temp_upload.pk} in state {self.field('state')!r}."
            )
        self.spill()
        lifecycle.keep(self.temp_upload, ttl)

    def discard(self) -> None:
        """Delete the temp file now (or forget a file held in memory: no row, no signal)."""
        self.file.close()
        if self.in_memory:
            self.set_fields(state=State.DISCARDED)
            return
        lifecycle.discard(self.temp_upload, reason="discarded by the application")

    def close(self) -> None:
        self._notice_move()
        if self.in_memory and not self.file.closed:
            # Closing a BytesIO drops its bytes; a file on disk can still be
            # persisted after close(), so this one keeps them (shared, not copied).
            self._closed_content = self.file.getvalue()  # type: ignore[attr-defined]
        with contextlib.suppress(FileNotFoundError):
            self.file.close()

    def _notice_move(self) -> None:
        """Record where the temp file went if a Django storage moved it.

        FileSystemStorage moves a file that has ``temporary_file_path()``
        itself; while the handle is open, its inode tells where it went.
        """
        if self._moved_to is not None or self.in_memory or self.file.closed:
            return
        try:
            fd = self.file.fileno()
            st = os.fstat(fd)
        except (OSError, ValueError):
            return
        if same_file(self.temp_upload.path, st):
            return
        if st.st_nlink == 0:
            self._moved_to = ""  # Copied away, then removed (across filesystems).
            return
        try:
            self._moved_to = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            self._moved_to = ""

    def end_of_request(self) -> None:
        """Close the row of an upload its request did not persist or keep."""
        self.close()
        if self.in_memory:
            return  # No row, no file: nothing to close.
        upload = self.temp_upload
        if self._spilled_in_atomic and not lifecycle.row_exists(upload):
            # Spilled inside a transaction that rolled back: its row went with it.
            lifecycle.forget_rolled_back(upload)
            return
        lifecycle.rollback_uncommitted(upload)
        if upload.state == State.RECEIVING:
            lifecycle.fail(upload, "the request ended before the file was complete")
        elif upload.state == State.COMPLETE:
            moved_to = self._moved_to
            if moved_to is not None and self._path_handed_out:
                lifecycle.moved(upload, moved_to)
            else:
                lifecycle.discard(upload)
