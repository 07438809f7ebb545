"""100 concurrent uploads of the same filename to a real multi-worker, multi-thread gunicorn."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from django_tempstore.models import State, TempUpload
from tests.conftest import temp_files
from tests.servers import run_server, wait_until
from tests.utils import multipart, raw_post, starts

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

UPLOADS = 100


@pytest.fixture
@starts("server")
def busy_gunicorn(transactional_db, tmp_path: Path):
    args = ("--workers", "2", "--worker-class", "gthread", "--threads", "8")
    with run_server("gunicorn", tmp_path, args=args) as server:
        yield server


def post(port: int, path: str, filename: str, content: bytes) -> tuple[bytes, dict]:
    head, payload = raw_post(port, path, *multipart({"file": (filename, content)}), timeout=60)
    return head, json.loads(payload) if head.startswith(b"HTTP/1.1 200") else {}


def test_concurrent_uploads_get_distinct_files_and_rows(busy_gunicorn, settings, assert_clean):
    contents = [f"{i:04d}".encode() + os.urandom(20_000) for i in range(UPLOADS)]

    with ThreadPoolExecutor(max_workers=UPLOADS) as pool:
        results = list(
            pool.map(
                lambda content: post(busy_gunicorn.port, "/persist/", "same.bin", content),
                contents,
            )
        )

    heads = [head.split(b"\r\n")[0] for head, _ in results]
    assert heads == [b"HTTP/1.1 200 OK"] * UPLOADS
    names = [payload["name"] for _, payload in results]
    assert len(set(names)) == UPLOADS  # The same client filename, 100 distinct files.
    for name, content in zip(names, contents, strict=True):
        assert (settings.MEDIA_ROOT / name).read_bytes() == content
    rows = list(TempUpload.objects.all())
    assert len(rows) == UPLOADS
    assert len({row.name for row in rows}) == UPLOADS
    assert {row.state for row in rows} == {State.PERSISTED}
    assert sorted(row.persisted_name for row in rows) == sorted(names)
    assert wait_until(lambda: not TempUpload.objects.pending().exists(), timeout=10)
    assert wait_until(lambda: not temp_files(settings.TEMPSTORE_DIR), timeout=10)
    assert_clean()


def test_concurrent_uploads_discarded_at_request_end_leave_nothing(
    busy_gunicorn, tempstore_dirs, assert_clean
):
    with ThreadPoolExecutor(max_workers=UPLOADS) as pool:
        results = list(
            pool.map(
                lambda i: post(busy_gunicorn.port, "/accept/", "x.bin", os.urandom(20_000)),
                range(UPLOADS),
            )
        )

    assert all(head.startswith(b"HTTP/1.1 200") for head, _ in results)
    paths = {payload["file"][0]["path"] for _, payload in results}
    assert len(paths) == UPLOADS
    assert wait_until(
        lambda: TempUpload.objects.filter(state=State.DISCARDED).count() == UPLOADS, timeout=10
    )
    assert wait_until(lambda: not temp_files(tempstore_dirs), timeout=10)
    assert_clean()
