"""Under uvicorn, the ASGI body spool is bounded by the quota and the free-disk floor.

A body is spooled when it cannot stream: it has no Content-Length (chunked), or
it goes to an async view (``/accept-async/``).
"""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from django_tempstore import quota
from django_tempstore.models import TempUpload
from django_tempstore.storage import free_space
from tests.conftest import temp_files
from tests.quota_utils import parse_answer, post
from tests.servers import run_server, wait_until
from tests.test_exdev import tmpfs_tempstore  # noqa: F401 (a fixture)
from tests.utils import content_type, multipart_one

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024


def uvicorn_with(tmp_path, settings, **tempstore):
    for key, value in tempstore.items():
        setattr(settings, f"TEMPSTORE_{key}", value)
    extra = json.dumps({f"TEMPSTORE_{key}": value for key, value in tempstore.items()})
    return run_server("uvicorn", tmp_path, TEMPSTORE_TEST_SETTINGS=extra)


def settled(directory) -> bool:
    return (
        not TempUpload.objects.pending().exists()
        and temp_files(directory) == []
        and quota.counter_value() == 0
    )


def post_chunked(port: int, body: bytes, piece: int = 256 * 1024):
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length)."""
    head = (
        f"POST /accept/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type()}\r\nTransfer-Encoding: chunked\r\n"
        "Accept: application/json\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        try:
            for start in range(0, len(body), piece):
                chunk = body[start : start + piece]
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return parse_answer(data, len(body))


def test_two_concurrent_bodies_that_each_fit_do_not_pass_together(
    tmp_path, settings, tempstore_dirs
):
    body = multipart_one("a.bin", os.urandom(10 * MiB))
    with uvicorn_with(tmp_path, settings, QUOTA=24 * MiB) as server:
        alone = post(server.port, "/accept-async/", body, content_type())
        assert alone.status == 200, alone.body
        assert wait_until(lambda: settled(tempstore_dirs))
        answers = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(
                    post(server.port, "/accept-async/", body, content_type(), pause=0.01)
                )
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(answer.status for answer in answers)
        # Both spools and both files at once would be 40 MiB on a 24 MiB quota.
        assert 507 in statuses, statuses
        assert set(statuses) <= {200, 507}, [a.body for a in answers]
        assert all(a.headers.get("retry-after") for a in answers if a.status == 507)
        assert wait_until(lambda: settled(tempstore_dirs)), server.log.read_text()
    assert "Traceback" not in server.log.read_text()


def test_chunked_body_is_bounded_by_the_quota(tmp_path, settings, tempstore_dirs):
    with uvicorn_with(tmp_path, settings, QUOTA=8 * MiB) as server:
        answer = post_chunked(server.port, multipart_one("c.bin", os.urandom(32 * MiB)))
        assert answer.status == 507, answer.body
        assert answer.headers.get("retry-after")
        assert wait_until(lambda: settled(tempstore_dirs)), server.log.read_text()
    assert "Traceback" not in server.log.read_text()


def test_chunked_body_is_bounded_by_the_free_disk_floor(tmp_path, settings, tempstore_dirs):
    tempstore_dirs.mkdir(parents=True, exist_ok=True)
    # Far above what is free (the disk is shared, and free space moves by
    # gigabytes while other tests or benchmarks run): the first byte the spool
    # would put on disk is past the floor, the in-memory part is not.
    floor = free_space() + 1024**4
    with uvicorn_with(tmp_path, settings, QUOTA=None, MIN_FREE_SPACE=floor) as server:
        answer = post_chunked(server.port, multipart_one("c.bin", os.urandom(32 * MiB)))
        assert answer.status == 507, answer.body
        assert wait_until(lambda: settled(tempstore_dirs)), server.log.read_text()
    assert "Traceback" not in server.log.read_text()


@pytest.mark.root
def test_a_full_disk_under_the_spool_is_507_not_500(
    tmp_path,
    settings,
    tmpfs_tempstore,  # noqa: F811
):
    # No quota and no floor: only the 64 MiB tmpfs itself bounds the spool.
    with uvicorn_with(
        tmp_path, settings, DIR=str(tmpfs_tempstore), QUOTA=None, MIN_FREE_SPACE=0
    ) as server:
        answer = post_chunked(server.port, multipart_one("big.bin", os.urandom(96 * MiB)))
        assert answer.status == 507, answer.body
        assert wait_until(lambda: settled(tmpfs_tempstore)), server.log.read_text()
    assert "Traceback" not in server.log.read_text()
