"""A real server shares the test's database and temp dir."""

from __future__ import annotations

import json

import pytest

from django_tempstore.models import State, TempUpload
from tests.conftest import temp_files
from tests.servers import wait_until
from tests.utils import multipart, raw_post

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def test_upload_through_a_real_server_is_discarded(server, tempstore_dirs, assert_clean):
    body, content_type = multipart({"file": ("a.bin", b"x" * 100_000)})
    head, payload = raw_post(server.port, "/accept/", body, content_type)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(payload)["file"][0]["size"] == 100_000
    # Under ASGI the response is sent before Django closes the request, and the
    # row is closed just before the file is unlinked.
    assert wait_until(lambda: TempUpload.objects.get().state == State.DISCARDED, timeout=10)
    assert wait_until(lambda: not temp_files(tempstore_dirs), timeout=10)
    assert_clean()
