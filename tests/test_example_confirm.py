"""The example's "upload now, confirm later": a kept upload, then stored or dropped."""

from __future__ import annotations

import sys

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from django_tempstore.models import State, TempUpload
from tests.conftest import temp_files
from tests.servers import ROOT

# The example's package, as manage.py puts it on the path.
if str(ROOT / "example_project") not in sys.path:
    sys.path.append(str(ROOT / "example_project"))

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("example.urls")]

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 2000


@pytest.fixture
def example_site(settings):
    settings.EXAMPLE_MAX_IMAGE_SIZE = 8 * 1024 * 1024
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [ROOT / "example_project/example/templates"]}
    ]


def upload_for_later(client, *names: str):
    files = [SimpleUploadedFile(name, PNG, "image/png") for name in names]
    return client.post("/", {"files": files, "later": "on"})


def test_later_keeps_the_uploads_and_the_confirm_page_lists_them(
    client, example_site, tempstore_dirs
):
    response = upload_for_later(client, "a.png", "b.png")

    assert response.status_code == 302
    assert response.url == "/confirm/"
    rows = TempUpload.objects.order_by("original_name")
    assert [(r.original_name, r.state) for r in rows] == [
        ("a.png", State.KEPT),
        ("b.png", State.KEPT),
    ]
    assert len(temp_files(tempstore_dirs)) == 2
    page = client.get("/confirm/").content.decode()
    assert "a.png" in page and "b.png" in page
    assert "2.0\xa0KiB" in page
    assert 'value="store"' in page and 'value="drop"' in page


def test_confirm_stores_the_kept_uploads(client, example_site, tempstore_dirs, settings):
    upload_for_later(client, "keep.png")

    response = client.post("/confirm/", {"action": "store"})

    assert response.status_code == 302
    row = TempUpload.objects.get()
    assert row.state == State.PERSISTED
    assert (settings.MEDIA_ROOT / row.persisted_name).read_bytes() == PNG
    assert temp_files(tempstore_dirs) == []
    assert "Nothing waits" in client.get("/confirm/").content.decode()


def test_drop_discards_the_kept_uploads(client, example_site, tempstore_dirs):
    upload_for_later(client, "drop.png")

    client.post("/confirm/", {"action": "drop"})

    row = TempUpload.objects.get()
    assert row.state == State.DISCARDED
    assert row.reason == "dropped on the confirm page"
    assert temp_files(tempstore_dirs) == []


def test_json_upload_for_later_names_the_confirm_page(client, example_site):
    files = [SimpleUploadedFile("x.png", PNG, "image/png")]
    response = client.post(
        "/", {"files": files, "later": "on"}, headers={"Accept": "application/json"}
    )

    assert response.status_code == 201
    assert response.json() == {"saved": [], "confirm": "/confirm/"}
    assert TempUpload.objects.get().state == State.KEPT
