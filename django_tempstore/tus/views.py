"""The tus endpoints: one handler per HTTP method."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import http_date
from django.utils.translation import gettext as _
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from django_tempstore.conf import conf
from django_tempstore.exceptions import UploadRejected
from django_tempstore.models import State, TempUpload

from . import protocol, uploads
from .uploads import TusError


def _response(status: int, **headers: str) -> HttpResponse:
    response = HttpResponse(status=status)
    response[protocol.TUS_RESUMABLE] = protocol.VERSION
    response["Access-Control-Expose-Headers"] = ", ".join(protocol.EXPOSED_HEADERS)
    response["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _error(exc: UploadRejected) -> HttpResponse:
    response = _response(exc.status)
    response["Content-Type"] = "text/plain; charset=utf-8"
    response.content = (exc.message + "\n").encode()
    if exc.status == 507:
        response["Retry-After"] = str(conf.RETRY_AFTER)
    return response


def _int_header(request: HttpRequest, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise TusError(400, _("%(header)s must be a non-negative integer.") % {"header": name})
    return int(value)


def _upload_headers(upload: TempUpload) -> dict[str, str]:
    headers = {protocol.UPLOAD_OFFSET: str(upload.size)}
    if upload.upload_length is not None:
        headers[protocol.UPLOAD_LENGTH] = str(upload.upload_length)
    else:
        headers[protocol.UPLOAD_DEFER_LENGTH] = "1"
    if upload.expires_at is not None and upload.state == State.RECEIVING:
        headers[protocol.UPLOAD_EXPIRES] = http_date(upload.expires_at.timestamp())
    return headers


@method_decorator(csrf_exempt, name="dispatch")
class TusView(View):
    """Shared checks: the protocol version, method override, errors as tus answers.

    CSRF: a cross-site form can neither send ``Tus-Resumable`` nor PATCH, so the
    version check (412) refuses forged requests without a token.
    """

    http_method_names = ["post", "head", "patch", "delete", "options"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        override = request.headers.get("X-HTTP-Method-Override")
        if override and request.method == "POST":
            request.method = override.upper()
        if request.method != "OPTIONS" and (
            request.headers.get(protocol.TUS_RESUMABLE) != protocol.VERSION
        ):
            return _response(
                protocol.PRECONDITION_FAILED,
                **{protocol.TUS_VERSION: protocol.VERSION},
            )
        try:
            return super().dispatch(request, *args, **kwargs)
        except UploadRejected as exc:
            return _error(exc)

    def options(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        headers = {
            protocol.TUS_VERSION: protocol.VERSION,
            protocol.TUS_EXTENSION: ",".join(protocol.EXTENSIONS),
            protocol.TUS_CHECKSUM_ALGORITHM: ",".join(protocol.CHECKSUM_ALGORITHMS),
            "Access-Control-Allow-Methods": ", ".join(protocol.METHODS),
            "Access-Control-Allow-Headers": ", ".join(protocol.ALLOWED_HEADERS),
            "Access-Control-Max-Age": "86400",
        }
        limit = uploads.max_size()
        if limit is not None:
            headers[protocol.TUS_MAX_SIZE] = str(limit)
        return _response(204, **headers)


class CreationView(TusView):
    """``POST``: create an upload (creation, defer-length, with-upload, concatenation)."""

    def post(self, request: HttpRequest) -> HttpResponse:
        if not uploads.permitted(request, "create", None):
            raise TusError(403, _("You may not create uploads here. Log in first."))
        metadata = uploads.parse_metadata(request.headers.get(protocol.UPLOAD_METADATA, ""))
        concat = request.headers.get(protocol.UPLOAD_CONCAT, "")
        if concat.startswith("final;"):
            ids = [url.rstrip("/").rpartition("/")[2] for url in concat[6:].split()]
            upload = uploads.concatenate(request, ids, metadata)
            return self._created(request, upload, with_offset=False)
        if concat not in ("", "partial"):
            raise TusError(400, _('Upload-Concat must be "partial" or "final;" and URLs.'))
        length = _int_header(request, protocol.UPLOAD_LENGTH)
        if length is None and request.headers.get(protocol.UPLOAD_DEFER_LENGTH) != "1":
            raise TusError(400, _("Send Upload-Length, or Upload-Defer-Length: 1."))
        upload = uploads.create(request, length=length, metadata=metadata, concat=concat)
        body_length = _int_header(request, "Content-Length") or 0
        if body_length:
            if request.content_type != protocol.CONTENT_TYPE:
                raise TusError(
                    415,
                    _("Send the upload's bytes as %(type)s.") % {"type": protocol.CONTENT_TYPE},
                )
            _append(request, upload, body_length, offset=0)
        return self._created(request, upload, with_offset=bool(body_length))

    def _created(
        self, request: HttpRequest, upload: TempUpload, *, with_offset: bool
    ) -> HttpResponse:
        location = request.build_absolute_uri(reverse("tempstore-tus-upload", args=[upload.pk]))
        headers = {"Location": location}
        if with_offset or upload.state != State.RECEIVING:
            headers[protocol.UPLOAD_OFFSET] = str(upload.size)
        if upload.expires_at is not None and upload.state == State.RECEIVING:
            headers[protocol.UPLOAD_EXPIRES] = http_date(upload.expires_at.timestamp())
        return _response(201, **headers)


def _append(request: HttpRequest, upload: TempUpload, content_length: int, offset: int) -> None:
    """Write the body at ``offset`` under the upload's lock, then finish it if complete."""
    checksum = uploads.parse_checksum(request.headers.get(protocol.UPLOAD_CHECKSUM, ""))
    token = uploads.acquire(upload)
    try:
        if upload.size != offset:  # Read again under the lock.
            raise _offset_conflict(upload)
        length = _int_header(request, protocol.UPLOAD_LENGTH)
        if length is not None:
            uploads.set_length(upload, token, length)
        uploads.write(request, upload, token, content_length=content_length, checksum=checksum)
    finally:
        uploads.release(upload, token)
    uploads.finish_if_complete(request, upload)


