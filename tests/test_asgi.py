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
from asgiref.sync import async_to_sync, sync_to_async
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


def http_scope(path: str, content_type: str, length: int | None) -> dict:
    """The ASGI scope of a POST to ``path``, with a Content-Length when ``length`` is given."""
    headers = [(b"content-type", content_type.encode()), (b"accept", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


def call(
    body: bytes,
    content_type: str,
    *,
    length: int | None = None,
    chunk: int = 65536,
    path: str = "/accept/",
):
    """Run one request through the handler; return (status, headers, body, messages read)."""
    scope = http_scope(path, content_type, length)
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
    # An async view's body is spooled (a sync view's streams).
    call(body, content_type, length=len(body), path="/accept-async/")

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


# Streaming: a sync view's body is read while it arrives, written once.


def streamed_scope(path: str, length: int, content_type: str) -> dict:
    return http_scope(path, content_type, length)


def test_streamed_upload_is_written_once_with_no_spool(
    settings, tempstore_dirs, monkeypatch, assert_clean
):
    import tempfile

    # Past FILE_UPLOAD_MAX_MEMORY_SIZE, under a quota: a spool would be on disk
    # with a row and a reservation of its own.
    settings.TEMPSTORE_QUOTA = 64 * 1024 * 1024
    spools = []
    real = tempfile.SpooledTemporaryFile
    monkeypatch.setattr(
        tempfile, "SpooledTemporaryFile", lambda *a, **k: spools.append(k) or real(*a, **k)
    )
    content = os.urandom(4 * 1024 * 1024)
    body, content_type = multipart({"file": ("a.bin", content)})

    status, _, payload, _ = call(body, content_type, length=len(body))

    assert status == 200, payload
    assert json.loads(payload)["file"][0]["size"] == len(content)
    assert spools == []
    assert list(TempUpload.objects.values_list("original_name", flat=True)) == ["a.bin"]
    assert quota.counter_value() == 0
    assert_clean()


def test_a_non_form_body_streams_whole_into_request_body(settings, tempstore_dirs, monkeypatch):
    import hashlib
    import tempfile

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", None)  # Any spool would fail.
    body = os.urandom(2 * 1024 * 1024 + 17)  # Below DATA_UPLOAD_MAX_MEMORY_SIZE.

    status, _, payload, read = call(
        body, "application/json", length=len(body), chunk=40_000, path="/body-length/"
    )

    assert status == 200, payload
    assert json.loads(payload) == {
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    assert read == -(-len(body) // 40_000)


def test_streamed_body_is_received_only_as_fast_as_the_view_reads(settings, tempstore_dirs):
    from tests import views

    settings.TEMPSTORE_CHUNK_SIZE = 64 * 1024  # The stream buffers two chunks: 128 KiB.
    body = os.urandom(8 * 1024 * 1024)
    piece = 16 * 1024
    received = [0]

    async def receive():
        if received[0] < len(body):
            data = body[received[0] : received[0] + piece]
            received[0] += len(data)
            if received[0] == 64 * piece:
                views.PAUSE.set()  # Far past the buffer: let the view go on.
            await asyncio.sleep(0)
            return {"type": "http.request", "body": data, "more_body": received[0] < len(body)}
        await asyncio.Event().wait()

    views.PAUSE.clear()
    views.RECEIVED_BY_NOW[:] = [lambda: received[0]]
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def run():
        task = asyncio.ensure_future(
            TempStoreASGIHandler()(
                streamed_scope("/read-slowly/", len(body), "application/octet-stream"),
                receive,
                send,
            )
        )
        # The view waits on PAUSE; the server must stop receiving meanwhile.
        for _ in range(200):
            await asyncio.sleep(0.01)
        views.PAUSE.set()
        await task

    try:
        async_to_sync(run)()
    finally:
        views.RECEIVED_BY_NOW.clear()
    payload = json.loads(
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    )
    assert payload["length"] == len(body)
    # 16 KiB read, 128 KiB buffered, one message waiting: nowhere near 1 MiB.
    assert payload["received_while_paused"] <= 16 * 1024 + 128 * 1024 + 2 * piece


def test_disconnect_mid_body_fails_the_streamed_upload(settings, tempstore_dirs, assert_clean):
    settings.TEMPSTORE_QUOTA = 64 * 1024 * 1024
    body, content_type = multipart({"file": ("a.bin", os.urandom(4 * 1024 * 1024))})
    pieces = [body[i : i + 65536] for i in range(0, len(body) // 2, 65536)]
    seen = []

    async def receive():
        if pieces:
            return {"type": "http.request", "body": pieces.pop(0), "more_body": True}
        # Half the body arrived: the handler is writing the file. (Not in the
        # request's thread: the view blocks it, waiting for the rest.)
        states = sync_to_async(
            lambda: list(TempUpload.objects.values_list("state", flat=True)),
            thread_sensitive=False,
        )
        for _ in range(400):
            if rows := await states():
                seen.extend(rows)
                break
            await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async_to_sync(TempStoreASGIHandler())(
        streamed_scope("/accept/", len(body), content_type), receive, send
    )

    assert seen == [State.RECEIVING]
    assert not any(m["type"] == "http.response.start" for m in sent)
    row = TempUpload.objects.get()
    assert row.state == State.FAILED
    assert quota.counter_value() == 0
    assert_clean()


def test_body_stream_reads_like_a_file_across_messages():
    from django_tempstore.asgi import BodyStream

    data = os.urandom(300_000) + b"line one\nline two\n"

    async def run():
        stream = BodyStream(len(data), max_buffered=50_000)

        def reader():
            out = [stream.read(7), stream.read1(5)]
            buffer = bytearray(100_000)
            n = stream.readinto(buffer)
            out.append(bytes(buffer[:n]))
            out.append(stream.read(len(data) - 7 - len(out[1]) - n - 18))
            out += [stream.readline(), stream.readline(), stream.read(), stream.read(10)]
            return out

        result = asyncio.ensure_future(sync_to_async(reader, thread_sensitive=False)())
        for start in range(0, len(data), 30_001):
            await stream.put(data[start : start + 30_001])
        stream.end()
        return await result

    parts = async_to_sync(run)()

    assert len(parts[0]) == 7
    assert 1 <= len(parts[1]) <= 5
    assert len(parts[2]) == 100_000
    assert b"".join(parts[:4]) == data[:-18]
    assert parts[4:] == [b"line one\n", b"line two\n", b"", b""]


def test_body_stream_read_on_the_event_loop_cannot_wait():
    from django_tempstore.asgi import BodyStream

    async def run():
        stream = BodyStream(10, max_buffered=1024)
        await stream.put(b"12345")
        first = stream.read(5)  # Buffered already: no wait.
        with pytest.raises(RuntimeError, match="event loop"):
            stream.read(5)
        return first

    assert async_to_sync(run)() == b"12345"


def test_body_stream_read_after_a_disconnect_raises():
    from django.http import UnreadablePostError

    from django_tempstore.asgi import BodyStream

    async def run():
        stream = BodyStream(10, max_buffered=1024)
        await stream.put(b"12345")
        stream.fail("gone")
        with pytest.raises(UnreadablePostError, match="gone"):
            await sync_to_async(stream.read, thread_sensitive=False)(10)

    async_to_sync(run)()
