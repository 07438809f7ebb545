"""Client filenames are data: they never reach a temp path, and persist() stays in MEDIA_ROOT."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from django_tempstore.handlers import TempStoreUploadHandler
from django_tempstore.models import State, TempUpload
from django_tempstore.storage import NAME_RE
from tests import utils

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT = b"hostile but harmless\n"

HOSTILE = {
    "parent-dirs": b"../../etc/passwd",
    "absolute": b"/etc/passwd",
    "nul-inside": b"evil\x00.txt",
    "nul-only": b"\x00",
    "rtl-override": "invoice\u202egnp.exe".encode(),
    "windows-path": b"C:\\Windows\\evil.exe",
    "windows-parents": b"..\\..\\boot.ini",
    "dot-dot": b"..",
    "dot": b".",
    "percent-encoded": b"%2e%2e%2fetc%2fpasswd",
    "control-chars": b"a\x1b[31mred\x07.txt",
    "long-ascii": b"a" * 900 + b".txt",
    "long-utf8-bytes": ("\u65e5" * 250 + ".txt").encode(),  # 754 bytes > NAME_MAX
    "dot-file": b".htaccess",
}


multipart_raw = partial(utils.multipart_raw, content=CONTENT)


def inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def assert_safe_text(value: str) -> None:
    assert len(value) <= 255
    assert all(ch.isprintable() for ch in value), repr(value)
    assert "/" not in value and "\\" not in value


@pytest.mark.parametrize("filename", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_filename_never_reaches_a_path(client, settings, filename, assert_clean):
    client.raise_request_exception = False
    body, content_type = multipart_raw(filename)

    response = client.generic("POST", "/persist-every/", body, content_type=content_type)

    assert response.status_code == 200, response.content[:500]
    files = response.json()["files"]
    rows = list(TempUpload.objects.all())
    assert len(rows) == len(files) <= 1  # Django drops a file named "." or "..".
    for row, stored in zip(rows, files, strict=True):
        assert NAME_RE.match(row.name)
        assert Path(stored["temp"]) == settings.TEMPSTORE_DIR / row.name
        assert_safe_text(row.original_name)
        assert row.state == State.PERSISTED
        final = settings.MEDIA_ROOT / stored["name"]
        assert inside(final, settings.MEDIA_ROOT)
        assert len(final.name.encode()) <= 255
        assert final.read_bytes() == CONTENT
    assert_clean()


def test_rtl_override_is_stripped_from_the_stored_name(client):
    body, content_type = multipart_raw("invoice\u202egnp.exe".encode())

    client.generic("POST", "/accept/", body, content_type=content_type)

    assert TempUpload.objects.get().original_name == "invoicegnp.exe"


def test_nul_in_field_name_and_content_type_is_stored_as_clean_text(client, assert_clean):
    body, content_type = multipart_raw(
        b"a\x00b.txt", field=b"fi\x00le", part_type=b"text/pl\x00ain"
    )

    response = client.generic("POST", "/accept/", body, content_type=content_type)

    assert response.status_code == 200
    row = TempUpload.objects.get()
    assert "\x00" not in row.original_name + row.field_name + row.content_type
    assert row.original_name == "ab.txt"
    assert_clean()


def test_ten_thousand_character_filename_is_refused_by_the_parser_not_500(client, assert_clean):
    client.raise_request_exception = False
    body, content_type = multipart_raw(b"a" * 10_000 + b".txt")

    response = client.generic("POST", "/persist-every/", body, content_type=content_type)

    # Django caps a part's headers at 1024 bytes: a bad request, no file.
    assert response.status_code == 400
    assert TempUpload.objects.count() == 0
    assert_clean()


def test_ten_thousand_character_filename_given_to_the_handler_is_bounded(settings, assert_clean):
    # Parsers that take the name from elsewhere (a URL, a raw Content-Disposition)
    # can hand the handler a name of any length.
    handler = TempStoreUploadHandler(request=None)
    handler.new_file("file", "\u202e" + "a" * 10_000 + ".txt", "text/plain", None)
    handler.receive_data_chunk(CONTENT, 0)
    upload = handler.file_complete(len(CONTENT))

    row = upload.temp_upload
    assert NAME_RE.match(row.name)
    assert len(row.original_name) == 255
    assert row.original_name.endswith(".txt")
    assert_safe_text(row.original_name)
    name = upload.persist(upload.name)
    final = settings.MEDIA_ROOT / name
    assert inside(final, settings.MEDIA_ROOT)
    assert final.read_bytes() == CONTENT
    assert_clean()
