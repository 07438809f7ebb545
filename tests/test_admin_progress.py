"""The admin shows a receiving upload's bytes grow while its body arrives (real gunicorn)."""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tempstore.models import State, TempUpload
from tests.servers import wait_until
from tests.test_quota_server import gunicorn_with
from tests.utils import content_type, multipart_head, multipart_one, request_head

MiB = 1024 * 1024
CHANGELIST = "/admin/django_tempstore/tempupload/"


def shown_size(admin_client) -> str:
    html = admin_client.get(CHANGELIST).content.decode()
    found = re.search(r'<span class="tempstore-received">([^<]*) received</span>', html)
    assert found, html
    return found.group(1).replace("\xa0", " ")


def receiving_size() -> int:
    row = TempUpload.objects.filter(state=State.RECEIVING).first()
    return row.size if row else -1


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("quota", [None, 1024 * MiB])
def test_receiving_row_shows_its_size_grow_mid_body(tmp_path, settings, admin_client, quota):
    boundary = "b0undary7f3a"
    declared = 64 * MiB
    with (
        gunicorn_with(tmp_path, settings, QUOTA=quota) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock,
    ):
        sock.sendall(request_head("/accept/", content_type(boundary), declared, server.port))
        sock.sendall(multipart_head(boundary, "growing.bin") + os.urandom(10 * MiB))
        # Far sooner than the 10 s heartbeat: recorded at each 4 MiB block.
        assert wait_until(lambda: receiving_size() >= 4 * MiB, timeout=5)
        first = shown_size(admin_client)
        sock.sendall(os.urandom(20 * MiB))
        assert wait_until(lambda: receiving_size() >= 20 * MiB, timeout=5)
        second = shown_size(admin_client)
        assert first != second
        assert float(first.split()[0]) < float(second.split()[0])
        assert first.endswith("MiB") and second.endswith("MiB")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("quota", [None, 1024 * MiB])
