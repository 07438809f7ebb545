"""Validators refuse a bad upload while it streams: right status, no file, a failed row."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from functools import partial

import pytest
from django.test import Client

from django_tempstore import signals
from django_tempstore.exceptions import DigestMismatch, UnsupportedMediaType, UploadInfected
from django_tempstore.models import State, TempUpload
from django_tempstore.validators import (
    ExpectedDigest,
    MaxSize,
    UploadValidator,
    parse_digest_header,
    reject,
)
from tests import utils
from tests.utils import multipart, read_response, request_head

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(200_000)
GIF = b"GIF89a" + os.urandom(200_000)


upload = partial(utils.upload, content_type="image/png")


@pytest.fixture
def rejections(signal_spy):
    return signal_spy(signals.upload_rejected, "reason", "status")


def assert_rejected(response, status: int, assert_clean, text: str = "") -> TempUpload:
    assert response.status_code == status, response.content
    assert text in response.content.decode()
    row = TempUpload.objects.get()
    assert row.state == State.FAILED
    assert row.reason.startswith("rejected: ")
    assert row.closed_at is not None
    assert_clean()
    return row


def test_sniffed_type_allowed(client, assert_clean):
    response = client.post("/png-only/", {"file": upload("a.png", PNG)})

    assert response.status_code == 200
    assert response.json()["file"][0]["size"] == len(PNG)
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_sniffed_type_refused_with_415_whatever_the_client_claims(client, assert_clean, rejections):
    response = client.post("/png-only/", {"file": upload("a.png", GIF)})

    row = assert_rejected(response, 415, assert_clean, "image/gif")
    assert "Send one of: image/png" in response.content.decode()
    assert rejections == [(row.pk, row.reason, 415)]


def test_rejection_is_json_when_asked(client, assert_clean):
    response = client.post(
        "/png-only/", {"file": upload("a.png", GIF)}, headers={"Accept": "application/json"}
    )

    assert response.json()["status"] == 415
    assert "image/gif" in response.json()["error"]


def test_rejection_stops_before_the_second_chunk_is_written(client, settings, assert_clean):
    settings.TEMPSTORE_CHUNK_SIZE = 65536
    written = []

    class Spy(UploadValidator):
        def chunk(self, upload, data, offset):
            written.append(offset)

    settings.TEMPSTORE_VALIDATORS = [
        Spy(),
        {"NAME": "django_tempstore.validators.AllowedContentTypes",
         "OPTIONS": {"types": ["image/png"]}},
    ]  # fmt: skip
    response = client.post("/accept/", {"file": upload("a.png", GIF)})

    assert_rejected(response, 415, assert_clean)
    assert written == [0]


def test_extension_refused(client, assert_clean):
    response = client.post("/txt/", {"file": upload("evil.exe", b"hello")})

    assert_rejected(response, 415, assert_clean, "Send a file ending in .txt")


def test_extension_allowed(client, assert_clean):
    response = client.post("/txt/", {"file": upload("notes.TXT", b"hello")})

    assert response.status_code == 200
    assert_clean()


def test_project_setting_applies_to_undecorated_views(client, settings, assert_clean):
    settings.TEMPSTORE_VALIDATORS = [
        {"NAME": "django_tempstore.validators.MaxSize", "OPTIONS": {"limit": 1000}}
    ]
    response = client.post("/accept/", {"file": upload("big.bin", b"x" * 1001)})

    row = assert_rejected(response, 413, assert_clean, "larger than 1000 bytes")
    assert row.size == 0  # The chunk crossing the limit was never written.


def test_view_validators_add_to_the_project_setting(client, settings, assert_clean):
    settings.TEMPSTORE_VALIDATORS = [MaxSize(1000)]
    response = client.post("/txt/", {"file": upload("notes.txt", b"x" * 1001)})

    assert_rejected(response, 413, assert_clean)


def test_view_validators_can_replace_the_project_setting(client, settings, assert_clean):
    settings.TEMPSTORE_VALIDATORS = [MaxSize(1000)]
    response = client.post("/png-only/", {"file": upload("a.png", PNG)})

    assert response.status_code == 200
    assert_clean()


def test_view_validators_apply_when_the_csrf_middleware_reads_the_body(assert_clean):
    client = Client(enforce_csrf_checks=True)
    token = "a" * 32
    client.cookies["csrftoken"] = token
    response = client.post(
        "/png-only-csrf/", {"csrfmiddlewaretoken": token, "file": upload("a.png", GIF)}
    )

    assert_rejected(response, 415, assert_clean)


def test_custom_validator_keeps_state_per_file(client, settings, assert_clean):
    class NoZeroBytes(UploadValidator):
        seen = 0

        def chunk(self, upload, data, offset):
            self.seen += len(data)
            if b"\0" in data:
                raise DigestMismatch(f"NUL byte after {self.seen} bytes; send text.")

    settings.TEMPSTORE_VALIDATORS = [NoZeroBytes()]
    ok = client.post("/accept/", {"a": upload("a.txt", b"a" * 10), "b": upload("b.txt", b"b")})
    bad = client.post("/accept/", {"file": upload("c.txt", b"abc\0")})

    assert ok.status_code == 200
    assert bad.status_code == 422
    assert "NUL byte after 4 bytes" in bad.content.decode()
    assert NoZeroBytes.seen == 0  # Each file got its own copy.
    assert_clean()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def digest_required(settings):
    settings.TEMPSTORE_VALIDATORS = ["django_tempstore.validators.ExpectedDigest"]


@pytest.mark.parametrize("header", ["Content-Digest", "Repr-Digest"])
def test_digest_header_match(client, digest_required, assert_clean, header):
    value = f"sha-256=:{b64(hashlib.sha256(PNG).digest())}:"
    response = client.post("/accept/", {"file": upload("a.png", PNG)}, headers={header: value})

    assert response.status_code == 200
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_digest_header_sha512_is_computed_while_streaming(client, digest_required, assert_clean):
    value = f"sha-512=:{b64(hashlib.sha512(PNG).digest())}:, md5=:{b64(b'x' * 16)}:"
    response = client.post(
        "/accept/", {"file": upload("a.png", PNG)}, headers={"Content-Digest": value}
    )

    assert response.status_code == 200
    assert_clean()


def test_digest_header_mismatch_is_422(client, digest_required, assert_clean, rejections):
    value = f"sha-256=:{b64(hashlib.sha256(b'other').digest())}:"
    response = client.post(
        "/accept/", {"file": upload("a.png", PNG)}, headers={"Content-Digest": value}
    )

    row = assert_rejected(response, 422, assert_clean, "does not match the digest")
    assert rejections == [(row.pk, row.reason, 422)]


def test_digest_header_with_two_files_is_422(client, digest_required, assert_clean):
    value = f"sha-256=:{b64(hashlib.sha256(PNG).digest())}:"
    response = client.post(
        "/accept/",
        {"a": upload("a.png", PNG), "b": upload("b.png", PNG)},
        headers={"Content-Digest": value},
    )

    assert response.status_code == 422
    assert "one file per request" in response.content.decode()
    assert sorted(TempUpload.objects.values_list("state", flat=True)) == ["discarded", "failed"]
    assert_clean()


def test_malformed_digest_header_is_422(client, digest_required, assert_clean):
    response = client.post(
        "/accept/", {"file": upload("a.png", PNG)}, headers={"Content-Digest": "sha-256=abc"}
    )

    assert_rejected(response, 422, assert_clean, "malformed")


def test_digest_required_refuses_a_file_without_one(client, settings, assert_clean):
    settings.TEMPSTORE_VALIDATORS = [ExpectedDigest(required=True)]
    response = client.post("/accept/", {"file": upload("a.png", PNG)})

    assert_rejected(response, 422, assert_clean, "Content-Digest")


def test_digest_form_field_match(client, assert_clean):
    response = client.post(
        "/digest-field/",
        {"file": upload("a.png", PNG), "sha256": hashlib.sha256(PNG).hexdigest()},
    )

    assert response.status_code == 200
    assert_clean()


def test_digest_form_field_mismatch_is_422(client, assert_clean):
    response = client.post(
        "/digest-field/",
        {"file": upload("a.png", PNG), "sha256": hashlib.sha256(b"x").hexdigest()},
    )

    assert_rejected(response, 422, assert_clean)


def test_parse_digest_header():
    raw = hashlib.sha256(b"x").digest()
    parsed = parse_digest_header(f"SHA-256=:{b64(raw)}:;p=1 , sha-512=:{b64(b'y')}:")

    assert parsed == {"sha-256": raw, "sha-512": b"y"}
    with pytest.raises(DigestMismatch):
        parse_digest_header("sha-256=:not base64!:")


def test_exceptions_carry_their_status():
    assert UnsupportedMediaType().status == 415
    assert DigestMismatch().status == 422


@pytest.mark.server
def test_gunicorn_answers_before_reading_the_rest_of_the_body(gunicorn, assert_clean):
    # A 16 MiB upload of which only the first 2 MiB are ever sent: if the server
    # waited for the whole body, recv() would time out and the test fail.
    declared = 16 * 1024 * 1024
    body, content_type = multipart({"file": ("a.png", b"GIF89a" + b"\0" * declared)})
    sent = body[: 2 * 1024 * 1024]
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=30) as sock:
        sock.sendall(request_head("/png-only/", content_type, len(body), gunicorn.port) + sent)
        response = read_response(sock)

    assert response.startswith(b"HTTP/1.1 415"), response[:200]
    assert b"image/gif" in response
    row = TempUpload.objects.get()
    assert row.state == State.FAILED
    assert row.size == 0
    assert_clean()


@pytest.mark.server
def test_real_server_rejects_and_cleans_up(server, assert_clean):
    body, content_type = multipart({"file": ("a.png", GIF)})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request_head("/png-only/", content_type, len(body), server.port) + body)
        response = read_response(sock)

    assert response.startswith(b"HTTP/1.1 415"), response[:200]
    assert TempUpload.objects.get().state == State.FAILED
    assert_clean()


def test_digest_header_of_one_request_does_not_leak_into_the_next(client, settings, assert_clean):
    # One instance in the setting: every file's validator is a copy of it.
    settings.TEMPSTORE_VALIDATORS = [ExpectedDigest()]
    value = f"sha-256=:{b64(hashlib.sha256(PNG).digest())}:"
    first = client.post(
        "/accept/", {"file": upload("a.png", PNG)}, headers={"Content-Digest": value}
    )
    second = client.post("/accept/", {"file": upload("b.gif", GIF)})

    assert first.status_code == 200, first.content
    assert second.status_code == 200, second.content
    assert_clean()


def test_inheriting_view_runs_the_project_validators_parsed_hooks(client, settings, assert_clean):
    settings.TEMPSTORE_VALIDATORS = [ExpectedDigest(field="sha256")]
    response = client.post(
        "/txt/",
        {"file": upload("notes.txt", b"hello"), "sha256": hashlib.sha256(b"other").hexdigest()},
    )

    assert_rejected(response, 422, assert_clean, "does not match the digest")


@pytest.mark.parametrize(
    "exc", [UnsupportedMediaType("Send a PNG."), UploadInfected("Eicar-Test-Signature")]
)
def test_reject_deletes_the_file_even_if_the_row_was_closed_meanwhile(
    client, settings, tmp_path, exc
):
    settings.TEMPSTORE_QUARANTINE_DIR = tmp_path / "quarantine"
    response = client.post("/keep/", {"file": upload("a.png", PNG)})
    row = TempUpload.objects.get(pk=response.json()["id"])
    assert row.path.exists()
    # A sweep (or another task) closes the row between our read and our reject.
    TempUpload.objects.filter(pk=row.pk).update(state=State.DISCARDED)

    assert reject(row, exc) is False
    assert not row.path.exists()
    assert not (tmp_path / "quarantine" / row.name).exists()
    assert TempUpload.objects.get(pk=row.pk).state == State.DISCARDED
