"""TempStoreASGIHandler: the spool lives in TEMPSTORE_DIR; impossible bodies are refused first."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import stat
import weakref
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.asgi import ASGIHandler
from django.test import RequestFactory
from django.utils import timezone

from django_tempstore import handlers, quota
from django_tempstore.asgi import TempStoreASGIHandler, max_body_size
from django_tempstore.models import QuotaCounter, State, TempUpload
from django_tempstore.storage import new_name
from django_tempstore.sweep import sweep
from django_tempstore.validators import FileValidation
from tests.utils import multipart

pytestmark = pytest.mark.django_db(transaction=True)


def call(body: bytes, content_type: str, *, length: int | None = None, chunk: int = 65536):
    """Run one request through the handler; return (status, headers, body, messages read)."""
    headers = [(b"content-type", content_type.encode()), (b"accept", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/accept/",
        "raw_path": b"/accept/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    read = []
    sent: list[dict] = []

    async def receive():
        if len(read) < len(pieces):
            read.append(pieces[len(read)])
            return {"type": "http.request", "body": read[-1], "more_body": len(read) < len(pieces)}
        await asyncio.Event().wait()  # A connected client: no message until the end.

    async def send(message):
        sent.append(message)

    async_to_sync(TempStoreASGIHandler())(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), payload, len(read)


def test_upload_through_the_handler_is_tracked_and_cleaned(tempstore_dirs, assert_clean):
    body, content_type = multipart({"file": ("a.bin", os.urandom(300_000))})

    status, _, payload, _ = call(body, content_type, length=len(body))

    assert status == 200
    assert json.loads(payload)["file"][0]["size"] == 300_000
    assert TempUpload.objects.get().state == State.DISCARDED
    assert stat.S_IMODE(tempstore_dirs.stat().st_mode) == 0o700
    assert_clean()


def test_spool_is_created_in_tempstore_dir(settings, tempstore_dirs, monkeypatch):
    import tempfile

    dirs = []
    real = tempfile.SpooledTemporaryFile

    def spy(*args, **kwargs):
        dirs.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", spy)
    body, content_type = multipart({"file": ("a.bin", b"x" * 1000)})
    call(body, content_type, length=len(body))

    assert dirs == [str(tempstore_dirs)]


def test_body_that_cannot_fit_the_file_limit_is_refused_before_reading(settings, assert_clean):
    settings.TEMPSTORE_MAX_FILE_SIZE = 1000
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    body, content_type = multipart({"file": ("a.bin", b"x" * 10)})
    limit = max_body_size(content_type)
    assert limit is not None

    status, _, payload, read = call(body, content_type, length=limit + 1)

    assert status == 413
    assert "fewer or smaller files" in json.loads(payload)["error"]
    assert read == 0
    assert TempUpload.objects.count() == 0
    assert_clean()


def test_chunked_body_over_the_limit_is_refused_while_spooling(settings, assert_clean):
    settings.TEMPSTORE_MAX_FILE_SIZE = 1000
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 1
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 1
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body, content_type = multipart({"file": ("a.bin", b"x" * 100_000)})

    status, _, _, read = call(body, content_type, length=None, chunk=4096)

    assert status == 413
    assert read < len(body) // 4096
    assert TempUpload.objects.count() == 0
    assert_clean()


def test_body_larger_than_the_free_quota_is_refused_with_507(settings, assert_clean):
    settings.TEMPSTORE_QUOTA = 30_000
    QuotaCounter.objects.create(scope=quota.SCOPE, used=20_000)  # held by other uploads
    body, content_type = multipart({"file": ("a.bin", b"x" * 20_000)})

    status, headers, _, read = call(body, content_type, length=len(body))

    assert status == 507
    assert headers[b"Retry-After"] == b"60"
    assert read == 0
    assert_clean()


def test_body_larger_than_the_whole_quota_is_refused_with_413(settings, assert_clean):
    settings.TEMPSTORE_QUOTA = 10_000
    body, content_type = multipart({"file": ("a.bin", b"x" * 20_000)})

    status, _, _, read = call(body, content_type, length=len(body))

    assert status == 413
    assert read == 0
    assert_clean()


def test_no_bound_without_every_limit(settings):
    settings.TEMPSTORE_MAX_FILE_SIZE = None
    assert max_body_size("multipart/form-data; boundary=x") is None
    settings.TEMPSTORE_MAX_FILE_SIZE = 10
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = None
    assert max_body_size("multipart/form-data; boundary=x") is None
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 1
    assert max_body_size("application/json") is None
    assert max_body_size("multipart/form-data; boundary=x") is not None


def test_small_multipart_within_limits_is_accepted(settings, assert_clean):
    settings.TEMPSTORE_MAX_FILE_SIZE = 1000
    body, content_type = multipart({"file": ("a.bin", b"x" * 900)}, {"title": "t"})

    status, _, payload, _ = call(body, content_type, length=len(body))

    assert status == 200
    assert json.loads(payload)["file"][0]["size"] == 900
    assert_clean()


@pytest.mark.parametrize("handler", [TempStoreASGIHandler, ASGIHandler])
@pytest.mark.parametrize("validators", [[], ["tests.test_asgi.AnyFile"]])
def test_disconnect_while_the_view_runs_closes_the_uploads(
    settings, handler, validators, assert_clean, caplog, monkeypatch
):
    """Django never closes a request cancelled by a disconnect: the handler cleans up after it.

    With Django's own ASGIHandler nothing closes it: the garbage collector writes
    nothing, Django's handler is warned about, and the sweep closes the row.
    """
    from tests import views

    monkeypatch.setattr(handlers, "_warned_foreign_asgi", False)

    settings.TEMPSTORE_VALIDATORS = validators
    views.PARSED.clear()
    views.RELEASE.clear()
    body, content_type = multipart({"file": ("a.bin", os.urandom(300_000))})
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/parse-then-wait/",
        "raw_path": b"/parse-then-wait/",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if messages:
            return messages.pop()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, views.PARSED.wait, 30)
        # Let the view finish only once Django has given up on it.
        loop.call_later(0.5, views.RELEASE.set)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async_to_sync(handler())(scope, receive, send)

    assert views.PARSED.is_set()
    assert not any(m["type"] == "http.response.start" for m in sent)
    if handler is ASGIHandler:
        gc.collect()
        assert "not served by django_tempstore.asgi.TempStoreASGIHandler" in caplog.text
        assert "ended without closing its uploads" in caplog.text
        assert TempUpload.objects.get().state == State.COMPLETE
        # Once its TEMPSTORE_COMPLETE_TTL has passed, the sweep closes it.
        TempUpload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        sweep()
        assert not TempUpload.objects.pending().exists()
    else:
        assert "TempStoreASGIHandler" not in caplog.text
        assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_file_validation_does_not_keep_the_request_alive():
    request = RequestFactory().post("/")
    upload = TempUpload(name=new_name())
    FileValidation([AnyFile()], upload, request)
    alive = weakref.ref(request)

    del request
    gc.collect()

    assert alive() is None
    assert upload._tempstore_validation.request is None


class AnyFile:
    """A validator that accepts everything (its presence is what matters)."""

    def start(self, upload, request):
        pass

    def chunk(self, upload, data, offset):
        pass

    def complete(self, upload, size):
        pass

    def parsed(self, upload, request):
        pass


def test_request_scope_close_is_idempotent(client, tempstore_dirs, assert_clean):
    from django_tempstore.handlers import RequestScope

    request = RequestFactory().post("/")
    scope = RequestScope.of(request)
    assert RequestScope.of(request) is scope
    scope.close()
    scope.close()
    assert scope.closed
    assert_clean()
