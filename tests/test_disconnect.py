"""A client that disconnects mid-body leaves no temp file, no spool and no pending row.

Against a real gunicorn (WSGI: the handler streams the file as it arrives) and a
real uvicorn (ASGI: ``TempStoreASGIHandler`` streams a sync view's body the same
way, see tests/test_asgi_streaming.py, and spools an async view's body first, in
TEMPSTORE_DIR).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from django_tempstore.models import State, TempUpload
from tests.conftest import temp_files
from tests.servers import wait_until
from tests.utils import multipart, request_head

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

# Larger than TEMPSTORE_CHUNK_SIZE (1 MiB, gunicorn must read a whole chunk before
# the handler sees the file) and than FILE_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB, the
# ASGI spool rolls over to disk past it), so half of it reaches the disk.
FILE_SIZE = 8 * 1024 * 1024


def server_pids(server) -> list[int]:
    """The server's processes: gunicorn's arbiter and workers, or uvicorn."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == server.proc.pid:  # The process group it leads.
            pids.append(int(stat.parent.name))
    return pids


def open_files_in(server, directory: Path) -> list[str]:
    """Targets of the server's file descriptors that point into ``directory``."""
    prefix = str(directory) + os.sep
    targets = []
    for pid in server_pids(server):
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(prefix):
                targets.append(target)
    return targets


def send_half_then_close(server, tempstore_dir: Path, path: str = "/accept/") -> dict[str, object]:
    """Send headers and half of a large file part, check it landed, then close."""
    body, content_type = multipart({"file": ("big.bin", os.urandom(FILE_SIZE))})
    half = len(body) // 2
    seen: dict[str, object] = {}
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(request_head(path, content_type, len(body), server.port))
        sock.sendall(body[:half])
        # The body reached the disk: the server holds a file in TEMPSTORE_DIR.
        assert wait_until(lambda: open_files_in(server, tempstore_dir), timeout=10)
        seen["open"] = open_files_in(server, tempstore_dir)
        seen["listed"] = temp_files(tempstore_dir)
        seen["rows"] = list(TempUpload.objects.values_list("state", flat=True))
    finally:
        sock.close()
    return seen


def test_disconnect_mid_file_on_gunicorn_fails_the_upload(gunicorn, tempstore_dirs, assert_clean):
    seen = send_half_then_close(gunicorn, tempstore_dirs)

    # The handler was streaming the file when the client went away.
    assert seen["rows"] == [State.RECEIVING]
    assert [p.name for p in seen["listed"]] == [TempUpload.objects.get().name]
    assert wait_until(lambda: not TempUpload.objects.pending().exists(), timeout=10)
    assert wait_until(lambda: not temp_files(tempstore_dirs), timeout=10)
    row = TempUpload.objects.get()
    assert row.state == State.FAILED
    assert row.closed_at is not None
    assert wait_until(lambda: not open_files_in(gunicorn, tempstore_dirs), timeout=10)
    assert_clean()


def test_disconnect_mid_body_on_uvicorn_drops_the_spool(uvicorn, tempstore_dirs, assert_clean):
    seen = send_half_then_close(uvicorn, tempstore_dirs, "/accept-async/")

    # An async view's body is spooled before any handler runs: no row yet, and the spool
    # in TEMPSTORE_DIR has no name (O_TMPFILE), only a file descriptor.
    assert seen["rows"] == []
    assert seen["listed"] == []
    assert all(target.endswith("(deleted)") for target in seen["open"]), seen["open"]
    assert wait_until(lambda: not open_files_in(uvicorn, tempstore_dirs), timeout=10)
    assert TempUpload.objects.count() == 0
    assert_clean()


def test_uvicorn_spools_in_tempstore_dir_then_the_handler_takes_over(
    uvicorn, tempstore_dirs, assert_clean
):
    content = os.urandom(FILE_SIZE)
    body, content_type = multipart({"file": ("big.bin", content)})
    half = len(body) // 2
    with socket.create_connection(("127.0.0.1", uvicorn.port)) as sock:
        # An async view: its body is spooled (a sync view's streams).
        sock.sendall(request_head("/accept-async/", content_type, len(body), uvicorn.port))
        sock.sendall(body[:half])
        assert wait_until(lambda: open_files_in(uvicorn, tempstore_dirs), timeout=10)
        spool = open_files_in(uvicorn, tempstore_dirs)
        listed_while_spooling = temp_files(tempstore_dirs)
        sock.sendall(body[half:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk

    assert len(spool) == 1
    assert spool[0].endswith("(deleted)")
    assert listed_while_spooling == []
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(payload)["file"][0]["size"] == FILE_SIZE
    # The response is sent before Django closes it (and the request's uploads).
    assert wait_until(lambda: TempUpload.objects.get().state == State.DISCARDED, timeout=10)
    assert wait_until(lambda: not temp_files(tempstore_dirs), timeout=10)
    assert wait_until(lambda: not open_files_in(uvicorn, tempstore_dirs), timeout=10)
    assert_clean()
