"""Errors that end an upload with a clear HTTP answer instead of a 500.

Each class has its own HTTP ``status`` and a stable machine-readable ``code``
(sent in the JSON answer); messages are translatable. ``docs/errors.md`` lists
them with the setting behind each.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import BadRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .units import binary_size


class UploadRejected(BadRequest):
    """An upload refused by django-tempstore.

    A subclass of ``BadRequest`` so that, even without ``TempStoreMiddleware``,
    Django answers 400 rather than 500; the middleware turns it into ``status``.
    """

    status = 400
    #: A stable identifier for clients, sent in the JSON answer.
    code = "upload_rejected"
    #: A short sentence telling the client what to do.
    message: Any = _("The upload was refused.")
    #: Seconds for a ``Retry-After`` header, when waiting may help.
    retry_after: int | None = None

    def __init__(self, message: Any = None, *, status: int | None = None, reason: str = "") -> None:
        if message is not None:
            self.message = message
        if status is not None:
            self.status = status
        #: Why, for the row's ``reason`` and the logs (not sent to the client).
        self.reason = reason or str(self.message)
        super().__init__(self.message)


class FileTooLarge(UploadRejected):
    status = 413
    code = "file_too_large"
    message = _("The file is larger than this site accepts. Send a smaller file.")

    @classmethod
    def for_limit(cls, limit: int, name: str = "") -> FileTooLarge:
        """The refusal of a file larger than ``limit`` bytes, naming the limit and the file."""
        values = {"name": name, "limit": binary_size(limit)}
        if name:
            message = gettext(
                "%(name)s is larger than the %(limit)s this site accepts. Send a smaller file."
            )
        else:
            message = gettext(
                "The file is larger than the %(limit)s this site accepts. Send a smaller file."
            )
        return cls(
            message % values,
            reason=f"{name or 'the file'} is larger than TEMPSTORE_MAX_FILE_SIZE ({limit} bytes)",
        )


class InsufficientStorage(UploadRejected):
    status = 507
    code = "insufficient_storage"
    message = _("The server has no room for this upload right now. Try again later.")


class ServiceUnavailable(UploadRejected):
    """A part the upload needs (the database, the temp dir, the scanner) cannot serve now."""

    status = 503
    code = "service_unavailable"
    message = _("The server cannot take uploads right now. Try again later.")

    def __init__(
        self,
        message: Any = None,
        *,
        reason: str = "",
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        if retry_after is not None:
            self.retry_after = retry_after


class ValidationRejected(UploadRejected):
    status = 422
    code = "validation_rejected"
    message = _("The file was refused.")


class UnsupportedMediaType(ValidationRejected):
    status = 415
    code = "unsupported_media_type"
    message = _("This kind of file is not accepted here.")


class DigestMismatch(ValidationRejected):
    status = 422
    code = "digest_mismatch"
    message = _("The file's content does not match the digest sent with it. Send it again.")


class UploadInfected(ValidationRejected):
    """A scanner found malware; the upload ends ``quarantined``."""

    status = 422
    code = "upload_infected"
    message = _("The file was refused because it looks infected.")

    def __init__(self, signature: str, message: Any = None) -> None:
        self.signature = signature
        super().__init__(message)


class UploadClosed(UploadRejected):
    """The upload's row was closed (by a sweep) while its body was still arriving."""

    status = 409
    code = "upload_closed"
    message = _("The server cancelled this upload while receiving it. Send it again.")

    def __init__(self) -> None:
        super().__init__(reason="the upload was closed by another process while receiving")


class UploadStateError(UploadRejected, ValueError):
    """A call the upload's state does not allow (persist a discarded upload, keep a
    persisted one), or a state that changed under the call (a sweep won the race).

    Also a ``ValueError``, which is what these calls raised before.
    """

    status = 409
    code = "upload_state"
    message = _("This upload was already closed. Send the file again.")

    def __init__(self, reason: str) -> None:
        super().__init__(reason=reason)

    def __str__(self) -> str:
        return self.reason
