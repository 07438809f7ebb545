"""Errors that end an upload with a clear HTTP answer instead of a 500."""

from __future__ import annotations

from django.core.exceptions import BadRequest
from django.template.defaultfilters import filesizeformat


class UploadRejected(BadRequest):
    """An upload refused by django-tempstore.

    A subclass of ``BadRequest`` so that, even without ``TempStoreMiddleware``,
    Django answers 400 rather than 500; the middleware turns it into ``status``.
    """

    status = 400
    #: A stable identifier for clients, sent in the JSON answer.
    code = "upload_rejected"
    #: A short sentence telling the client what to do.
    message = "The upload was refused."

    def __init__(
        self, message: str | None = None, *, status: int | None = None, reason: str = ""
    ) -> None:
        if message is not None:
            self.message = message
        if status is not None:
            self.status = status
        #: Why, for the row's ``reason`` and the logs (not sent to the client).
        self.reason = reason or self.message
        super().__init__(self.message)


class FileTooLarge(UploadRejected):
    status = 413
    code = "file_too_large"
    message = "The file is larger than this site accepts. Send a smaller file."

    @classmethod
    def for_limit(cls, limit: int) -> FileTooLarge:
        """The refusal of a file larger than ``limit`` bytes, naming the limit."""
        return cls(
            f"The file is larger than the {filesizeformat(limit)} this site accepts. "
            "Send a smaller file.",
            reason=f"the file is larger than TEMPSTORE_MAX_FILE_SIZE ({limit} bytes)",
        )


class InsufficientStorage(UploadRejected):
    status = 507
    code = "insufficient_storage"
    message = "The server has no room for this upload right now. Try again later."


class ValidationRejected(UploadRejected):
    status = 422
    code = "validation_rejected"
    message = "The file was refused."


class UnsupportedMediaType(ValidationRejected):
    status = 415
    message = "This kind of file is not accepted here."


class DigestMismatch(ValidationRejected):
    status = 422
    message = "The file's content does not match the digest sent with it. Send it again."


class UploadInfected(ValidationRejected):
    """A scanner found malware; the upload ends ``quarantined``."""

    status = 422
    message = "The file was refused because it looks infected."

    def __init__(self, signature: str, message: str | None = None) -> None:
        self.signature = signature
        super().__init__(message)


class UploadClosed(UploadRejected):
    """The upload's row was closed (by a sweep) while its body was still arriving."""

    status = 409
    message = "The server cancelled this upload while receiving it. Send it again."

    def __init__(self) -> None:
        super().__init__(reason="the upload was closed by another process while receiving")


class ServiceUnavailable(UploadRejected):
    """A part the upload needs (the database, the temp dir) cannot answer now.

    Answered 503 with ``Retry-After``: the client should send the file again later.
    """

    status = 503
    code = "service_unavailable"
    message = "The server cannot take uploads right now. Try again later."
