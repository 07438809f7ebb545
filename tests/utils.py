"""Helpers shared by the tests: uploads, multipart bodies, raw HTTP, signal spies, markers."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.dispatch import Signal

from django_tempstore import process

OCTET_STREAM = "application/octet-stream"

# Uploads


def upload(
    name: str = "data.bin",
    content: bytes | None = None,
    *,
    size: int = 0,
    content_type: str = OCTET_STREAM,
) -> SimpleUploadedFile:
    """A file for the test client's ``post()``: ``content``, or ``size`` random bytes."""
    if content is None:
        content = os.urandom(size)
    return SimpleUploadedFile(name, content, content_type=content_type)


# Multipart bodies, for raw sockets and ASGI calls


def multipart(
    files: dict[str, tuple[str, bytes]], fields: dict[str, str] | None = None
) -> tuple[bytes, str]:
    """Encode ``files`` (field -> (filename, content)) as multipart/form-data."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in (fields or {}).items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for name, (filename, content) in files.items():
        parts.append(multipart_head(boundary, filename, name) + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), content_type(boundary)


def multipart_raw(
    filename: bytes,
    content: bytes,
    *,
    field: bytes = b"file",
    part_type: bytes = OCTET_STREAM.encode(),
) -> tuple[bytes, str]:
    """One file part whose filename, field name and type are sent byte for byte."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="'
        + field
        + b'"; filename="'
        + filename
        + b'"\r\nContent-Type: '
        + part_type
        + b"\r\n\r\n"
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, content_type(boundary)


def multipart_head(boundary: str, filename: str, field_name: str = "file") -> bytes:
    """The headers of one file part, up to where its content starts."""
    return (
        f"--{boundary}\r\nContent-Disposition: form-data; "
        f'name="{field_name}"; filename="{filename}"\r\n'
        f"Content-Type: {OCTET_STREAM}\r\n\r\n"
    ).encode()


def multipart_one(filename: str, content: bytes, boundary: str = "b0undary7f3a") -> bytes:
    """A body of one file part with a fixed boundary (see ``content_type``)."""
    return multipart_head(boundary, filename) + content + f"\r\n--{boundary}--\r\n".encode()


def content_type(boundary: str = "b0undary7f3a") -> str:
    return f"multipart/form-data; boundary={boundary}"


# Raw HTTP/1.1 over a socket, for real servers


def request_head(path: str, content_type: str, length: int, port: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as the end)."""
    response = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        response += chunk
    return response


def raw_post(
    port: int, path: str, body: bytes, content_type: str, *, timeout: float | None = None
) -> tuple[bytes, bytes]:
    """POST the whole ``body`` on a new connection; return the answer's (head, payload)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request_head(path, content_type, len(body), port) + body)
        response = read_response(sock)
    head, _, payload = response.partition(b"\r\n\r\n")
    return head, payload


# Signals


Receiver = Callable[..., object]


@contextlib.contextmanager
def connected(signal: Signal, receiver: Receiver) -> Iterator[Receiver]:
    """Connect ``receiver`` to ``signal`` for the duration of the block."""
    signal.connect(receiver, weak=False)
    try:
        yield receiver
    finally:
        signal.disconnect(receiver)


# Markers of system tests: a test that starts a process or needs root says so.

#: Markers that take a test out of the fast set; each implies the ``system`` marker.
SYSTEM_MARKERS = ("server", "celery", "browser", "root", "clamd")
#: Fixture name -> marker that each test using it (directly or not) receives.
FIXTURE_MARKERS: dict[str, str] = {}
_F = TypeVar("_F", bound=Callable[..., Any])
_current_test: pytest.Item | None = None


def starts(marker: str) -> Callable[[_F], _F]:
    """Declare that a fixture starts what ``marker`` stands for (under ``@pytest.fixture``)."""
    assert marker in SYSTEM_MARKERS, marker

    def register(function: _F) -> _F:
        FIXTURE_MARKERS[function.__name__] = marker
        return function

    return register


def set_current_test(item: pytest.Item | None) -> None:
    global _current_test
    _current_test = item


def require_marker(marker: str, what: str) -> None:
    """Fail the running test unless it carries ``marker``, so CI can choose where it runs."""
    item = _current_test
    if item is not None and item.get_closest_marker(marker) is None:
        pytest.fail(
            f"{item.nodeid} starts {what}: mark it @pytest.mark.{marker} "
            f"(or use a fixture declared with @starts({marker!r}))",
            pytrace=False,
        )


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has ended, a zombie included (nothing here may reap it)."""
    return process.start_ticks(pid) is None
