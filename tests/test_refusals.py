from __future__ import annotations

import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from django_tempstore.units import binary_size

KiB = 1024


@pytest.fixture
def refused(settings):
    settings.TEMPSTORE_CHUNK_SIZE = 64 * KiB
    settings.TEMPSTORE_MAX_FILE_SIZE = 100 * KiB
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.cookies[settings.CSRF_COOKIE_NAME] = "k" * 32
    return client


def big(name: str = "big.bin") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"x" * 300 * KiB)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/accept/", "/csrf/"])
def test_refusal_view_renders_the_refusal_and_keeps_the_status(refused, settings, path):
    settings.TEMPSTORE_REFUSAL_VIEW = "tests.views.refusal_page"

    response = refused.post(path, {"file": big()})

    assert response.status_code == 413
    assert response.content.decode() == (
        "<p class=refusal>big.bin is larger than the 100\xa0KiB this site accepts. "
        "Send a smaller file.</p>"
    )


@pytest.mark.django_db(transaction=True)
def test_refusal_view_is_not_used_for_json(refused, settings):
    settings.TEMPSTORE_REFUSAL_VIEW = "tests.views.refusal_page"

    response = refused.post("/csrf/", {"file": big()}, HTTP_ACCEPT="application/json")

    assert response.status_code == 413
    assert response.json()["code"] == "file_too_large"


@pytest.mark.django_db(transaction=True)
def test_a_refusal_is_one_warning_line_without_a_traceback(refused, caplog):
    with caplog.at_level(logging.INFO):
        response = refused.post("/csrf/", {"file": big()})

    assert response.status_code == 413
    records = [(r.name, r.levelname, r.exc_info) for r in caplog.records]
    assert records == [("django_tempstore", "WARNING", None)]
    assert caplog.records[0].getMessage() == (
        "Upload refused (413 file_too_large) for POST /csrf/: "
        "big.bin is larger than TEMPSTORE_MAX_FILE_SIZE (102400 bytes)"
    )


@pytest.mark.django_db(transaction=True)
def test_a_413_names_the_second_file_of_a_request(refused):
    small = SimpleUploadedFile("small.bin", b"x" * KiB)

    response = refused.post("/accept/", {"a": small, "b": big("second.bin")})

    assert response.status_code == 413
    assert response.content.decode().startswith("second.bin is larger than the 100\xa0KiB")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0\xa0bytes"),
        (1023, "1023\xa0bytes"),
        (1024, "1\xa0KiB"),
        (64 * 1024**2, "64\xa0MiB"),
        (6291634, "6.0\xa0MiB"),
        (int(1.5 * 1024**3), "1.5\xa0GiB"),
    ],
)
def test_binary_size_uses_powers_of_1024(size, text):
    assert binary_size(size) == text
