"""An async view can read request.FILES under a real ASGI server."""

from __future__ import annotations

import json

import pytest

from django_tempstore.models import State, TempUpload
from tests.conftest import temp_files
from tests.servers import run_server, wait_until
from tests.utils import multipart, raw_post

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def test_async_view_reads_the_files_under_uvicorn(uvicorn, tempstore_dirs, assert_clean):
    body, content_type = multipart({"file": ("a.bin", b"x" * 100_000)})

    head, payload = raw_post(uvicorn.port, "/accept-async/", body, content_type)

    assert head.startswith(b"HTTP/1.1 200"), head + payload[:2000]
    assert json.loads(payload)["file"][0]["size"] == 100_000
    assert wait_until(lambda: TempUpload.objects.get().state == State.DISCARDED, timeout=10)
    assert wait_until(lambda: not temp_files(tempstore_dirs), timeout=10)
    assert_clean()


def test_async_view_upload_refused_while_parsing_answers_415(
    transactional_db, tmp_path, assert_clean
):
    rules = {
        "NAME": "django_tempstore.validators.AllowedExtensions",
        "OPTIONS": {"extensions": ["txt"]},
    }
    body, content_type = multipart({"file": ("a.exe", b"x" * 1000)})

    with run_server(
        "uvicorn", tmp_path, TEMPSTORE_TEST_SETTINGS=json.dumps({"TEMPSTORE_VALIDATORS": [rules]})
    ) as uvicorn:
        head, payload = raw_post(uvicorn.port, "/accept-async/", body, content_type)

    assert head.startswith(b"HTTP/1.1 415"), head + payload[:2000]
    assert b".txt" in payload
    assert TempUpload.objects.get().state == State.FAILED
    assert_clean()


def test_decorated_async_view_validates_and_answers(uvicorn, tempstore_dirs, assert_clean):
    refused, _ = raw_post(uvicorn.port, "/txt-async/", *multipart({"file": ("a.exe", b"x" * 1000)}))
    accepted, payload = raw_post(
        uvicorn.port, "/txt-async/", *multipart({"file": ("a.txt", b"y" * 1000)})
    )

    assert refused.startswith(b"HTTP/1.1 415"), refused
    assert accepted.startswith(b"HTTP/1.1 200"), accepted + payload[:2000]
    assert json.loads(payload)["file"][0]["size"] == 1000
    assert wait_until(lambda: not TempUpload.objects.pending().exists())
    assert sorted(TempUpload.objects.values_list("state", flat=True)) == [
        State.DISCARDED,
        State.FAILED,
    ]
    assert_clean()
