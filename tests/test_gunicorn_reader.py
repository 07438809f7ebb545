"""Under gunicorn the handler reads a body of known length from the client socket itself.

Built from gunicorn's own classes (``SocketUnreader``, ``LengthReader``, ``Body``) on
a real socket pair, as gunicorn's sync worker builds them, so that the state
gunicorn is left in (its counters, what it buffered past the body) is checked, and
that its reader was not used. The servers' tests (test_disconnect.py and the
others under gunicorn) run the same path end to end.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIRequest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from django_tempstore.handlers import RequestScope, TempStoreUploadHandler
from django_tempstore.models import State, TempUpload
from django_tempstore.multipart import gunicorn_reader
from tests.utils import content_type, multipart_one

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


class Connection:
    """gunicorn's reader objects on one end of a socket pair; the client holds the other."""

    def __init__(self, body_length: int, *, timeout: float | None = None) -> None:
        self.server, self.client = socket.socketpair()
        self.server.settimeout(timeout)
        self.unreader = SocketUnreader(self.server)
        self.reader = LengthReader(self.unreader, body_length)
        self.body = Body(self.reader)
        self.chunks: list[int] = []
        read_chunk = self.unreader.chunk

        def counted(size_hint: int | None = None) -> bytes:
            data = read_chunk(size_hint)
            self.chunks.append(len(data))
            return data

        # An instance attribute: the unreader's type stays SocketUnreader.
        self.unreader.chunk = counted

    def request(self, length: int) -> WSGIRequest:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/upload/",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "CONTENT_TYPE": content_type(),
            "CONTENT_LENGTH": str(length),
            "wsgi.input": self.body,
            "gunicorn.socket": self.server,
        }
        request = WSGIRequest(environ)
        request.upload_handlers = [TempStoreUploadHandler(request)]
        return request

    def send(self, data: bytes, *, then_close: bool = False) -> threading.Thread:
        def run() -> None:
            self.client.sendall(data)
            if then_close:
                self.client.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def close(self) -> None:
        self.server.close()
        self.client.close()


@pytest.fixture
def connection() -> Iterator[Any]:
    made: list[Connection] = []

    def make(length: int, **kwargs: Any) -> Connection:
        made.append(Connection(length, **kwargs))
        return made[-1]

    yield make
    for conn in made:
        conn.close()


def parse(request: WSGIRequest) -> dict[str, Any]:
    try:
        return {
            key: (f.size, hashlib.sha256(f.read()).hexdigest(), f.sha256)
            for key, f in request.FILES.items()
        }
    finally:
        RequestScope.of(request).close()


def test_the_body_is_read_from_the_socket_after_what_gunicorn_buffered(connection, assert_clean):
    content = os.urandom(5 * MiB + 123)
    body = multipart_one("big.bin", content)
    conn = connection(len(body))
    # What gunicorn read past the headers, as its parser leaves it: in the unreader.
    conn.unreader.unread(body[:1000])
    sender = conn.send(body[1000:])
    request = conn.request(len(body))
    files = parse(request)
    sender.join()
    want = hashlib.sha256(content).hexdigest()
    assert files == {"file": (len(content), want, want)}
    assert conn.chunks == []  # gunicorn's reader never ran.
    assert conn.reader.length == 0  # gunicorn sees the body consumed.
    assert request.read() == b""
    assert_clean()


def test_what_gunicorn_buffered_past_the_body_stays_in_its_buffer(connection):
    body = multipart_one("small.txt", b"hello")
    pipelined = b"GET /next/ HTTP/1.1\r\nHost: x\r\n\r\n"
    conn = connection(len(body))
    conn.unreader.unread(body + pipelined)
    files = parse(conn.request(len(body)))
    assert files["file"][0] == 5
    assert conn.chunks == []
    assert conn.unreader.buf.getvalue() == pipelined


def test_a_client_that_stops_mid_body_fails_the_upload_and_leaves_no_file(connection, assert_clean):
    body = multipart_one("cut.bin", os.urandom(3 * MiB))
    conn = connection(len(body))
    sender = conn.send(body[: 2 * MiB], then_close=True)
    request = conn.request(len(body))
    assert parse(request) == {}
    sender.join()
    (row,) = TempUpload.objects.all()
    assert row.state == State.FAILED
    assert "ended mid-file" in row.reason
    assert_clean()


def test_a_socket_with_a_timeout_is_left_to_gunicorns_reader(connection):
    content = os.urandom(2 * MiB)
    body = multipart_one("t.bin", content)
    conn = connection(len(body), timeout=30)
    sender = conn.send(body)
    request = conn.request(len(body))
    assert gunicorn_reader(request, len(body)) is None
    files = parse(request)
    sender.join()
    assert files["file"][:2] == (len(content), hashlib.sha256(content).hexdigest())
    assert sum(conn.chunks) == len(body)


def test_only_an_unread_body_whose_length_gunicorn_agrees_with_is_taken(connection):
    conn = connection(100)
    assert gunicorn_reader(conn.request(100), 99) is None
    started = conn.request(100)
    started._read_started = True
    assert gunicorn_reader(started, 100) is None
    assert gunicorn_reader(conn.request(100), 100) is not None