class UploadView(TusView):
    """``HEAD``, ``PATCH``, ``DELETE`` on one upload."""

    def _get(self, request: HttpRequest, upload_id: str, action: str) -> TempUpload:
        upload = uploads.get(upload_id)
        if not uploads.permitted(request, action, upload):
            # Not 403: whether someone else's upload exists is not the client's business.
            raise uploads.not_found()
        return upload

    def head(self, request: HttpRequest, upload_id: str) -> HttpResponse:
        upload = self._get(request, upload_id, "resume")
        headers = _upload_headers(upload)
        if upload.concat == "partial":
            headers[protocol.UPLOAD_CONCAT] = "partial"
        elif upload.concat == "final":
            headers[protocol.UPLOAD_CONCAT] = "final"
        return _response(200, **headers)

    def patch(self, request: HttpRequest, upload_id: str) -> HttpResponse:
        upload = self._get(request, upload_id, "resume")
        if upload.concat == "final":
            raise TusError(403, _("A final concatenated upload cannot be patched."))
        if request.content_type != protocol.CONTENT_TYPE:
            raise TusError(
                415, _("Send the upload's bytes as %(type)s.") % {"type": protocol.CONTENT_TYPE}
            )
        offset = _int_header(request, protocol.UPLOAD_OFFSET)
        if offset is None:
            raise TusError(400, _("Send Upload-Offset with each PATCH."))
        content_length = _int_header(request, "Content-Length")
        if content_length is None:
            raise TusError(411, _("Send Content-Length with each PATCH."))
        if offset != upload.size or (upload.state != State.RECEIVING and content_length):
            raise _offset_conflict(upload)
        if upload.state == State.RECEIVING:
            _append(request, upload, content_length, offset=offset)
        return _response(204, **_upload_headers(upload))

    def delete(self, request: HttpRequest, upload_id: str) -> HttpResponse:
        upload = self._get(request, upload_id, "delete")
        if upload.state == State.RECEIVING:
            token = uploads.acquire(upload)
            del token  # Held until the row closes: no PATCH may start meanwhile.
        uploads.terminate(upload)
        return _response(204)


def _offset_conflict(upload: TempUpload) -> TusError:
    return TusError(
        protocol.CONFLICT,
        _("Upload-Offset is not this upload's offset (%(offset)s). Ask with HEAD, then resume.")
        % {"offset": upload.size},
    )