def test_statements_per_upload(client, settings, quota, capsys):
    settings.TEMPSTORE_QUOTA = quota
    counts, progress = {}, {}
    for size in (1 * MiB, 64 * MiB):
        body = multipart_one("m.bin", b"x" * size)
        with CaptureQueriesContext(connection) as queries:
            response = client.post("/accept/", body, content_type=content_type())
        assert response.status_code == 200
        counts[size // MiB] = len(queries)
        progress[size // MiB] = [
            q["sql"]
            for q in queries.captured_queries
            if q["sql"].startswith("UPDATE")
            and '"size"' in q["sql"]
            and '"reserved"' not in q["sql"]
            and '"digest"' not in q["sql"]
        ]
    with capsys.disabled():
        print(f"\nstatements per upload (1 MiB, 64 MiB), quota={quota}: {counts}")
    if quota is None:
        # No reservation to ride on: one UPDATE per 4 MiB block received.
        assert 1 <= len(progress[64]) <= 64 // 4
        assert len(progress[1]) <= 1
    else:
        # The size rides on the reservation's UPDATE: no statement added.
        assert progress == {1: [], 64: []}


@pytest.mark.django_db
def test_a_declared_length_gets_a_progress_bar_in_list_and_detail(admin_client):
    row = TempUpload.objects.create(
        name="abc.upload",
        original_name="resumable.bin",
        host="web-1",
        pid=1,
        resumable=True,
        upload_length=8 * MiB,
        size=2 * MiB,
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    bar = '<progress class="tempstore-progress" value="2097152" max="8388608"></progress>'
    listed = admin_client.get(CHANGELIST).content.decode()
    detail = admin_client.get(f"{CHANGELIST}{row.pk}/change/").content.decode()
    for html in (listed, detail):
        assert bar in html
        assert "2\xa0MiB of 8\xa0MiB (25\xa0%)" in html
    row.state = State.COMPLETE
    row.save()
    listed = admin_client.get(CHANGELIST).content.decode()
    assert "tempstore-progress" not in listed


PROGRESS = f"{CHANGELIST}progress/"
SCRIPT = '<script src="/static/django_tempstore/admin/progress.js"></script>'


def receiving_row(**fields) -> TempUpload:
    values = {
        "name": f"{os.urandom(4).hex()}.upload",
        "original_name": "growing.bin",
        "host": "web-1",
        "pid": 1,
        "size": 3 * MiB,
        "expires_at": timezone.now() + timedelta(minutes=5),
        **fields,
    }
    return TempUpload.objects.create(**values)


@pytest.mark.django_db
def test_receiving_rows_carry_what_progress_js_polls_in_list_and_detail(admin_client):
    row = receiving_row(upload_length=8 * MiB)
    live = (
        f'<span class="tempstore-live" data-tempstore-upload="{row.pk}" '
        f'data-tempstore-state="receiving" data-tempstore-progress-url="{PROGRESS}">'
    )
    listed = admin_client.get(CHANGELIST).content.decode()
    detail = admin_client.get(f"{CHANGELIST}{row.pk}/change/").content.decode()
    for html in (listed, detail):
        assert live in html
        assert SCRIPT in html
        assert "<script>" not in html  # no inline script: a CSP without unsafe-inline works

    row.state = State.COMPLETE
    row.save()
    assert "data-tempstore-upload" not in admin_client.get(CHANGELIST).content.decode()


@pytest.mark.django_db
def test_progress_view_answers_the_pending_rows_as_json(admin_client):
    growing = receiving_row(upload_length=8 * MiB, size=2 * MiB)
    unknown_length = receiving_row(size=5 * MiB)
    receiving_row(state=State.PERSISTED)

    response = admin_client.get(PROGRESS)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    rows = {row["id"]: row for row in response.json()["uploads"]}
    assert rows == {
        str(growing.pk): {
            "id": str(growing.pk),
            "state": "receiving",
            "state_label": "receiving",
            "size": 2 * MiB,
            "upload_length": 8 * MiB,
            "text": "2\xa0MiB of 8\xa0MiB (25\xa0%)",
        },
        str(unknown_length.pk): {
            "id": str(unknown_length.pk),
            "state": "receiving",
            "state_label": "receiving",
            "size": 5 * MiB,
            "upload_length": None,
            "text": "5\xa0MiB received",
        },
    }


@pytest.mark.django_db
def test_progress_view_answers_named_rows_in_any_state(admin_client):
    done = receiving_row(state=State.PERSISTED, size=6 * MiB)
    other = receiving_row()

    response = admin_client.get(PROGRESS, {"id": [str(done.pk)]})

    [row] = response.json()["uploads"]
    assert row["id"] == str(done.pk) and row["id"] != str(other.pk)
    assert (row["state"], row["text"]) == ("persisted", "6\xa0MiB")
    assert admin_client.get(PROGRESS, {"id": "not-a-uuid"}).status_code == 400


@pytest.mark.django_db
def test_progress_view_needs_the_view_permission(client, django_user_model):
    from django.contrib.auth.models import Permission

    receiving_row()
    assert client.get(PROGRESS).status_code == 302  # to the admin's login page
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(PROGRESS).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_tempupload"))
    assert len(client.get(PROGRESS).json()["uploads"]) == 1


def tus_request(port: int, method: str, path: str, headers: dict[str, str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Tus-Resumable: 1.0.0"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def answer_head(sock: socket.socket) -> str:
    response = b""
    while b"\r\n\r\n" not in response and (chunk := sock.recv(65536)):
        response += chunk
    sock.close()
    return response.decode()


def progress_of(admin_client, row_id) -> dict:
    return admin_client.get(PROGRESS, {"id": str(row_id)}).json()["uploads"][0]


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_a_tus_patch_shows_its_bytes_per_block_while_the_offset_stays_durable(
    tmp_path, settings, admin_client
):
    length = 64 * MiB
    # Two workers: one answers HEAD while the other is busy with the PATCH.
    with gunicorn_with(tmp_path, settings, workers=2, QUOTA=None) as server:
        created = answer_head(
            tus_request(
                server.port,
                "POST",
                "/files/",
                {"Upload-Length": str(length), "Content-Length": "0"},
            )
        )
        row_id = re.search(r"(?im)^location: \S+/([0-9a-f-]{36})", created).group(1)
        path = f"/files/{row_id}"
        headers = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
            "Content-Length": str(length),
        }
        with tus_request(server.port, "PATCH", path, headers) as patch:
            patch.sendall(os.urandom(10 * MiB))
            # Far sooner than the 10 s heartbeat: recorded at each 4 MiB block.
            assert wait_until(
                lambda: progress_of(admin_client, row_id)["size"] >= 8 * MiB, timeout=5
            )
            shown = progress_of(admin_client, row_id)
            assert shown["upload_length"] == length
            assert re.match(r"[\d.]+\xa0MiB of 64\xa0MiB \(1[25]\xa0%\)", shown["text"]), shown
            # The offset HEAD answers has not moved: those bytes are not synced yet.
            assert TempUpload.objects.get(pk=row_id).size == 0
            head = answer_head(tus_request(server.port, "HEAD", path, {}))
            assert re.search(r"(?im)^upload-offset: 0\r$", head), head
            patch.sendall(os.urandom(length - 10 * MiB))
            assert " 204 " in answer_head(patch)
        assert progress_of(admin_client, row_id)["text"] == "64\xa0MiB"


@pytest.mark.django_db(transaction=True)
def test_progress_without_quota_is_recorded_at_growing_steps(client, settings):
    # One UPDATE per 4 MiB block would be 12 for 64 MiB; steps of more than a quarter of the
    # size last recorded give 7 (6, 11, 16, 21, 31, 41, 56 MiB).
    settings.TEMPSTORE_QUOTA = None
    body = multipart_one("m.bin", b"x" * (64 * MiB))
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/accept/", body, content_type=content_type())
    assert response.status_code == 200
    progress = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("UPDATE") and '"size"' in q["sql"] and '"digest"' not in q["sql"]
    ]
    assert 1 <= len(progress) <= 8
