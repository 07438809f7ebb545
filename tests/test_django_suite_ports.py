"""Django's file_uploads tests that assume its stock handler list, ported to our handler.

``test_stop_upload_temporary_file_handler`` and ``test_upload_interrupted_temporary_file_handler``
in Django's suite replace the stock TemporaryFileUploadHandler by list position, which our single
handler does not have (docs/django-suite.md); these are the same checks on our handler.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadhandler import StopUpload
from django.http import HttpRequest, JsonResponse
from django.test.client import BOUNDARY, MULTIPART_CONTENT
from django.urls import path

from django_tempstore.handlers import TempStoreUploadHandler
from django_tempstore.models import State, TempUpload
from tests.utils import upload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]


class StopUploadTempStoreHandler(TempStoreUploadHandler):
    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        raise StopUpload()


def _temp_path(request: HttpRequest, handler: TempStoreUploadHandler) -> JsonResponse:
    request.upload_handlers = [handler]
    request.FILES  # noqa: B018 (parses the body)
    return JsonResponse({"temp_path": handler.file.temporary_file_path()})


def stop_upload(request: HttpRequest) -> JsonResponse:
    return _temp_path(request, StopUploadTempStoreHandler(request))


def upload_interrupted(request: HttpRequest) -> JsonResponse:
    return _temp_path(request, TempStoreUploadHandler(request))


urlpatterns = [
    path("stop_upload/", stop_upload),
    path("upload_interrupted/", upload_interrupted),
]


def test_stop_upload_leaves_no_temp_file(client, assert_clean):
    response = client.post("/stop_upload/", {"file": upload(content=b"a")})

    assert not Path(response.json()["temp_path"]).exists()
    assert TempUpload.objects.get().state == State.FAILED
    assert_clean()


def test_upload_interrupted_leaves_no_temp_file(client, assert_clean):
    # The body ends without its closing boundary, as in Django's test (which cuts Django's
    # Parser short; the handler parses the body with its own parser, so the body is cut here).
    body = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        f"a\r\n--{BOUNDARY}"
    )
    response = client.generic("POST", "/upload_interrupted/", body, content_type=MULTIPART_CONTENT)

    assert not Path(response.json()["temp_path"]).exists()
    assert TempUpload.objects.get().state == State.FAILED
    assert_clean()
