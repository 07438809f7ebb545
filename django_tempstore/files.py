"""The uploaded-file object that ``request.FILES`` holds."""

from __future__ import annotations

import contextlib
import os
from typing import IO, TYPE_CHECKING

from django.core.files.uploadedfile import UploadedFile

from . import lifecycle
from .models import State, TempUpload
from .storage import same_file

if TYPE_CHECKING:
    from django.core.files.storage import Storage

    _UploadedFile = UploadedFile[bytes]
else:  # Django's classes are not subscriptable at run time.
    _UploadedFile = UploadedFile


class TempStoreUploadedFile(_UploadedFile):
    """An upload streamed to a tracked temp file in ``TEMPSTORE_DIR``.

    It behaves like Django's ``TemporaryUploadedFile``; in addition it can be
    persisted atomically, kept past the request, or discarded, and its row is
    closed when the request ends.
    """

    file: IO[bytes]

    def __init__(
        self,
        temp_upload: TempUpload,
        file: IO[bytes],
        name: str | None,
        content_type: str | None,
        charset: str | None,
        content_type_extra: dict[str, bytes] | None = None,
    ) -> None:
        super().__init__(file, name, content_type, 0, charset, content_type_extra)
        self.temp_upload = temp_upload
        self._path_handed_out = False
        self._moved_to: str | None = None

    @property
    def sha256(self) -> str | None:
        """Hex digest of the content, if ``TEMPSTORE_DIGEST`` is sha256."""
        if self.temp_upload.digest_algorithm == "sha256" and self.temp_upload.digest:
            return self.temp_upload.digest
        return None

    @property
    def digest(self) -> str:
        return self.temp_upload.digest

    def temporary_file_path(self) -> str:
        """Return the full path of the temp file."""
        self._path_handed_out = True
        return str(self.temp_upload.path)

    def persist(self, name: str, storage: Storage | None = None) -> str:
        """Store the file permanently as ``name``; return the final name."""
        self.file.close()
        return lifecycle.persist(self.temp_upload, name, storage)

    def keep(self, ttl: float | None = None) -> None:
        """Keep the temp file after the request, until ``ttl`` seconds from now."""
        lifecycle.keep(self.temp_upload, ttl)

    def discard(self) -> None:
        """Delete the temp file now."""
        self.file.close()
        lifecycle.discard(self.temp_upload, reason="discarded by the application")

    def close(self) -> None:
        self._notice_move()
        with contextlib.suppress(FileNotFoundError):
            self.file.close()

    def _notice_move(self) -> None:
        """Record where the temp file went if a Django storage moved it.

        FileSystemStorage moves a file that has ``temporary_file_path()``
        itself; while the handle is open, its inode tells where it went.
        """
        if self._moved_to is not None or self.file.closed:
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
        upload = self.temp_upload
        self.close()
        lifecycle.rollback_uncommitted(upload)
        if upload.state == State.RECEIVING:
            lifecycle.fail(upload, "the request ended before the file was complete")
        elif upload.state == State.COMPLETE:
            moved_to = self._moved_to
            if moved_to is not None and self._path_handed_out:
                lifecycle.moved(upload, moved_to)
            else:
                lifecycle.discard(upload)
