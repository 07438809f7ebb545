"""Under uvicorn, a sync view's body streams into the handler as it arrives: one write per byte.

What the server process wrote is read from ``/proc/<pid>/io`` (``wchar``: the
bytes passed to ``write()``), before and after one request.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from django_tempstore import quota
from django_tempstore.models import State, TempUpload
from tests.conftest import temp_files
from tests.quota_utils import post
from tests.servers import run_server, wait_until
from tests.test_disconnect import open_files_in, send_half_then_close
from tests.utils import content_type, multipart, multipart_head, multipart_one

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024
QUOTA = 64 * MiB


@pytest.fixture
def uvicorn_quota(transactional_db, tmp_path, settings):
    """uvicorn with a quota: a spool would take a row and a reservation of its own."""
    settings.TEMPSTORE_QUOTA = QUOTA
    with run_server("uvicorn", tmp_path, TEMPSTORE_TEST_QUOTA=str(QUOTA)) as server:
        yield server


def written(server) -> int:
    for line in Path(f"/proc/{server.proc.pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/<pid>/io")


def settled(directory: Path) -> bool:
    return (
        not TempUpload.objects.pending().exists()
        and temp_files(directory) == []
        and quota.counter_value() == 0
    )


@pytest.mark.parametrize(("path", "writes"), [("/accept/", 1), ("/accept-async/", 2)])
def test_a_sync_view_gets_each_byte_written_once(uvicorn_quota, tempstore_dirs, path, writes):
    size = 16 * MiB
    body, ctype = multipart({"file": ("a.bin", os.urandom(size))})
    before = written(uvicorn_quota)

    answer = post(uvicorn_quota.port, path, body, ctype)
    assert wait_until(lambda: settled(tempstore_dirs)), uvicorn_quota.log.read_text()

    assert answer.status == 200, answer.body
    assert answer.json()["file"][0]["size"] == size
    # Streamed: the tracked file only. Spooled (an async view): the spool too,
    # past its in-memory part, with a row of its own.
    assert round((written(uvicorn_quota) - before) / size) == writes
    rows = TempUpload.objects.values_list("original_name", flat=True)
    assert len(rows) == writes
    assert "a.bin" in rows


def test_disconnect_mid_file_on_uvicorn_fails_the_upload(
    uvicorn_quota, tempstore_dirs, assert_clean
):
    seen = send_half_then_close(uvicorn_quota, tempstore_dirs)

    # The handler was writing the file (a named one, no spool) when the client left.
    assert seen["rows"] == [State.RECEIVING]
    assert [p.name for p in seen["listed"]] == [TempUpload.objects.get().name]
    assert not any(target.endswith("(deleted)") for target in seen["open"]), seen["open"]
    assert wait_until(lambda: settled(tempstore_dirs), timeout=10), uvicorn_quota.log.read_text()
    row = TempUpload.objects.get()
    assert row.state == State.FAILED
    assert row.closed_at is not None
    assert wait_until(lambda: not open_files_in(uvicorn_quota, tempstore_dirs), timeout=10)
    assert "Traceback" not in uvicorn_quota.log.read_text()
    assert_clean()


def test_two_streamed_bodies_that_each_fit_pass_together(tmp_path, settings, tempstore_dirs):
    """Counted once, two 10 MiB files fit a 24 MiB quota (spooled, they do not)."""
    settings.TEMPSTORE_QUOTA = 24 * MiB
    body = multipart_one("a.bin", os.urandom(10 * MiB))
    with run_server("uvicorn", tmp_path, TEMPSTORE_TEST_QUOTA=str(24 * MiB)) as server:
        answers = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(
                    post(server.port, "/accept/", body, content_type(), pause=0.01)
                )
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [a.status for a in answers] == [200, 200], [a.body for a in answers]
        assert wait_until(lambda: settled(tempstore_dirs)), server.log.read_text()
    assert "Traceback" not in server.log.read_text()


def test_tus_patch_under_uvicorn_streams_to_the_file_with_no_spool(uvicorn_quota, tempstore_dirs):
    data = os.urandom(8 * MiB)
    tus = {"Tus-Resumable": "1.0.0"}
    conn = http.client.HTTPConnection("127.0.0.1", uvicorn_quota.port, timeout=60)
    try:
        conn.request("POST", "/files/", headers={**tus, "Upload-Length": str(len(data))})
        created = conn.getresponse()
        created.read()
        assert created.status == 201
        location = urlsplit(created.getheader("Location")).path
        before = written(uvicorn_quota)
        conn.request(
            "PATCH",
            location,
            body=data,
            headers={
                **tus,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        )
        patched = conn.getresponse()
        patched.read()
    finally:
        conn.close()

    assert patched.status == 204, patched.status
    assert patched.getheader("Upload-Offset") == str(len(data))
    assert round((written(uvicorn_quota) - before) / len(data)) == 1
    upload = TempUpload.objects.get()  # No spool row.
    assert upload.state == State.COMPLETE
    assert upload.size == len(data)


def test_file_over_max_size_gets_413_under_uvicorn_without_the_rest_being_read(
    tmp_path, settings, tempstore_dirs
):
    limit = 2 * MiB
    # Below the largest body the site accepts (100 files of 2 MiB): not refused
    # before reading, but by the upload handler, mid-body, as under gunicorn.
    declared = 64 * MiB
    boundary = "b0undary7f3a"
    prefix = multipart_head(boundary, "huge.bin") + os.urandom(limit + 4 * MiB)
    settings.TEMPSTORE_MAX_FILE_SIZE = limit
    extra = json.dumps({"TEMPSTORE_MAX_FILE_SIZE": limit})
    with run_server("uvicorn", tmp_path, TEMPSTORE_TEST_SETTINGS=extra) as server:
        answer = post(server.port, "/accept/", prefix, content_type(boundary), declared=declared)

        assert answer.status == 413, answer.body
        assert answer.json()["code"] == "file_too_large"
        assert answer.sent <= len(prefix) < declared
        assert wait_until(lambda: settled(tempstore_dirs)), server.log.read_text()
        row = TempUpload.objects.get()
        assert row.state == State.FAILED
        assert "TEMPSTORE_MAX_FILE_SIZE" in row.reason


def test_connection_lost_mid_streamed_upload_is_503_and_frees_everything(
    tmp_path, settings, tempstore_dirs
):
    from django.db import connection

    from tests.test_faults_database import assert_database_loss_answers_503

    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend needs PostgreSQL")
    settings.TEMPSTORE_QUOTA = 256 * MiB
    with run_server("uvicorn", tmp_path, TEMPSTORE_TEST_QUOTA=str(256 * MiB)) as server:
        assert_database_loss_answers_503(server, tempstore_dirs)
    assert "Traceback" not in server.log.read_text()
